#!/usr/bin/env python3
"""L7 inspection figures: a streamed AI response through the sandbox's metering proxy next to
direct TLS to the same fake provider, in the same run (needs root).

  1. time to first byte of a streamed /v1/messages response (stream: true, small first event):
     from sending the request to the first byte of the response body, each request on a new
     connection and several over one kept-alive connection; direct from K (TLS verified against
     the world's CA), and inside a sandbox through the enforcer (explicit, HTTPS_PROXY, and
     transparent), which terminates TLS with the sandbox's CA and meters the stream; the fake
     with a client beside it in W as its own floor.
  2. throughput of long streamed responses (SSE, no delay; short text deltas as providers send
     them, and long ones): MB/s on the same paths, the CPU the enforcer spent per GB relayed and
     metered, and the fake's own limit (a client beside it in W; the fake is Python and may bound
     every path).
  3. the meter's parser throughput (bench/meter_parse_bench).
  4. a check that km metered all of it exactly: output and input tokens in `km budget show`
     against what the fake's --log says it sent, so the figures are for a proxy that metered.

The world is built here, in network namespaces of its own, from 198.51.100.0/24 (servers, K's
side) and 203.0.113.0/24 (kmd's link pool) only, as bench/egress.py builds it:

  sandbox --veth-- link ns (enforcer sockets) ... enforcer process in K --veth-- W
  W: tests/world/fake_ai.py on 198.51.100.20:443 (certificate for api.anthropic.com from a
     throwaway CA), dnsmasq on .53 answering api.anthropic.com; kmd in K trusts the CA
     (extraCABundle). The sandbox trusts its own inspection CA, as every sandbox does.

Timings are for reading, never for pass/fail: the exit status is 0 unless setup fails.
"""
import os
import sys

# This file shares its name with the standard library's `inspect`: keep its folder off the
# module path so that nothing imported below picks this file up instead.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != HERE]
sys.dont_write_bytecode = True  # no __pycache__ in the source tree for egress.py's helpers

import argparse, glob, importlib.util, json, re, shutil, signal, statistics, subprocess, tempfile, time  # noqa: E402
import benchutil  # noqa: E402  (bench/benchutil.py, beside this script)


def load_egress():
    """bench/egress.py's module-level helpers (pct, cpu_seconds, run, must, SetupError)."""
    spec = importlib.util.spec_from_file_location("km_bench_egress", os.path.join(HERE, "egress.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


egress = load_egress()
pct, cpu_seconds, run, must, SetupError = egress.pct, egress.cpu_seconds, egress.run, egress.must, egress.SetupError

FAKE, AUTH_DNS, K_ADDR = "198.51.100.20", "198.51.100.53", "198.51.100.1"
LINK_POOL = "203.0.113.128/25"
HOST = "api.anthropic.com"
MODEL = "claude-haiku-4-5"
SHORT_REPLY = "Hello from the bench."

PROFILE = """apiVersion: klankermaker.ai/v1alpha2
kind: SandboxProfile
metadata: {name: inspect, prefix: inspect}
extends: quickstart
spec:
  runtime: {resources: {cpus: 2, memory: 2Gi, pids: 512}}
  network:
    egress:
      allowedHosts: ["api.anthropic.com"]
  budget:
    ai:
      maxSpendUSD: 1000000
"""

# Streamed /v1/messages requests over TLS, timed by the client itself. argv[1] is a JSON config:
# mode "new" (a new connection per request: TCP, CONNECT if a proxy, TLS, request) or "keep"
# (every request over one connection); proxy "-" (connect to addr or the resolved host), "env"
# (HTTPS_PROXY) or host:port; cafile "" for the default trust store. Prints JSON: per request
# (warm-ups left out) the connection setup (new), the time from sending the request to the
# first byte of the response and to the first byte of its body, and to its end.
CLIENT_PY = r"""
import json, os, socket, ssl, sys, time
cfg = json.loads(sys.argv[1])
host, n, warm, mode = cfg["host"], cfg["n"], cfg["warmup"], cfg["mode"]
ctx = ssl.create_default_context(cafile=cfg["cafile"] or None)
ctx.set_alpn_protocols(["http/1.1"])
proxy = cfg["proxy"]
if proxy == "env":
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or ""
    if not proxy:
        sys.exit("no HTTPS_PROXY in the environment")
    proxy = proxy.split("://", 1)[-1].split("/", 1)[0]
body = cfg["body"].encode()
head = "POST /v1/messages HTTP/1.1\r\nHost: %s\r\n" % host
head += "".join("%s: %s\r\n" % (k, v) for k, v in cfg["headers"])
head += "Content-Length: %d\r\n" % len(body)
if mode == "new":
    head += "Connection: close\r\n"
req = (head + "\r\n").encode() + body
now = time.perf_counter

def connect():
    if proxy != "-":
        ph, pp = proxy.rsplit(":", 1)
        s = socket.create_connection((ph, int(pp)), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(("CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n" % (host, host)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d or len(buf) > 65536:
                raise OSError("proxy closed during CONNECT")
            buf += d
        if buf.split(b" ", 2)[1:2] != [b"200"]:
            raise OSError("CONNECT refused: " + buf.split(b"\r\n")[0].decode(errors="replace"))
    else:
        s = socket.create_connection((cfg["addr"] or host, 443), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(s, server_hostname=host)

class Reader:
    def __init__(self, t):
        self.t, self.buf, self.first = t, bytearray(), None
    def fill(self):
        d = self.t.recv(262144)
        if not d:
            raise OSError("connection closed mid-response")
        if self.first is None:
            self.first = now()
        self.buf += d
    def until(self, pat, pos):
        while True:
            i = self.buf.find(pat, pos)
            if i >= 0:
                return i
            self.fill()

def exchange(r):
    r.first = None
    t0 = now()
    r.t.sendall(req)
    end = r.until(b"\r\n\r\n", 0)
    head = bytes(r.buf[:end]).decode("latin-1")
    if head.split(" ", 2)[1:2] != ["200"]:
        raise OSError("response: " + head.split("\r\n")[0] + " " + bytes(r.buf[end:end + 300]).decode(errors="replace"))
    if "transfer-encoding: chunked" not in head.lower():
        raise OSError("response not chunked: " + head)
    pos, body_at, first_size, payload = end + 4, None, 0, bytearray()
    while True:
        le = r.until(b"\r\n", pos)
        size = int(bytes(r.buf[pos:le]).split(b";")[0], 16)
        pos = le + 2
        if size == 0:
            pos = r.until(b"\r\n", pos) + 2
            break
        while len(r.buf) <= pos:
            r.fill()
        if body_at is None:
            body_at, first_size = now(), size
        while len(r.buf) < pos + size + 2:
            r.fill()
        payload += r.buf[pos:pos + size]
        pos += size + 2
    done = now()
    del r.buf[:pos]
    if b"message_stop" not in payload:
        raise OSError("stream without message_stop")
    return r.first - t0, body_at - t0, done - t0, first_size

out = {"setup": [], "head": [], "ttfb": [], "total": [], "first_event": 0}
reader = None
for i in range(warm + n):
    if reader is None or mode == "new":
        t0 = now()
        reader = Reader(connect())
        setup = now() - t0
    h, b, d, out["first_event"] = exchange(reader)
    if mode == "new":
        reader.t.close()
    if i >= warm:
        if mode == "new":
            out["setup"].append(setup)
        out["head"].append(h)
        out["ttfb"].append(b)
        out["total"].append(d)
print(json.dumps(out))
"""


def words(n_bytes):
    """Deterministic prose-like text of about n_bytes (the fake counts one output token a word)."""
    vocab = ("the of and to in is that for it as with was on be by this are at from or an which but not have "
             "stream token meter proxy sandbox enforcer budget request response provider").split()
    out, size, i = [], 0, 0
    while size < n_bytes:
        w = vocab[(i * 7 + i // 13) % len(vocab)]
        out.append(w)
        size += len(w) + 1
        i += 1
    return " ".join(out)


def cpu_of(pid):
    return cpu_seconds(pid) if pid else None


def machine_jiffies():
    """(idle, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v[:8])


class Bench:
    def __init__(self, a):
        self.a = a
        self.pid = os.getpid()
        self.w, self.k = "kmiw-%d" % self.pid, "kmik-%d" % self.pid
        self.netns = []
        self.children = []  # (name, Popen)
        self.procs = {}
        self.sandboxes = []
        self.sb = ""
        self.root = tempfile.mkdtemp(prefix="km-bench-inspect-")
        os.chmod(self.root, 0o711)
        self.cgroup = "km-bench-inspect-%d" % self.pid
        build = os.path.abspath(a.build)
        self.build = build
        self.km_bin, self.kmd_bin = build + "/apps/km/km", build + "/apps/kmd/kmd"
        self.parse_bench = build + "/bench/meter_parse_bench"
        self.fake_py = os.path.join(os.path.dirname(HERE), "tests", "world", "fake_ai.py")
        self.ca = self.root + "/ca.pem"
        self.env = dict(os.environ, KM_SOCKET=self.root + "/run/kmd.sock")

    # ---- processes and namespaces (as bench/egress.py) -------------------------------------

    def in_w(self, argv):
        return ["ip", "netns", "exec", self.w] + argv

    def in_k(self, argv):
        # `ip netns exec` gives the command a mount namespace of its own: bind a resolv.conf
        # naming the world's resolver there, so getaddrinfo in K finds api.anthropic.com.
        return ["ip", "netns", "exec", self.k, "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                self.root + "/resolv.conf"] + argv

    def in_sandbox(self, argv):
        return ["env", "KM_SOCKET=" + self.env["KM_SOCKET"], self.km_bin, "exec", self.sb, "--"] + argv

    def spawn(self, name, argv):
        log = open(os.path.join(self.root, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.children.append((name, p))
        self.procs[name] = p
        return p

    def wait_listen(self, ns, proto, port, what, proc):
        flag = "-Hltn" if proto == "tcp" else "-Hlun"
        for _ in range(300):
            r = run(["ss", "-N", ns, flag, "sport = :%d" % port], timeout=10)
            if r.returncode == 0 and r.stdout.strip():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SetupError("%s did not listen on %s port %d (logs below)" % (what, proto, port))

    def km(self, *args, timeout=120, input=None):
        try:
            return subprocess.run([self.km_bin] + list(args), env=self.env, capture_output=True, text=True,
                                  timeout=timeout, input=input)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "timed out after %d s" % timeout)

    def enforcer_pid(self):
        try:
            with open("%s/run/sandboxes/%s/enforcer.pid" % (self.root, self.sb)) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    # ---- setup -----------------------------------------------------------------------------

    def setup(self):
        a = self.a
        for b in (self.km_bin, self.kmd_bin, self.build + "/apps/km-enforcer/km-enforcer"):
            if not os.access(b, os.X_OK):
                raise SetupError("%s missing; build the release preset first (cmake --preset release && "
                                 "cmake --build --preset release), or pass --build DIR" % b)
        if not os.path.isfile(self.fake_py):
            raise SetupError("%s missing" % self.fake_py)
        for tool in ("dnsmasq", "curl", "openssl", "nsenter", "ss"):
            if not shutil.which(tool):
                raise SetupError("%s not installed" % tool)
        with open(self.root + "/resolv.conf", "w") as f:
            f.write("nameserver %s\n" % AUTH_DNS)

        # Two namespaces, one veth pair, addresses from the documentation ranges only.
        for ns in (self.w, self.k):
            must(["ip", "netns", "add", ns], "netns")
            self.netns.append(ns)
        must(["ip", "link", "add", "kw0", "netns", self.k, "type", "veth", "peer", "name", "wk0", "netns", self.w], "veth")
        must(["ip", "-n", self.k, "addr", "add", K_ADDR + "/24", "dev", "kw0"], "address")
        for addr in (FAKE, AUTH_DNS):
            must(["ip", "-n", self.w, "addr", "add", addr + "/24", "dev", "wk0"], "address")
        for ns, dev in ((self.k, "kw0"), (self.w, "wk0")):
            must(["ip", "-n", ns, "link", "set", "lo", "up"], "link")
            must(["ip", "-n", ns, "link", "set", dev, "up"], "link")

        # A throwaway CA and the fake's certificate for api.anthropic.com, signed by it.
        r = self.root
        must(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
              "-subj", "/CN=km inspect bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", r + "/ca.key", "-out", self.ca], "CA")
        must(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-subj", "/CN=" + HOST, "-keyout", r + "/leaf.key", "-out", r + "/leaf.csr"], "leaf key")
        with open(r + "/leaf.ext", "w") as f:
            f.write("subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                    "keyUsage=critical,digitalSignature\n" % HOST)
        must(["openssl", "x509", "-req", "-in", r + "/leaf.csr", "-CA", self.ca, "-CAkey", r + "/ca.key",
              "-CAcreateserial", "-days", "1", "-extfile", r + "/leaf.ext", "-out", r + "/leaf.pem"], "leaf certificate")
        with open(r + "/chain.pem", "w") as f:
            f.write(open(r + "/leaf.pem").read() + open(self.ca).read())

        # W: the fake provider (the long reply is its default; short requests name theirs) and
        # the resolver for api.anthropic.com.
        self.fake_log = r + "/fake_ai.jsonl"
        p = self.spawn("fake_ai", self.in_w(["python3", "-I", "-B", "-S", self.fake_py, "--listen", FAKE + ":443",
                                             "--cert", r + "/chain.pem", "--key", r + "/leaf.key", "--log",
                                             self.fake_log, "--reply", words(a.reply_bytes), "--max-lifetime",
                                             "7200", "--ready-file", r + "/fake.ready"]))
        for _ in range(300):
            if os.path.exists(r + "/fake.ready") or p.poll() is not None:
                break
            time.sleep(0.05)
        if not os.path.exists(r + "/fake.ready"):
            raise SetupError("fake_ai did not start (fake_ai.log below)")
        p = self.spawn("dnsmasq-w", self.in_w(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                                              "--no-hosts", "--listen-address=" + AUTH_DNS, "--bind-interfaces",
                                              "--address=/%s/%s" % (HOST, FAKE), "--log-facility=-",
                                              "--pid-file=" + r + "/dnsmasq-w.pid", "--user=root"]))
        self.wait_listen(self.w, "udp", 53, "dnsmasq (W)", p)

        # kmd in K, trusting the throwaway CA upstream. Not through `ip netns exec`: that
        # remounts /sys and kmd would not find its cgroups.
        with open(r + "/kmd.yaml", "w") as f:
            f.write('upstreamDNS: ["%s"]\nlinkPool: %s\nextraCABundle: %s\n' % (AUTH_DNS, LINK_POOL, self.ca))
        with open(r + "/inspect.yaml", "w") as f:
            f.write(PROFILE)
        kmd = self.spawn("kmd", ["nsenter", "--net=/run/netns/" + self.k, self.kmd_bin, "--foreground", "--config",
                                 r + "/kmd.yaml", "--state-dir", r + "/state", "--runtime-dir", r + "/run", "--group", "",
                                 "--cgroup-name", self.cgroup])
        for _ in range(500):
            if os.path.exists(r + "/run/kmd.sock") and self.km("list", timeout=10).returncode == 0:
                break
            if kmd.poll() is not None:
                break
            time.sleep(0.01)
        else:
            raise SetupError("kmd did not start (kmd.log below)")
        if kmd.poll() is not None:
            raise SetupError("kmd exited (%d) (kmd.log below)" % kmd.returncode)
        c = self.km("create", r + "/inspect.yaml", timeout=120)
        if c.returncode != 0:
            raise SetupError("km create: %s (kmd.log below)" % c.stderr.strip())
        self.sb = c.stdout.strip().splitlines()[0]
        self.sandboxes.append(self.sb)
        if not self.enforcer_pid():
            raise SetupError("no enforcer.pid for %s" % self.sb)

        # The enforcer's own CPU while nothing runs in the sandbox, to read the per-request
        # figures against.
        pid = self.enforcer_pid()
        c0, t0 = cpu_of(pid), time.monotonic()
        time.sleep(2)
        c1 = cpu_of(pid)
        self.enforcer_idle = (c1 - c0) / (time.monotonic() - t0) if c0 is not None and c1 is not None else None

        # Sanity: every path gets a whole stream before anything is timed.
        for label, (argv, _) in self.ttfb_paths(1, 0, "new").items():
            res = run(argv, timeout=60)
            if res.returncode != 0 or not res.stdout.strip().startswith("{"):
                raise SetupError("%s cannot stream from https://%s/v1/messages: %s %s"
                                 % (label, HOST, res.stdout.strip()[-300:], res.stderr.strip()[-300:]))

    # ---- 1. time to first byte -------------------------------------------------------------

    def request_headers(self, label, extra=()):
        return [("x-api-key", "sk-ant-bench"), ("anthropic-version", "2023-06-01"), ("content-type", "application/json"),
                ("user-agent", "kmbench-" + label)] + list(extra)

    def ttfb_paths(self, n, warmup, mode):
        body = json.dumps({"model": MODEL, "max_tokens": 256, "stream": True,
                           "messages": [{"role": "user", "content": "Say hello."}]}, separators=(",", ":"))

        def cfg(label, proxy, cafile, addr):
            return json.dumps({"host": HOST, "n": n, "warmup": warmup, "mode": mode, "proxy": proxy, "cafile": cafile,
                               "addr": addr, "body": body,
                               "headers": self.request_headers(label, [("x-fake-reply", SHORT_REPLY)])})

        client = ["python3", "-c", CLIENT_PY]
        return {
            "direct (K)": (self.in_k(client + [cfg("direct", "-", self.ca, "")]), None),
            "km explicit (HTTPS_PROXY)": (self.in_sandbox(client + [cfg("km-explicit", "env", "", "")]), "km"),
            "km transparent": (self.in_sandbox(client + [cfg("km-transparent", "-", "", "")]), "km"),
            "fake alone (W)": (self.in_w(client + [cfg("fake-alone", "-", self.ca, FAKE)]), None),
        }

    def ttfb(self):
        a = self.a
        per = max(1, a.requests // a.rounds)
        out = {}
        cpu = {"new": [0.0, 0], "keep": [0.0, 0]}  # enforcer CPU seconds and requests, km paths
        # Rounds, each path and mode in turn, so a change in the machine's load falls on all.
        for _ in range(a.rounds):
            for mode in ("new", "keep"):
                for label, (argv, kind) in self.ttfb_paths(per, 3, mode).items():
                    key = (label, mode)
                    slot = out.setdefault(key, {"setup": [], "head": [], "ttfb": [], "total": [], "err": ""})
                    if slot["err"]:
                        continue
                    pid = self.enforcer_pid() if kind == "km" else 0
                    c0 = cpu_of(pid)
                    r = run(argv, timeout=60 + per)
                    c1 = cpu_of(pid)
                    try:
                        got = json.loads(r.stdout.strip().splitlines()[-1])
                    except (ValueError, IndexError):
                        slot["err"] = (r.stderr.strip() or r.stdout.strip())[-300:] or "no output"
                        continue
                    for k in ("setup", "head", "ttfb", "total"):
                        slot[k].extend(got[k])
                    slot["first_event"] = got["first_event"]
                    if c0 is not None and c1 is not None:
                        cpu[mode][0] += c1 - c0
                        cpu[mode][1] += per + 3
        return out, cpu

    # ---- 2. throughput ---------------------------------------------------------------------

    def stream_paths(self, chunks, responses):
        body = json.dumps({"model": MODEL, "max_tokens": 64000, "stream": True,
                           "messages": [{"role": "user", "content": "Write at length."}]}, separators=(",", ":"))
        url = "https://%s/v1/messages" % HOST

        def curl(label, extra):
            # One curl, `responses` POSTs over one connection; -w prints a line per response.
            argv = ["curl", "-sS", "--max-time", "300", "-w", "%{http_code} %{size_download} %{time_pretransfer} %{time_total}\\n"]
            for k, v in self.request_headers(label, [("x-fake-chunks", str(chunks))]):
                argv += ["-H", "%s: %s" % (k, v)]
            argv += extra + ["--data-binary", body]
            for _ in range(responses):
                argv += ["-o", "/dev/null", url]
            return argv

        return {
            "direct (K)": (self.in_k(curl("direct", ["--cacert", self.ca])), None),
            "km explicit (HTTPS_PROXY)": (self.in_sandbox(curl("km-explicit", [])), "km"),
            "km transparent": (self.in_sandbox(curl("km-transparent", ["--noproxy", "*"])), "km"),
            "fake alone (W)": (self.in_w(curl("fake-alone", ["--cacert", self.ca, "--resolve", "%s:443:%s" % (HOST, FAKE)])), None),
        }

    def throughput(self):
        """Per stream shape and path: MB/s per sample, and the CPU the enforcer and the fake spent."""
        fake = self.procs["fake_ai"].pid
        out = []
        for shape in self.a.shapes:
            paths = self.stream_paths(shape["chunks"], shape["responses"])
            res = {label: {"rates": [], "bytes": 0, "events": 0, "secs": 0.0, "enf": 0.0, "fake": 0.0, "err": "",
                           "idle": [0, 0]} for label in paths}
            # Samples interleaved across paths, so a change in the machine's load falls on all.
            for _ in range(self.a.reps):
                for label, (argv, kind) in paths.items():
                    s = res[label]
                    if s["err"]:
                        continue
                    pid = self.enforcer_pid() if kind == "km" else 0
                    e0, f0, m0 = cpu_of(pid), cpu_of(fake), machine_jiffies()
                    r = run(argv, timeout=60 + 300 * shape["responses"])
                    e1, f1, m1 = cpu_of(pid), cpu_of(fake), machine_jiffies()
                    lines = [l.split() for l in r.stdout.strip().splitlines()]
                    if (r.returncode != 0 or len(lines) != shape["responses"]
                            or any(len(l) != 4 or l[0] != "200" for l in lines)):
                        s["err"] = (r.stderr.strip() or r.stdout.strip())[-300:] or "no output"
                        continue
                    size = sum(int(l[1]) for l in lines)
                    secs = sum(float(l[3]) - float(l[2]) for l in lines)
                    s["rates"].append(size / secs / 1e6)
                    s["bytes"] += size
                    # message_start, content_block_start, ping, the deltas, content_block_stop,
                    # message_delta, message_stop
                    s["events"] += shape["responses"] * (shape["chunks"] + 6)
                    s["secs"] += secs
                    s["idle"][0] += m1[0] - m0[0]
                    s["idle"][1] += m1[1] - m0[1]
                    if e0 is not None and e1 is not None:
                        s["enf"] += e1 - e0
                    if f0 is not None and f1 is not None:
                        s["fake"] += f1 - f0
            out.append((shape, res))
        return out

    # ---- 3. parser -------------------------------------------------------------------------

    def parser(self):
        if not os.access(self.parse_bench, os.X_OK):
            return None, "%s missing (built with the project: cmake --build on the release preset)" % self.parse_bench
        argv = [self.parse_bench] + (["--mb", "4", "--rounds", "3"] if self.a.quick else [])
        r = run(argv, timeout=300)
        text = (r.stdout + r.stderr).strip()
        if r.returncode != 0:
            return text.splitlines(), "meter_parse_bench exited %d" % r.returncode
        return text.splitlines(), ""

    # ---- 4. metering check -----------------------------------------------------------------

    def metering(self):
        sent = {"calls": 0, "input": 0, "output": 0, "unmetered": 0}
        with open(self.fake_log) as f:
            for line in f:
                rec = json.loads(line)
                if not rec.get("user_agent", "").startswith("kmbench-km-"):
                    continue
                sent["calls"] += 1
                if rec.get("usage") is None:
                    sent["unmetered"] += 1
                    continue
                sent["input"] += rec["usage"]["input"]
                sent["output"] += rec["usage"]["output"]
        # The enforcer settles a call just after relaying its last byte: poll, bounded, until
        # the ledger holds every call.
        got, err = None, ""
        for _ in range(50):
            r = self.km("budget", "show", self.sb, "-o", "json", "-n", "100000", timeout=30)
            try:
                b = json.loads(r.stdout)
            except ValueError:
                err = (r.stderr.strip() or r.stdout.strip())[-300:]
                time.sleep(0.1)
                continue
            models = b.get("models", [])
            calls = b.get("calls", [])
            got = {"calls": sum(m.get("requests", 0) for m in models), "input": sum(m["input_tokens"] for m in models),
                   "output": sum(m["output_tokens"] for m in models),
                   "estimated": sum(1 for c in calls if c.get("estimated")), "listed": len(calls),
                   "spent_usd": b.get("ai", {}).get("spent_usd", "?")}
            if (got["calls"], got["input"], got["output"]) == (sent["calls"], sent["input"], sent["output"]):
                break
            time.sleep(0.1)
        return sent, got, err

    # ---- teardown --------------------------------------------------------------------------

    def print_logs(self):
        """The tails of the world's logs, for a failed setup (the temp dir goes unless --keep)."""
        for name in ("fake_ai", "dnsmasq-w", "kmd"):
            try:
                with open(os.path.join(self.root, name + ".log"), errors="replace") as f:
                    tail = f.read()[-2000:].strip()
            except OSError:
                continue
            if tail:
                print("---- %s.log (end) ----\n%s" % (name, tail), file=sys.stderr)

    def teardown(self):
        for sid in self.sandboxes:
            self.km("destroy", sid, timeout=60)
        enforcer = self.enforcer_pid() if self.sb else 0
        for _, p in reversed(self.children):
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
                except OSError:
                    pass
        # Enforcers outlive kmd by design; km destroy ends them, but make sure.
        for pid in [enforcer] + self.netns_pids():
            if pid > 0 and os.path.exists("/proc/%d" % pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for ns in self.netns:
            run(["ip", "netns", "del", ns], timeout=30)
        # kmd's cgroup parent, in every hierarchy; one whose last tasks are being reaped is
        # busy for a moment.
        for _ in range(50):
            left = self.cgroups()
            for d in sorted(left, key=len, reverse=True):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            if not self.cgroups():
                break
            time.sleep(0.1)
        subprocess.run(["umount", "-l", os.path.join(self.root, "run", "bpf")], capture_output=True)
        if self.a.keep:
            print("kept %s" % self.root, file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
        left = self.leftovers()
        if left:
            print("bench: left behind: %s" % "; ".join(left), file=sys.stderr)
        else:
            print("bench: cleanup verified: no namespaces, processes, cgroups or mounts of this run remain%s"
                  % (" (temp dir kept)" if self.a.keep else ", temp dir removed"), file=sys.stderr)

    def cgroups(self):
        found = []
        for base in glob.glob("/sys/fs/cgroup/*/" + self.cgroup) + glob.glob("/sys/fs/cgroup/" + self.cgroup):
            for dirpath, _, _ in os.walk(base):
                found.append(dirpath)
        return found

    def netns_pids(self):
        pids = []
        for ns in self.netns:
            r = run(["ip", "netns", "pids", ns], timeout=10)
            pids += [int(x) for x in r.stdout.split() if x.isdigit()]
        return pids

    def leftovers(self):
        left = []
        r = run(["ip", "netns", "list"], timeout=10)
        left += ["netns " + ns for ns in (self.w, self.k) if re.search(r"^%s\b" % re.escape(ns), r.stdout, re.M)]
        left += ["cgroup " + d for d in self.cgroups()]
        with open("/proc/mounts") as f:
            left += ["mount " + l.split()[1] for l in f if self.root in l]
        for d in glob.glob("/proc/[0-9]*"):
            try:
                with open(d + "/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if self.root.encode() in cmd and int(os.path.basename(d)) != self.pid:
                left.append("process %s" % os.path.basename(d))
        if not self.a.keep and os.path.exists(self.root):
            left.append("dir " + self.root)
        return left


# ---- report ---------------------------------------------------------------------------------

def ms(x):
    return x * 1e3


def report(b, ttfb, ttfb_cpu, thr, parser, meter):
    a = b.a
    print("== L7 inspection: a streamed AI response through km's metering proxy next to direct TLS ==")
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    print("cores: %d (%s); load average %.2f at the start, %.2f at the end (other work on the machine skews every row)"
          % (os.cpu_count(), model, b.load[0], os.getloadavg()[0]))
    print("fake provider: tests/world/fake_ai.py (Python, one thread per connection) on %s:443, certificate for %s from"
          " a throwaway CA; build: %s" % (FAKE, HOST, b.build))
    print("note: the sandbox path crosses one more veth than direct, the enforcer terminates TLS both ways and meters"
          " every byte; client, fake and enforcer share those cores")

    print("\n== 1. time to first byte of a streamed /v1/messages (stream: true, %d-byte first event), %d requests per"
          " row in %d interleaved rounds ==" % (ttfb[("direct (K)", "new")].get("first_event", 0),
                                               max(1, a.requests // a.rounds) * a.rounds, a.rounds))
    print("ttfb = from sending the request to the first byte of the response body; new = TCP (+CONNECT) + TLS"
          " handshake + request, per request; keep = every request over one connection (keep-alive)")
    print("%-28s %-5s %9s %9s %9s %9s   %11s %11s" % ("path", "conn", "p50 ms", "p90 ms", "p99 ms", "max ms",
                                                       "setup p50", "setup+ttfb"))
    for mode in ("new", "keep"):
        for label in b.ttfb_paths(1, 0, mode):
            s = ttfb[(label, mode)]
            if s["err"] or not s["ttfb"]:
                print("%-28s %-5s failed: %s" % (label, mode, s["err"] or "no result"))
                continue
            t = s["ttfb"]
            extra = ("%11.3f %11.3f" % (ms(pct(s["setup"], 50)), ms(pct([x + y for x, y in zip(s["setup"], t)], 50)))
                     if mode == "new" else "%11s %11s" % ("-", "-"))
            print("%-28s %-5s %9.3f %9.3f %9.3f %9.3f   %s" % (label, mode, ms(pct(t, 50)), ms(pct(t, 90)), ms(pct(t, 99)),
                                                              ms(max(t)), extra))
    print("added by km over direct (K), ttfb:")
    for mode in ("new", "keep"):
        base = ttfb[("direct (K)", mode)]["ttfb"]
        for label in ("km explicit (HTTPS_PROXY)", "km transparent"):
            t = ttfb[(label, mode)]["ttfb"]
            if base and t:
                line = "  %-26s %-5s p50 %+.3f ms, p99 %+.3f ms" % (label, mode, ms(pct(t, 50) - pct(base, 50)),
                                                                      ms(pct(t, 99) - pct(base, 99)))
                if mode == "new":
                    bs = [x + y for x, y in zip(ttfb[("direct (K)", mode)]["setup"], base)]
                    ks = [x + y for x, y in zip(ttfb[(label, mode)]["setup"], t)]
                    line += "; with the connection setup: p50 %+.3f ms, p99 %+.3f ms" % (ms(pct(ks, 50) - pct(bs, 50)),
                                                                                        ms(pct(ks, 99) - pct(bs, 99)))
                print(line)
    for mode in ("new", "keep"):
        c, n = ttfb_cpu[mode]
        if n:
            print("enforcer CPU per request (%s connections, both km rows, warm-ups included): %.0f us" % (mode, c / n * 1e6))
    if b.enforcer_idle is not None:
        print("enforcer CPU while the sandbox is idle: %.2f ms/s" % (b.enforcer_idle * 1e3))

    print("\n== 2. long streamed responses (SSE, no delay): each sample is N responses over one connection (curl),"
          " median of %d interleaved samples; MB = 10^6 B of response body ==" % a.reps)
    print("cpu = CPU seconds per GB of body (and microseconds per SSE event) that the enforcer (relaying and"
          " metering) and the fake (generating) spent; util = CPU seconds / seconds streaming: near 1.00 a process"
          " is using a whole core and bounds the row (the fake is one Python process: its GIL bounds it at about"
          " 1.00); idle = the machine's idle share of all cores while the row ran (near 0: the cores bound it)")
    for shape, res in thr:
        print("\n%s: %d responses per sample, each %d text deltas of ~%d bytes, ~%.2f MB" % (
            shape["name"], shape["responses"], shape["chunks"], a.reply_bytes // shape["chunks"],
            stream_bytes(a, shape["chunks"]) / 1e6))
        print("%-26s %8s %7s %7s %7s   %-24s %-24s %5s" % ("path", "MB/s", "min", "max", "/direct",
                                                              "enforcer s/GB us/ev util", "fake s/GB us/ev util", "idle"))
        direct = res["direct (K)"]["rates"]
        d50 = statistics.median(direct) if direct else None
        for label, s in res.items():
            if s["err"] or not s["rates"]:
                print("%-26s failed: %s" % (label, s["err"] or "no result"))
                continue
            m = statistics.median(s["rates"])

            def cpu_cell(sec):
                if not sec or not s["bytes"] or not s["secs"]:
                    return "%-24s" % "-"
                return "%-24s" % ("%6.1f %5.1f %5.2f" % (sec / (s["bytes"] / 1e9), sec / s["events"] * 1e6, sec / s["secs"]))

            idle = "%4.0f%%" % (100.0 * s["idle"][0] / s["idle"][1]) if s["idle"][1] else "-"
            print("%-26s %8.2f %7.2f %7.2f %7s   %s %s %5s" % (label, m, min(s["rates"]), max(s["rates"]),
                                                              "%.2f" % (m / d50) if d50 else "-",
                                                              cpu_cell(s["enf"]) if label.startswith("km") else "%-24s" % "-",
                                                              cpu_cell(s["fake"]), idle))

    print("\n== 3. the meter's parser (%s) ==" % os.path.relpath(b.parse_bench))
    lines, err = parser
    for line in lines or []:
        print("  " + line)
    if err:
        print("  failed: " + err)

    print("\n== 4. metering check: what the fake sent to the km rows against `km budget show %s -o json` ==" % b.sb)
    sent, got, err = meter
    if got is None:
        print("failed: km budget show: %s" % err)
    else:
        ok = (got["calls"], got["input"], got["output"]) == (sent["calls"], sent["input"], sent["output"])
        print("fake's log: %d calls, %d input tokens, %d output tokens%s" % (
            sent["calls"], sent["input"], sent["output"],
            (" (%d without usage)" % sent["unmetered"]) if sent["unmetered"] else ""))
        print("km ledger:  %d calls, %d input tokens, %d output tokens, %d estimated, $%s spent" % (
            got["calls"], got["input"], got["output"], got["estimated"], got["spent_usd"]))
        print("metered exactly: %s" % ("yes" if ok and not got["estimated"] else "NO: the figures above are not for a"
                                       " proxy that metered every token"))


def stream_bytes(a, chunks):
    # A content_block_delta event's envelope around its text, and the chunked framing.
    envelope = len('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
                   '{"type":"text_delta","text":""}}\n\n') + 8
    return chunks * envelope + a.reply_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run: fewer requests and samples")
    ap.add_argument("--requests", type=int, default=300, help="TTFB requests per path and connection mode")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved TTFB rounds")
    ap.add_argument("--reps", type=int, default=5, help="throughput samples per path")
    ap.add_argument("--responses", type=int, default=8, help="long responses per throughput sample")
    ap.add_argument("--chunks", type=int, default=20000, help="text deltas per long response (x-fake-chunks)")
    ap.add_argument("--reply-bytes", type=int, default=120000, help="text of a long response (fake_ai --reply)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) at the end")
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build", "release"),
                    help="a release build directory holding apps/km/km, apps/kmd/kmd and bench/meter_parse_bench"
                         " (default: build/release)")
    a = ap.parse_args()
    benchutil.clean_up_on_signals()
    if a.quick:
        a.requests, a.rounds, a.reps, a.responses = 60, 3, 3, 4
    a.requests, a.rounds = max(1, min(a.requests, 20000)), max(1, min(a.rounds, 50))
    a.reps, a.responses = max(1, min(a.reps, 50)), max(1, min(a.responses, 100))
    a.reply_bytes = max(1000, min(a.reply_bytes, 120000))  # one argv string: under the kernel's 128 KiB
    a.chunks = max(1, min(a.chunks, 100000, a.reply_bytes))  # fake_ai.py's bound
    # Short deltas, as providers stream them (a few tokens an event: the meter's per-event cost
    # dominates), and long ones (its per-byte cost): the same text either way.
    a.shapes = [{"name": "short deltas", "chunks": a.chunks, "responses": a.responses},
                {"name": "long deltas", "chunks": max(1, a.chunks // 40), "responses": a.responses * 5}]
    if os.geteuid() != 0:
        sys.exit("bench: needs root (network namespaces; kmd creates namespaces and cgroups)")
    b = Bench(a)
    try:
        try:
            b.setup()
        except SetupError as e:
            print("bench: setup failed: %s" % e, file=sys.stderr)
            b.print_logs()
            return 1
        b.load = os.getloadavg()
        ttfb, ttfb_cpu = b.ttfb()
        thr = b.throughput()
        meter = b.metering()
        parser = b.parser()
        report(b, ttfb, ttfb_cpu, thr, parser, meter)
        return 0
    finally:
        b.teardown()


if __name__ == "__main__":
    sys.exit(main())
