#!/usr/bin/env python3
"""Local-substrate figures, km next to its peers in the same run (needs root).

  1. create + first exec: `km create quickstart` then `km exec ID -- true`, N times; next to
     `bwrap ... true` and `srt true` (@anthropic-ai/sandbox-runtime) running `true` N times.
  2. 100 sandboxes alive at once: kmd's RSS and the per-sandbox RSS (the init's, plus kmd's
     growth per sandbox).
  3. `km list` with 10,000 sandbox records in the store.

Prints p50/p95 and ratios. Timings are for reading, never for pass/fail.
"""
import argparse, json, os, shutil, signal, sqlite3, statistics, subprocess, sys, tempfile, time
import benchutil  # noqa: E402  (bench/benchutil.py, beside this script)

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]

def ms(x): return "%.1f ms" % (x * 1000)

def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0

class Kmd:
    def __init__(self, kmd, km, root):
        self.km, self.root = km, root
        self.env = dict(os.environ, KM_SOCKET=root + "/run/kmd.sock")
        self.log = open(root + "/kmd.log", "ab")
        self.proc = subprocess.Popen([kmd, "--foreground", "--state-dir", root + "/state", "--runtime-dir", root + "/run",
                                      "--group", "", "--cgroup-name", "km-bench-%d" % os.getpid()], stdout=self.log, stderr=self.log)
        for _ in range(500):
            if os.path.exists(root + "/run/kmd.sock") and self.run("list").returncode == 0:
                return
            time.sleep(0.01)
        sys.exit("kmd did not start; see " + root + "/kmd.log")
    def run(self, *args, check=False):
        r = subprocess.run([self.km] + list(args), env=self.env, capture_output=True, text=True)
        if check and r.returncode != 0:
            sys.exit("km %s failed: %s" % (" ".join(args), r.stderr))
        return r
    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

def bench_create_exec(k, n):
    create, first = [], []
    ids = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = k.run("create", "quickstart", check=True)
        t1 = time.perf_counter()
        sid = r.stdout.strip()
        k.run("exec", sid, "--", "true", check=True)
        t2 = time.perf_counter()
        create.append(t1 - t0); first.append(t2 - t0); ids.append(sid)
    for sid in ids:
        k.run("destroy", sid)
    return create, first

def bench_cmd(argv, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True)
        out.append(time.perf_counter() - t0)
        if r.returncode != 0:
            return None, r.stderr.decode(errors="replace")[-300:]
    return out, ""

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--alive", type=int, default=100)
    ap.add_argument("--records", type=int, default=10000)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(__file__), "..", "build", "release"))
    a = ap.parse_args()
    benchutil.clean_up_on_signals()
    if os.geteuid() != 0:
        sys.exit("bench: needs root (kmd creates namespaces and cgroups)")
    km = os.path.abspath(os.path.join(a.build, "apps/km/km"))
    kmd = os.path.abspath(os.path.join(a.build, "apps/kmd/kmd"))
    for b in (km, kmd):
        if not os.access(b, os.X_OK):
            sys.exit("bench: %s missing; build the release preset first (cmake --preset release && cmake --build --preset release)" % b)
    root = tempfile.mkdtemp(prefix="km-bench-")
    os.chmod(root, 0o711)
    k = Kmd(kmd, km, root)
    try:
        print("== create + first exec, %d sandboxes (quickstart) ==" % a.n)
        create, first = bench_create_exec(k, a.n)
        print("km create            p50 %s  p95 %s" % (ms(pct(create, 50)), ms(pct(create, 95))))
        print("km create + exec     p50 %s  p95 %s" % (ms(pct(first, 50)), ms(pct(first, 95))))
        bw = shutil.which("bwrap")
        if bw:
            t, err = bench_cmd([bw, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-all",
                                "--die-with-parent", "true"], a.n)
            if t:
                print("bwrap true           p50 %s  p95 %s   km/bwrap p50 ratio %.2f" % (ms(pct(t, 50)), ms(pct(t, 95)), pct(first, 50) / pct(t, 50)))
            else:
                print("bwrap: failed: " + err)
        else:
            print("bwrap: not installed (apt-get install bubblewrap)")
        srt = shutil.which("srt")
        if srt:
            settings = os.path.join(root, "srt.json")
            with open(settings, "w") as f:
                json.dump({"network": {"allowedDomains": [], "deniedDomains": []},
                           "filesystem": {"denyRead": [], "allowWrite": ["/tmp"], "denyWrite": []}}, f)
            t, err = bench_cmd([srt, "--settings", settings, "true"], a.n)
            if t:
                print("srt true             p50 %s  p95 %s   km/srt p50 ratio %.2f" % (ms(pct(t, 50)), ms(pct(t, 95)), pct(first, 50) / pct(t, 50)))
            else:
                print("srt: failed: " + err)
        else:
            print("srt: not installed (npm install -g @anthropic-ai/sandbox-runtime; it needs bubblewrap, socat and ripgrep)")

        print("\n== %d sandboxes alive at once ==" % a.alive)
        base = rss_kib(k.proc.pid)
        ids = []
        t0 = time.perf_counter()
        for _ in range(a.alive):
            ids.append(k.run("create", "quickstart", check=True).stdout.strip())
        took = time.perf_counter() - t0
        listing = json.loads(k.run("-o", "json", "list", check=True).stdout)
        running = sum(1 for s in listing if s["state"] == "running")
        inits = []
        # The inits are the sandboxes' PID 1: find them through their cgroups.
        cg = "/sys/fs/cgroup/unified/km-bench-%d" % os.getpid()
        for sid in ids:
            try:
                with open(os.path.join(cg, sid, "cgroup.procs")) as f:
                    pids = [int(x) for x in f.read().split()]
                inits.append(rss_kib(min(pids)))
            except (OSError, ValueError):
                pass
        grown = rss_kib(k.proc.pid)
        print("running %d/%d, created in %.1f s" % (running, a.alive, took))
        print("kmd RSS %d KiB before, %d KiB with %d sandboxes (+%.1f KiB per sandbox)" % (base, grown, a.alive, (grown - base) / max(1, a.alive)))
        if inits:
            print("per-sandbox init RSS p50 %d KiB, max %d KiB" % (pct(inits, 50), max(inits)))
        for sid in ids:
            k.run("destroy", sid)
    finally:
        k.stop()

    print("\n== km list with %d records ==" % a.records)
    db = sqlite3.connect(root + "/state/km.db")
    now = int(time.time())
    rows = [("sb-%08x" % i, None, i + 1, i + 100000, "quickstart", "x", "stopped", "", now, 0, 0, 0, "destroy", 0, now, 0, 0, 0, 0, "")
            for i in range(a.records)]
    db.executemany("INSERT INTO sandboxes (id, alias, number, slot, profile_name, profile_yaml, state, reason, created_at, expires_at,"
                   " idle_timeout, max_lifetime, teardown_policy, locked, last_activity, ttl_warned, idle_warned, pid, pid_start, cloned_from)"
                   " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit(); db.close()
    k = Kmd(kmd, km, root)
    try:
        # What starting any program costs from here, so that it can be told apart from km's time.
        base = []
        for _ in range(20):
            t0 = time.perf_counter()
            subprocess.run(["/bin/true"], check=True)
            base.append(time.perf_counter() - t0)
        print("spawn of /bin/true from this script: p50 %s" % ms(pct(base, 50)))
        for fmt in (["list"], ["-o", "json", "list"]):
            lines = k.run(*fmt, check=True).stdout.count("\n")
            t = []
            for _ in range(20):
                t0 = time.perf_counter()
                subprocess.run([km] + fmt, env=k.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                t.append(time.perf_counter() - t0)
            print("km %-13s p50 %s  p95 %s  (%d lines; output to /dev/null)" % (" ".join(fmt), ms(pct(t, 50)), ms(pct(t, 95)), lines))
    finally:
        k.stop()
        subprocess.run(["umount", "-l", os.path.join(root, "run", "bpf")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        # kmd's cgroup directories (beneath this process's, in every hierarchy it used).
        name = "km-bench-%d" % os.getpid()
        for top in os.listdir("/sys/fs/cgroup"):
            for dirpath, _, _ in os.walk(os.path.join("/sys/fs/cgroup", top), topdown=False):
                if ("/%s/" % name) in dirpath + "/":
                    try:
                        os.rmdir(dirpath)  # children first (bottom-up walk)
                    except OSError:
                        pass

if __name__ == "__main__":
    main()
