#!/usr/bin/env python3
"""The audit path under load (needs root): how many events a second km's audit trail takes from
one sandbox with zero loss, and what its counters say beyond that.

A sandbox with kernel enforcement (`enforcement: ebpf`) and kmd's enforcer rate limit off
(`auditRateLimit: 0`) runs, for a few seconds per step:

  1. a connection storm at a paced rate (1k, 2k, 5k, ... a second, then as fast as it can): every
     connect() goes to a denied address and is refused in the kernel; each refusal is one `net`
     event that travels kernel ring buffer -> enforcer -> pipe -> kmd -> redaction, hash chain,
     file and index;
  2. a command storm as fast as the sandbox can fork and exec (`/bin/true` in four loops): each
     command is one `exec` event (kernel ring buffer -> kmd -> trail);
  3. both at once.

For each step it prints the rate generated, the events that reached the trail, the loss
counters' growth (kmd's queue, the enforcer's pipe, the kernel ring buffers), and how long after
the storm ended the last event was in the trail. "Held" is the highest rate whose every event
is in the trail with all counters unchanged. The unpaced step gives the rate the sandbox itself
can generate, and the ratio held/generated says whether the audit or the sandbox is the limit.

Every loop is bounded in count and time. Timings are for reading, never pass/fail: it exits 0
unless set-up fails. Everything it starts is removed at the end (`--keep` keeps the temp dir).
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time
import benchutil  # noqa: E402  (bench/benchutil.py, beside this script)

GEN = r"""
import socket, sys, time
rate, secs = float(sys.argv[1]), float(sys.argv[2])
n = refused = 0
t0 = time.perf_counter()
end = t0 + secs
while True:
    now = time.perf_counter()
    if now >= end or n >= 2000000:
        break
    if rate > 0:
        due = t0 + n / rate
        if due > now:
            time.sleep(min(due - now, 0.001))
            continue
    s = socket.socket()
    try:
        s.connect(("203.0.113.99", 1024 + n % 60000))
    except PermissionError:
        refused += 1
    s.close()
    n += 1
print(n, refused, time.perf_counter() - t0)
"""

EXECS = r"""
secs=$1
end=$(( $(date +%s) + secs ))
for j in 0 1 2 3; do
  ( i=0; while [ $(date +%s) -lt $end ] && [ $i -lt 200000 ]; do /bin/true s; /bin/true s; /bin/true s; /bin/true s; i=$((i+4)); done; echo $i ) &
done
wait
"""


class Kmd:
    def __init__(self, kmd, km, root):
        self.km, self.root = km, root
        self.env = dict(os.environ, KM_SOCKET=root + "/run/kmd.sock")
        with open(root + "/kmd.yaml", "w") as f:
            # The enforcer needs an upstream resolver configured; the storms send no queries.
            f.write('upstreamDNS: ["198.51.100.53"]\nauditRateLimit: 0\n')
        self.log = open(root + "/kmd.log", "ab")
        self.cgroup = "km-auditbench-%d" % os.getpid()
        self.proc = subprocess.Popen([kmd, "--foreground", "--config", root + "/kmd.yaml", "--state-dir", root + "/state",
                                      "--runtime-dir", root + "/run", "--group", "", "--cgroup-name", self.cgroup],
                                     stdout=self.log, stderr=self.log)
        for _ in range(500):
            if os.path.exists(root + "/run/kmd.sock") and self.run("list").returncode == 0:
                return
            time.sleep(0.01)
        sys.exit("kmd did not start; see " + root + "/kmd.log")

    def run(self, *args, check=False, timeout=600):
        r = subprocess.run([self.km] + list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            sys.exit("km %s failed: %s" % (" ".join(args), r.stderr))
        return r

    def audit(self, sid):
        r = self.run("-o", "json", "status", sid)
        try:
            return json.loads(r.stdout)["audit"]
        except (ValueError, KeyError):
            return {}

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


LOSS = ("dropped_kmd", "dropped_enforcer", "exec_lost", "suppressed", "truncated", "malformed")


def drain(k, sid, want_head, limit=120):
    """Seconds until the trail's head reaches want_head, or stops moving for 2 s (events were
    lost), bounded; and the final counters."""
    t0 = time.perf_counter()
    a, last, moved = {}, -1, t0
    while time.perf_counter() - t0 < limit:
        a = k.audit(sid)
        head = a.get("head", 0)
        if head >= want_head:
            break
        now = time.perf_counter()
        if head != last:
            last, moved = head, now
        elif now - moved > 2.0:
            break
        time.sleep(0.02)
    return time.perf_counter() - t0, a


def step(k, sid, label, conn_rate, secs, execs):
    before = k.audit(sid)
    procs = []
    t0 = time.perf_counter()
    if conn_rate is not None:
        procs.append(("conn", subprocess.Popen([k.km, "exec", sid, "--", "python3", "-c", GEN, str(conn_rate), str(secs)],
                                               env=k.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    if execs:
        procs.append(("exec", subprocess.Popen([k.km, "exec", sid, "--", "sh", "-c", EXECS, "sh", str(int(secs))],
                                               env=k.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    conns = commands = 0
    elapsed = secs
    for kind, p in procs:
        out, err = p.communicate(timeout=secs + 120)
        if p.returncode != 0:
            sys.exit("the %s storm failed: %s" % (kind, err))
        if kind == "conn":
            n, refused, el = out.split()
            conns, elapsed = int(refused), float(el)
            if int(n) != conns:
                print("  (%d of %d connects were not refused)" % (int(n) - conns, int(n)))
        else:
            # Each loop prints how many /bin/true it ran; the date calls are commands too.
            commands = sum(int(x) for x in out.split())
    ended = time.perf_counter()
    wall = ended - t0
    # Expected: one net event per refusal, one exec per /bin/true (the date calls and the
    # shells are exec events as well, so for the exec storm the head is waited for loosely).
    expect = conns + commands + (1 if conn_rate is not None else 0) + (1 if execs else 0)
    lag, after = drain(k, sid, before.get("head", 0) + expect, limit=120)
    got = after.get("head", 0) - before.get("head", 0)
    lost = {c: after.get(c, 0) - before.get(c, 0) for c in LOSS}
    in_trail = got >= expect
    # The command storm's own shells and date calls are commands too: its events are counted
    # from the trail.
    generated = conns + (max(commands, got - conns) if execs else 0)
    rate = generated / (elapsed if conn_rate is not None else wall)
    print("%-34s %9.0f/s %9d events  %9d in trail  lag %6.2f s  loss %s" %
          (label, rate, generated, got, lag,
           "none" if not any(lost.values()) else ", ".join("%s +%d" % (c, v) for c, v in lost.items() if v)))
    return rate, in_trail and not any(lost.values()), conns


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each step")
    ap.add_argument("--quick", action="store_true", help="fewer steps, 2 s each")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    benchutil.clean_up_on_signals()
    if os.geteuid() != 0:
        sys.exit("needs root")
    kmd_bin, km_bin = a.build + "/apps/kmd/kmd", a.build + "/apps/km/km"
    for b in (kmd_bin, km_bin):
        if not os.access(b, os.X_OK):
            sys.exit("missing %s: build first (cmake --preset release && cmake --build --preset release)" % b)
    secs = 2.0 if a.quick else a.seconds
    rates = [2000, 10000, 40000] if a.quick else [1000, 2000, 5000, 10000, 20000, 40000, 80000]
    root = tempfile.mkdtemp(prefix="km-auditbench-")
    os.chmod(root, 0o711)
    k = None
    try:
        k = Kmd(os.path.abspath(kmd_bin), os.path.abspath(km_bin), root)
        with open(root + "/p.yaml", "w") as f:
            f.write("apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\n"
                    "metadata: {name: auditbench, prefix: ab}\nextends: quickstart\n"
                    "spec:\n  network:\n    enforcement: ebpf\n    egress: {allowedDNSSuffixes: [.allowed.test]}\n")
        sid = k.run("create", root + "/p.yaml", check=True).stdout.split()[0]
        print("km audit path under load: %d cores, load average %s, %.0f s per step" %
              (os.cpu_count(), " ".join("%.2f" % x for x in os.getloadavg()), secs))
        print("%-34s %11s %16s %19s %12s  %s" % ("step", "rate", "events", "in trail", "lag", "loss"))
        held = 0.0
        for r in rates:
            rate, clean, _ = step(k, sid, "connection storm, paced %d/s" % r, r, secs, False)
            if clean:
                held = max(held, rate)
        top, top_clean, _ = step(k, sid, "connection storm, unpaced", 0, secs, False)
        if top_clean:
            held = max(held, top)
        ex, ex_clean, _ = step(k, sid, "command storm, unpaced", None, secs, True)
        both, both_clean, _ = step(k, sid, "both storms at once", 0, secs, True)
        v = k.run("logs", sid, "--verify")
        print()
        print("held with zero loss (connections): %.0f events/s; the sandbox generated at most %.0f/s unpaced: ratio %.2f" %
              (held, top, held / top if top else 0))
        print("command storm: %.0f exec events/s, %s; both at once: %.0f events/s, %s" %
              (ex, "no loss" if ex_clean else "LOSS", both, "no loss" if both_clean else "LOSS"))
        print("chain: %s" % (v.stdout.strip() or v.stderr.strip()))
        print("counters at the end: %s" % json.dumps(k.audit(sid)))
        k.run("destroy", sid)
    finally:
        if k:
            k.stop()
            subprocess.run(["umount", "-l", root + "/run/bpf"], stderr=subprocess.DEVNULL)
            for _ in range(50):
                left = [d for d in ("/sys/fs/cgroup/%s/%s" % (h, k.cgroup) for h in os.listdir("/sys/fs/cgroup"))
                        if os.path.isdir(d)]
                for d in left:
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
                if not left:
                    break
                time.sleep(0.1)
        if a.keep:
            print("kept " + root)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
