#!/usr/bin/env python3
"""Egress figures: km's enforcer next to a direct path, squid and tinyproxy, in the same run
(needs root).

  1. throughput of one large download (median of N), plain HTTP and HTTPS: direct from K;
     inside a sandbox through the enforcer, explicit proxy (curl -x) and transparent
     (--noproxy '*'); squid and tinyproxy in K as forward/CONNECT proxies (curl -x from C, one
     veth away, as a sandbox's client is from its enforcer); and direct from C, routed by K.
  2. added latency of small HTTPS requests, each on a new connection (CONNECT, TLS handshake,
     GET /, read the answer): direct from K against the sandbox through the enforcer.
  3. DNS: dnsperf and a sequential query loop (for p99) against the enforcer's DNS filter from
     inside the sandbox, and against dnsmasq in K forwarding without a cache; same query file,
     same upstream.
  4. the enforcer's RSS after all of the above, and an idle sandbox's.

The world is built here, in network namespaces of its own, from 198.51.100.0/24 (servers, K's
side) and 203.0.113.0/24 (kmd's link pool) only:

  sandbox --veth-- link ns (enforcer sockets) ... enforcer process in K --veth-- W
  C (the peers' clients) --veth-- K: curl, squid, tinyproxy, dnsmasq   --veth-- W
  W: HTTP/HTTPS server (python, sendfile) on 198.51.100.10, dnsmasq for allowed.test on .53

Timings are for reading, never for pass/fail: the exit status is 0 unless setup fails.
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time
import benchutil  # noqa: E402  (bench/benchutil.py, beside this script)

WEB, AUTH_DNS, K_ADDR, K_DNS = "198.51.100.10", "198.51.100.53", "198.51.100.1", "198.51.100.2"
# C: the peers' clients, behind a veth of their own as a sandbox's client is (K-W is 0/25, K-C 128/25).
KC_ADDR, C_ADDR = "198.51.100.129", "198.51.100.130"
LINK_POOL = "203.0.113.128/25"
HOST = "data.allowed.test"
SQUID_PORT, TINYPROXY_PORT = 3129, 8888

PROFILE = """apiVersion: klankermaker.ai/v1alpha2
kind: SandboxProfile
metadata: {name: bench, prefix: bench}
extends: quickstart
spec:
  runtime: {resources: {cpus: 2, memory: 2Gi, pids: 512}}
  network:
    egress:
      allowedDNSSuffixes: [".allowed.test"]
"""

# The world's web server: GET /big sends the file (sendfile on plain HTTP, 1 MiB writes from a
# mapping on TLS); anything else gets a small JSON body. One thread per connection,
# Connection: close. Exits when its parent goes or after --lifetime seconds.
SERVER_PY = r"""
import mmap, os, socket, ssl, sys, threading, time
addr, path, cert, key, lifetime = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
size = os.path.getsize(path)
f = open(path, "rb")
big = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
SMALL = b'{"server":"bench","path":"/"}\n'

def handle(conn, tls):
    try:
        conn.settimeout(60)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            conn = ctx.wrap_socket(conn, server_side=True)
        buf = b""
        while b"\r\n\r\n" not in buf and len(buf) < 65536:
            d = conn.recv(4096)
            if not d:
                return
            buf += d
        target = buf.split(b" ", 2)[1] if buf.count(b" ") >= 2 else b"/"
        if target.endswith(b"/big"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
            if tls:
                mv = memoryview(big)
                for off in range(0, size, 1 << 20):
                    conn.sendall(mv[off:off + (1 << 20)])
            else:
                f2 = open(path, "rb")
                conn.sendfile(f2)
                f2.close()
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(SMALL), SMALL))
    except (OSError, ValueError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass

def serve(port, tls):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(512)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c, tls), daemon=True).start()

parent = os.getppid()
for port, tls in ((80, False), (443, True)):
    threading.Thread(target=serve, args=(port, tls), daemon=True).start()
deadline = time.monotonic() + lifetime
while time.monotonic() < deadline and os.getppid() == parent:
    time.sleep(0.5)
"""

# N small HTTPS requests, each on a new connection (through a CONNECT proxy when one is given):
# prints the duration of each, in seconds, as a JSON list. The first `warmup` are not printed.
LATENCY_PY = r"""
import json, socket, ssl, sys, time
n, warmup, host, proxy, fixed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
req = ("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode()

def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise OSError("connection closed before the head ended")
        buf += d
        if len(buf) > 65536:
            raise OSError("head too long")
    return buf

def one():
    if proxy != "-":
        ph, pp = proxy.rsplit(":", 1)
        s = socket.create_connection((ph, int(pp)), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(("CONNECT %s:443 HTTP/1.1\r\nHost: %s:443\r\n\r\n" % (host, host)).encode())
        head = read_head(s)
        if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
            raise OSError("CONNECT refused: " + head.split(b"\r\n")[0].decode(errors="replace"))
    else:
        addr = fixed if fixed != "-" else socket.getaddrinfo(host, 443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        s = socket.create_connection((addr, 443), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = ctx.wrap_socket(s, server_hostname=host)
    t.sendall(req)
    buf = read_head(t)
    head, body = buf.split(b"\r\n\r\n", 1)
    length = int([l.split(b":", 1)[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(body) < length:
        d = t.recv(4096)
        if not d:
            break
        body += d
    t.close()
    if len(body) != length:
        raise OSError("short body")

out = []
for i in range(n + warmup):
    t0 = time.perf_counter()
    one()
    if i >= warmup:
        out.append(time.perf_counter() - t0)
print(json.dumps(out))
"""

# N sequential DNS queries (A, UDP) for names from argv, one at a time: durations as JSON.
DNS_PY = r"""
import json, os, socket, struct, sys, time
server, n, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((server, 53))
s.settimeout(2)
out, lost = [], 0
for i in range(n):
    qid = struct.unpack("H", os.urandom(2))[0]
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in names[i % len(names)].split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    t0 = time.perf_counter()
    s.send(q)
    try:
        while True:
            r = s.recv(4096)
            if len(r) >= 2 and struct.unpack(">H", r[:2])[0] == qid:
                break
        out.append(time.perf_counter() - t0)
    except socket.timeout:
        lost += 1
print(json.dumps({"times": out, "lost": lost}))
"""


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def rss_kib(pid):
    """VmRSS, PSS and USS (private pages: what this process alone costs) in KiB."""
    out = {"rss": 0, "pss": 0, "uss": 0}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == "Rss":
                    out["rss"] = int(v.split()[0])
                elif k == "Pss":
                    out["pss"] = int(v.split()[0])
                elif k in ("Private_Clean", "Private_Dirty"):
                    out["uss"] += int(v.split()[0])
    except OSError:
        pass
    return out


def cpu_seconds(pid):
    """User + system CPU of a process, its threads and reaped children; None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def machine_cpu():
    """(busy, total) CPU seconds of the whole machine so far, every core, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    total = sum(v[:8])  # guest time is already counted in user
    hz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hz, total / hz


def run(argv, timeout=120, input=None):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", "timed out after %d s" % timeout)


def must(argv, what, timeout=60, input=None):
    r = run(argv, timeout=timeout, input=input)
    if r.returncode != 0:
        raise SetupError("%s: %s failed (%d): %s" % (what, " ".join(argv), r.returncode, (r.stderr or r.stdout).strip()[-400:]))
    return r


class SetupError(Exception):
    pass


class Bench:
    def __init__(self, a):
        self.a = a
        self.pid = os.getpid()
        self.w, self.k, self.c = "kmbw-%d" % self.pid, "kmbk-%d" % self.pid, "kmbc-%d" % self.pid
        self.netns = []
        self.children = []  # (name, Popen)
        self.procs = {}
        self.sandboxes = []
        self.kmd = None
        self.root = tempfile.mkdtemp(prefix="km-bench-egress-")
        os.chmod(self.root, 0o711)
        self.bigfile = "/dev/shm/kmb-egress-%d.bin" % self.pid
        self.cgroup = "km-bench-%d" % self.pid
        build = os.path.abspath(a.build)
        self.km_bin, self.kmd_bin = build + "/apps/km/km", build + "/apps/kmd/kmd"
        self.env = dict(os.environ, KM_SOCKET=self.root + "/run/kmd.sock")

    # ---- processes and namespaces --------------------------------------------------------

    def in_w(self, argv):
        return ["ip", "netns", "exec", self.w] + argv

    def in_ns(self, ns, argv):
        # `ip netns exec` gives the command a mount namespace of its own: bind a resolv.conf
        # naming the world's resolver there, so getaddrinfo (curl, tinyproxy) uses it.
        return ["ip", "netns", "exec", ns, "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                self.root + "/resolv.conf"] + argv

    def in_k(self, argv):
        return self.in_ns(self.k, argv)

    def in_c(self, argv):
        return self.in_ns(self.c, argv)

    def spawn(self, name, argv, **kw):
        log = open(os.path.join(self.root, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        log.close()
        self.children.append((name, p))
        self.procs[name] = p
        return p

    def wait_listen(self, ns, proto, port, what, proc=None):
        flag = "-Hltn" if proto == "tcp" else "-Hlun"
        for _ in range(300):
            r = run(["ss", "-N", ns, flag, "sport = :%d" % port], timeout=10)
            if r.returncode == 0 and r.stdout.strip():
                return
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SetupError("%s did not listen on %s port %d; see %s" % (what, proto, port, self.root))

    def km(self, *args, timeout=120, input=None):
        try:
            return subprocess.run([self.km_bin] + list(args), env=self.env, capture_output=True, text=True, timeout=timeout,
                                  input=input)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "timed out after %d s" % timeout)

    # ---- setup ---------------------------------------------------------------------------

    def setup(self):
        a = self.a
        for b in (self.km_bin, self.kmd_bin):
            if not os.access(b, os.X_OK):
                raise SetupError("%s missing; build the release preset first (cmake --preset release && "
                                 "cmake --build --preset release), or pass --build DIR" % b)
        for tool in ("squid", "tinyproxy", "dnsmasq", "dnsperf", "curl", "openssl", "nsenter", "ss"):
            if not shutil.which(tool):
                raise SetupError("%s not installed" % tool)
        with open(self.root + "/resolv.conf", "w") as f:
            f.write("nameserver %s\n" % AUTH_DNS)

        # Three namespaces, two veth pairs, addresses from the documentation ranges only. C holds
        # the clients of squid and tinyproxy, one veth away from them as a sandbox's client is
        # from its enforcer, so every proxy row crosses the same links.
        for ns in (self.w, self.k, self.c):
            must(["ip", "netns", "add", ns], "netns")
            self.netns.append(ns)
        must(["ip", "link", "add", "kw0", "netns", self.k, "type", "veth", "peer", "name", "wk0", "netns", self.w], "veth")
        must(["ip", "link", "add", "kc0", "netns", self.k, "type", "veth", "peer", "name", "ck0", "netns", self.c], "veth")
        for addr in (K_ADDR, K_DNS):
            must(["ip", "-n", self.k, "addr", "add", addr + "/25", "dev", "kw0"], "address")
        for addr in (WEB, AUTH_DNS):
            must(["ip", "-n", self.w, "addr", "add", addr + "/25", "dev", "wk0"], "address")
        must(["ip", "-n", self.k, "addr", "add", KC_ADDR + "/25", "dev", "kc0"], "address")
        must(["ip", "-n", self.c, "addr", "add", C_ADDR + "/25", "dev", "ck0"], "address")
        for ns, dev in ((self.k, "kw0"), (self.k, "kc0"), (self.w, "wk0"), (self.c, "ck0")):
            must(["ip", "-n", ns, "link", "set", "lo", "up"], "link")
            must(["ip", "-n", ns, "link", "set", dev, "up"], "link")
        # "direct (from C)": C reaches W through K, which forwards between its two links.
        must(["ip", "-n", self.c, "route", "add", "default", "via", KC_ADDR], "route")
        must(["ip", "-n", self.w, "route", "add", "198.51.100.128/25", "via", K_ADDR], "route")
        must(["ip", "netns", "exec", self.k, "sysctl", "-qw", "net.ipv4.ip_forward=1"], "forwarding")

        # The download and a self-signed certificate.
        size = a.size_mib << 20
        block = os.urandom(1 << 20)
        with open(self.bigfile, "wb") as f:
            for _ in range(a.size_mib):
                f.write(block)
        self.size = size
        cert, key = self.root + "/cert.pem", self.root + "/key.pem"
        must(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
              "-subj", "/CN=" + HOST, "-addext", "subjectAltName=DNS:" + HOST + ",DNS:*.allowed.test",
              "-keyout", key, "-out", cert], "certificate")
        with open(self.root + "/server.py", "w") as f:
            f.write(SERVER_PY)

        # W: web server and the authoritative resolver for allowed.test.
        p = self.spawn("web", self.in_w(["python3", self.root + "/server.py", WEB, self.bigfile, cert, key, "7200"]))
        self.wait_listen(self.w, "tcp", 443, "web server", p)
        self.wait_listen(self.w, "tcp", 80, "web server", p)
        p = self.spawn("dnsmasq-w", self.in_w(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                                              "--no-hosts", "--listen-address=" + AUTH_DNS, "--bind-interfaces",
                                              "--address=/allowed.test/" + WEB, "--log-facility=-",
                                              "--pid-file=" + self.root + "/dnsmasq-w.pid", "--user=root"]))
        self.wait_listen(self.w, "udp", 53, "dnsmasq (W)", p)

        # K: dnsmasq as a plain forwarder (no cache), squid and tinyproxy.
        p = self.spawn("dnsmasq-k", self.in_k(["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                                              "--no-hosts", "--listen-address=" + K_DNS, "--bind-interfaces",
                                              "--server=" + AUTH_DNS, "--cache-size=0", "--dns-forward-max=1000",
                                              "--log-facility=-", "--pid-file=" + self.root + "/dnsmasq-k.pid",
                                              "--user=root"]))
        self.wait_listen(self.k, "udp", 53, "dnsmasq (K)", p)
        sq = self.root + "/squid"
        os.mkdir(sq)
        shutil.chown(sq, "proxy", "proxy")
        with open(sq + "/squid.conf", "w") as f:
            f.write("\n".join([
                "http_port %s:%d" % (K_ADDR, SQUID_PORT),
                "http_access allow all",
                "cache deny all",
                "cache_mem 8 MB",
                "access_log none",
                "cache_store_log none",
                "cache_log %s/cache.log" % sq,
                "pid_filename %s/squid.pid" % sq,
                "coredump_dir %s" % sq,
                "netdb_filename none",
                "dns_nameservers %s" % AUTH_DNS,
                "hosts_file none",
                "via off",
                "forwarded_for delete",
                "cache_effective_user proxy",
                "shutdown_lifetime 0 seconds",
                ""]))
        p = self.spawn("squid", self.in_k(["squid", "-N", "-f", sq + "/squid.conf"]))
        self.wait_listen(self.k, "tcp", SQUID_PORT, "squid", p)
        with open(self.root + "/tinyproxy.conf", "w") as f:
            f.write("\n".join([
                "User nobody", "Group nogroup",
                "Port %d" % TINYPROXY_PORT, "Listen %s" % K_ADDR,
                "Timeout 600", "MaxClients 100", "LogLevel Critical", "DisableViaHeader Yes",
                "ConnectPort 443", "ConnectPort 80", ""]))
        p = self.spawn("tinyproxy", self.in_k(["tinyproxy", "-d", "-c", self.root + "/tinyproxy.conf"]))
        self.wait_listen(self.k, "tcp", TINYPROXY_PORT, "tinyproxy", p)

        # kmd in K. Not through `ip netns exec`: that remounts /sys and kmd would not find its
        # cgroups.
        with open(self.root + "/kmd.yaml", "w") as f:
            f.write('upstreamDNS: ["%s"]\nlinkPool: %s\n' % (AUTH_DNS, LINK_POOL))
        with open(self.root + "/bench.yaml", "w") as f:
            f.write(PROFILE)
        self.kmd = self.spawn("kmd", ["nsenter", "--net=/run/netns/" + self.k, self.kmd_bin, "--foreground", "--config",
                                      self.root + "/kmd.yaml", "--state-dir", self.root + "/state", "--runtime-dir",
                                      self.root + "/run", "--group", "", "--cgroup-name", self.cgroup])
        for _ in range(500):
            if os.path.exists(self.root + "/run/kmd.sock") and self.km("list", timeout=10).returncode == 0:
                break
            if self.kmd.poll() is not None:
                break
            time.sleep(0.01)
        else:
            raise SetupError("kmd did not start; see %s/kmd.log" % self.root)
        if self.kmd.poll() is not None:
            raise SetupError("kmd exited (%d); see %s/kmd.log" % (self.kmd.returncode, self.root))
        self.sb = self.create()
        self.idle = self.create()
        r = self.km("exec", self.sb, "--", "cat", "/etc/resolv.conf", timeout=30)
        m = re.search(r"^nameserver\s+(\S+)", r.stdout, re.M)
        if not m:
            raise SetupError("no nameserver in the sandbox's resolv.conf: %r %s" % (r.stdout, r.stderr))
        self.peer = m.group(1)
        names = ["q%d.allowed.test" % i for i in range(a.names)]
        self.names = names
        with open(self.root + "/queries.txt", "w") as f:
            f.write("".join("%s A\n" % n for n in names))
        r = self.km("exec", self.sb, "--", "sh", "-c", "cat > /workspace/queries.txt", input="".join("%s A\n" % n for n in names))
        if r.returncode != 0:
            raise SetupError("writing the query file into the sandbox: " + r.stderr)
        # Sanity: every path fetches the small page before anything is measured.
        for label, argv in self.fetch_paths("http", "/").items():
            r = run(argv, timeout=30)
            if r.returncode != 0 or not r.stdout.strip():
                raise SetupError("%s cannot fetch http://%s/: %s %s" % (label, HOST, r.stdout, r.stderr.strip()[-300:]))

    def create(self):
        r = self.km("create", self.root + "/bench.yaml", timeout=120)
        if r.returncode != 0:
            raise SetupError("km create: %s; see %s/kmd.log" % (r.stderr.strip(), self.root))
        sid = r.stdout.strip().splitlines()[0]
        self.sandboxes.append(sid)
        return sid

    def enforcer_pid(self, sid):
        try:
            with open("%s/run/sandboxes/%s/enforcer.pid" % (self.root, sid)) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    # ---- 1. throughput -------------------------------------------------------------------

    def fetch_paths(self, scheme, path):
        url = "%s://%s%s" % (scheme, HOST, path)
        curl = ["curl", "-sS", "-k", "--max-time", "300", "-o", "/dev/null", "-w", "%{size_download} %{time_total}\n"]
        km_exec = ["env", "KM_SOCKET=" + self.env["KM_SOCKET"], self.km_bin, "exec", self.sb, "--"]
        return {
            "direct": self.in_k(curl + [url]),
            "km explicit": km_exec + curl + ["-x", "http://%s:3128" % self.peer, url],
            "km transparent": km_exec + curl + ["--noproxy", "*", url],
            "squid": self.in_c(curl + ["-x", "http://%s:%d" % (K_ADDR, SQUID_PORT), url]),
            "tinyproxy": self.in_c(curl + ["-x", "http://%s:%d" % (K_ADDR, TINYPROXY_PORT), url]),
            # The same links as the proxy rows (C -> K -> W), routed by K: no relay.
            "direct (from C)": self.in_c(curl + [url]),
            # Reference: the server with a client next to it in W (no veth), to show it is not
            # what limits the rows above.
            "server alone (W)": self.in_w(curl + ["--resolve", "%s:%d:%s" % (HOST, 80 if scheme == "http" else 443, WEB), url]),
        }

    def server_pid(self, label):
        """The process that relays a path's bytes, for its CPU cost."""
        if label.startswith("km "):
            return self.enforcer_pid(self.sb)
        p = self.procs.get(label)
        return p.pid if p is not None else 0

    def throughput(self):
        # Repetitions are interleaved across paths, so a change in the machine's load during
        # the run falls on every path alike.
        paths = {scheme: self.fetch_paths(scheme, "/big") for scheme in ("http", "https")}
        rates = {(sc, l): [] for sc in paths for l in paths[sc]}
        cpu = {key: 0.0 for key in rates}
        busy = {key: [0.0, 0.0] for key in rates}
        errs = {key: "" for key in rates}
        for _ in range(self.a.reps):
            for scheme, labels in paths.items():
                for label, argv in labels.items():
                    key = (scheme, label)
                    if errs[key]:
                        continue
                    pid = self.server_pid(label)
                    c0 = cpu_seconds(pid) if pid else None
                    m0 = machine_cpu()
                    r = run(argv, timeout=330)
                    m1 = machine_cpu()
                    c1 = cpu_seconds(pid) if pid else None
                    parts = r.stdout.split()
                    if r.returncode != 0 or len(parts) != 2 or int(float(parts[0])) != self.size:
                        errs[key] = (r.stderr.strip() or r.stdout.strip())[-200:] or "short download"
                        continue
                    rates[key].append(self.size / float(parts[1]) / 1e6)
                    busy[key][0] += m1[0] - m0[0]
                    busy[key][1] += m1[1] - m0[1]
                    cpu[key] = cpu[key] + (c1 - c0) if c0 is not None and c1 is not None and cpu[key] is not None else None
        res = {}
        for key in rates:
            if errs[key] or not rates[key]:
                res[key] = (None, None, errs[key] or "no result", None, None)
            else:
                per_gb = cpu[key] / (len(rates[key]) * self.size / 1e9) if cpu[key] is not None and self.server_pid(key[1]) else None
                gb = len(rates[key]) * self.size / 1e9
                res[key] = (statistics.median(rates[key]), per_gb, "", busy[key][0] / gb,
                            busy[key][0] / busy[key][1] if busy[key][1] else None)
        return res

    # ---- 2. latency ----------------------------------------------------------------------

    def latency(self):
        n, warm = max(1, self.a.requests // 3), 5
        runs = {
            "direct (getaddrinfo each)": self.in_k(["python3", "-c", LATENCY_PY, str(n), str(warm), HOST, "-", "-"]),
            "direct (address known)": self.in_k(["python3", "-c", LATENCY_PY, str(n), str(warm), HOST, "-", WEB]),
            "km explicit (CONNECT)": ["env", "KM_SOCKET=" + self.env["KM_SOCKET"], self.km_bin, "exec", self.sb, "--",
                                      "python3", "-c", LATENCY_PY, str(n), str(warm), HOST, "%s:3128" % self.peer, "-"],
            "km transparent (getaddrinfo each)": ["env", "KM_SOCKET=" + self.env["KM_SOCKET"], self.km_bin, "exec", self.sb,
                                                  "--", "python3", "-c", LATENCY_PY, str(n), str(warm), HOST, "-", "-"],
            "squid (CONNECT)": self.in_c(["python3", "-c", LATENCY_PY, str(n), str(warm), HOST,
                                          "%s:%d" % (K_ADDR, SQUID_PORT), "-"]),
            "tinyproxy (CONNECT)": self.in_c(["python3", "-c", LATENCY_PY, str(n), str(warm), HOST,
                                              "%s:%d" % (K_ADDR, TINYPROXY_PORT), "-"]),
        }
        # Three rounds, each path in turn, so a change in the machine's load falls on all.
        out = {label: ([], "") for label in runs}
        for _ in range(3):
            for label, argv in runs.items():
                if out[label][1]:
                    continue
                r = run(argv, timeout=30 + n)
                try:
                    out[label][0].extend(json.loads(r.stdout.strip().splitlines()[-1]))
                except (ValueError, IndexError):
                    out[label] = (None, (r.stderr.strip() or r.stdout.strip())[-300:])
        return out

    # ---- 3. DNS --------------------------------------------------------------------------

    def dnsperf(self, argv, pid):
        c0 = cpu_seconds(pid) if pid else None
        r = run(argv, timeout=self.a.dns_seconds + 60)
        c1 = cpu_seconds(pid) if pid else None
        done = re.search(r"Queries completed:\s+(\d+)", r.stdout)
        qps = re.search(r"Queries per second:\s+([\d.]+)", r.stdout)
        avg = re.search(r"Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)", r.stdout)
        lost = re.search(r"Queries lost:\s+(\d+)", r.stdout)
        if not qps or not avg:
            return None, (r.stderr.strip() or r.stdout.strip())[-300:]
        n = int(done.group(1)) if done else 0
        cpu_us = (c1 - c0) / n * 1e6 if c0 is not None and c1 is not None and n else None
        return {"qps": float(qps.group(1)), "avg": float(avg.group(1)), "max": float(avg.group(3)),
                "lost": int(lost.group(1)) if lost else 0, "cpu_us": cpu_us}, ""

    def dns(self):
        a = self.a
        perf = ["dnsperf", "-l", str(a.dns_seconds), "-q", "100", "-t", "2"]
        res = {}
        res["km enforcer"] = self.dnsperf(["env", "KM_SOCKET=" + self.env["KM_SOCKET"], self.km_bin, "exec", self.sb, "--"]
                                          + perf + ["-s", self.peer, "-d", "/workspace/queries.txt"], self.enforcer_pid(self.sb))
        res["dnsmasq fwd, no cache"] = self.dnsperf(self.in_k(perf + ["-s", K_DNS, "-d", self.root + "/queries.txt"]),
                                                    self.procs["dnsmasq-k"].pid)
        res["upstream itself"] = self.dnsperf(self.in_k(perf + ["-s", AUTH_DNS, "-d", self.root + "/queries.txt"]),
                                              self.procs["dnsmasq-w"].pid)
        names = ",".join(self.names[:500])
        loops = {}
        for label, argv in (
                ("km enforcer", ["env", "KM_SOCKET=" + self.env["KM_SOCKET"], self.km_bin, "exec", self.sb, "--",
                                 "python3", "-c", DNS_PY, self.peer, str(a.dns_queries), names]),
                ("dnsmasq fwd, no cache", self.in_k(["python3", "-c", DNS_PY, K_DNS, str(a.dns_queries), names])),
                ("upstream itself", self.in_k(["python3", "-c", DNS_PY, AUTH_DNS, str(a.dns_queries), names]))):
            r = run(argv, timeout=60 + a.dns_queries // 10)
            try:
                loops[label] = (json.loads(r.stdout.strip().splitlines()[-1]), "")
            except (ValueError, IndexError):
                loops[label] = (None, (r.stderr.strip() or r.stdout.strip())[-300:])
        return res, loops

    # ---- teardown ------------------------------------------------------------------------

    def teardown(self):
        for sid in self.sandboxes:
            self.km("destroy", sid, timeout=60)
        enforcers = [self.enforcer_pid(s) for s in self.sandboxes]
        for name, p in reversed(self.children):
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
        for pid in enforcers + self.netns_pids():
            if pid > 0 and os.path.exists("/proc/%d" % pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for ns in self.netns:
            run(["ip", "netns", "del", ns], timeout=30)
        # kmd's cgroup parent, in the v2 tree and in any v1 hierarchy it used.
        for hier in ("unified", "cpu", "pids", "memory", ""):
            d = os.path.join("/sys/fs/cgroup", hier, self.cgroup)
            if os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError as e:
                    print("bench: could not remove %s: %s" % (d, e), file=sys.stderr)
        try:
            os.unlink(self.bigfile)
        except OSError:
            pass
        if self.a.keep:
            print("kept %s" % self.root, file=sys.stderr)
        else:
            subprocess.run(["umount", "-l", os.path.join(self.root, "run", "bpf")], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)

    def netns_pids(self):
        pids = []
        for ns in self.netns:
            r = run(["ip", "netns", "pids", ns], timeout=10)
            pids += [int(x) for x in r.stdout.split() if x.isdigit()]
        return pids


def report(b, thr, lat, dns, loops, rss):
    a = b.a
    print("== egress: km enforcer next to direct, squid %s and tinyproxy %s ==" % (tool_version(["squid", "-v"], r"Version (\S+)"),
                                                                                  tool_version(["tinyproxy", "-v"], r"tinyproxy (\S+)")))
    print("cores: %d; load average %.2f at the start, %.2f at the end (other work on the machine skews every row)"
          % (os.cpu_count(), b.load[0], os.getloadavg()[0]))
    print("note: the km and peer proxy rows (and direct from C) cross two veths, direct from K one; every client,"
          " server and proxy here shares those cores")

    if thr is not None:
        report_throughput(a, thr)
    if lat is not None:
        report_latency(a, lat)
    if dns is not None:
        report_dns(a, dns, loops)
    if rss["idle"] is not None:
        report_memory(rss)


def report_throughput(a, thr):
    print("\n== 1. one %d MiB download, median of %d (interleaved), MB/s = 10^6 B/s; relay = CPU seconds the relaying"
          " process spent per GB; machine = CPU seconds the whole machine spent per GB (every process, the kernel's"
          " network work included) and busy = the share of all cores in use while the path ran ==" % (a.size_mib, a.reps))
    print("%-18s %10s %7s %6s %7s %5s   %10s %7s %6s %7s %5s" % ("path", "http MB/s", "/direct", "relay", "machine", "busy",
                                                               "https MB/s", "/direct", "relay", "machine", "busy"))
    labels = ("direct", "direct (from C)", "km explicit", "km transparent", "squid", "tinyproxy", "server alone (W)")
    for label in labels:
        cells = []
        for scheme in ("http", "https"):
            v, per_gb, _, mach, share = thr[(scheme, label)]
            d = thr[(scheme, "direct")][0]
            if v is None:
                cells.append("%10s %7s %6s %7s %5s" % ("failed", "-", "-", "-", "-"))
            else:
                cells.append("%10.0f %7s %6s %7.2f %4.0f%%" % (v, "%.2f" % (v / d) if d else "-",
                                                             "%.2f" % per_gb if per_gb is not None else "-", mach, share * 100))
        print("%-18s %s   %s" % (label, cells[0], cells[1]))
    for label in labels:
        for scheme in ("http", "https"):
            if thr[(scheme, label)][2]:
                print("  %s %s: %s" % (label, scheme, thr[(scheme, label)][2]))
    for scheme in ("http", "https"):
        kmv, sq, tp = thr[(scheme, "km explicit")][0], thr[(scheme, "squid")][0], thr[(scheme, "tinyproxy")][0]
        if kmv and sq and tp:
            print("%-5s km explicit / squid %.2f, / tinyproxy %.2f   (goal: km >= 0.90 of direct and ahead of both)"
                  % (scheme, kmv / sq, kmv / tp))



def report_latency(a, lat):
    print("\n== 2. small HTTPS requests, each a new connection (TCP, CONNECT, TLS 1.3 handshake, GET /), %d sequential ==" % a.requests)
    print("%-34s %10s %10s %10s" % ("path", "p50 ms", "p99 ms", "max ms"))
    for label, (t, err) in lat.items():
        if t:
            print("%-34s %10.3f %10.3f %10.3f" % (label, pct(t, 50) * 1e3, pct(t, 99) * 1e3, max(t) * 1e3))
        else:
            print("%-34s failed: %s" % (label, err))
    base, km = lat["direct (getaddrinfo each)"][0], lat["km explicit (CONNECT)"][0]
    if base and km:
        print("km added over direct (getaddrinfo each): p50 %+.3f ms, p99 %+.3f ms   (goal: p99 added < 1 ms)"
              % ((pct(km, 50) - pct(base, 50)) * 1e3, (pct(km, 99) - pct(base, 99)) * 1e3))
    base2 = lat["direct (address known)"][0]
    if base2 and km:
        print("km added over direct (address known):    p50 %+.3f ms, p99 %+.3f ms   (the enforcer resolves each CONNECT upstream)"
              % ((pct(km, 50) - pct(base2, 50)) * 1e3, (pct(km, 99) - pct(base2, 99)) * 1e3))



def report_dns(a, dns, loops):
    print("\n== 3. DNS, %d names under allowed.test (A), upstream dnsmasq in W ==" % a.names)
    print("dnsperf -l %d -q 100 (UDP):" % a.dns_seconds)
    print("%-24s %10s %10s %10s %8s %14s" % ("server", "queries/s", "avg ms", "max ms", "lost", "cpu us/query"))
    for label, (r, err) in dns.items():
        if r:
            print("%-24s %10.0f %10.3f %10.3f %8d %14s" % (label, r["qps"], r["avg"] * 1e3, r["max"] * 1e3, r["lost"],
                                                           "%.1f" % r["cpu_us"] if r["cpu_us"] is not None else "-"))
        else:
            print("%-24s failed: %s" % (label, err))
    kmq, dmq = dns["km enforcer"][0], dns["dnsmasq fwd, no cache"][0]
    if kmq and dmq:
        print("km / dnsmasq queries/s %.2f   (goal: >= 1.00)" % (kmq["qps"] / dmq["qps"]))
    print("sequential loop, %d queries one at a time (python, UDP):" % a.dns_queries)
    print("%-24s %10s %10s %10s %8s" % ("server", "p50 ms", "p99 ms", "max ms", "lost"))
    for label, (r, err) in loops.items():
        if r and r["times"]:
            t = r["times"]
            print("%-24s %10.3f %10.3f %10.3f %8d" % (label, pct(t, 50) * 1e3, pct(t, 99) * 1e3, max(t) * 1e3, r["lost"]))
        else:
            print("%-24s failed: %s" % (label, err))



def report_memory(rss):
    print("\n== 4. enforcer memory, KiB (VmRSS counts shared libraries whole; PSS shares them out;")
    print("   USS is what the enforcer alone holds: a sandbox's own cost once the libraries are mapped) ==")
    print("%-32s %8s %8s %8s" % ("", "VmRSS", "PSS", "USS"))
    for label, key in (("busy sandbox, before the runs", "before"), ("busy sandbox, after all of them", "after"),
                       ("idle sandbox", "idle")):
        m = rss[key]
        print("%-32s %8d %8d %8d" % (label, m["rss"], m["pss"], m["uss"]))
    print("per sandbox (USS of the busy enforcer after the runs): %.1f MiB   (goal: < 10 MiB)" % (rss["after"]["uss"] / 1024.0))


def tool_version(argv, pattern):
    r = run(argv, timeout=10)
    m = re.search(pattern, r.stdout)
    return m.group(1) if m else "?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run: 256 MiB, fewer requests and queries")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--dns-seconds", type=int, default=10)
    ap.add_argument("--dns-queries", type=int, default=2000)
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--sections", default="1234", help="which sections to run, e.g. 1 or 13 (default: all four)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) at the end")
    ap.add_argument("--build", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "release"),
                    help="a release build directory holding apps/km/km and apps/kmd/kmd (default: build/release)")
    a = ap.parse_args()
    benchutil.clean_up_on_signals()
    if a.quick:
        a.size_mib, a.reps, a.requests, a.dns_seconds, a.dns_queries = 256, 3, 100, 3, 500
    a.size_mib = max(1, min(a.size_mib, 8192))
    a.reps, a.requests = max(1, min(a.reps, 20)), max(1, min(a.requests, 100000))
    a.dns_seconds, a.dns_queries = max(1, min(a.dns_seconds, 300)), max(1, min(a.dns_queries, 1000000))
    a.names = max(1, min(a.names, 60000))
    if os.geteuid() != 0:
        sys.exit("bench: needs root (network namespaces; kmd creates namespaces and cgroups)")
    b = Bench(a)
    try:
        try:
            b.setup()
        except SetupError as e:
            print("bench: setup failed: %s" % e, file=sys.stderr)
            a.keep = True
            return 1
        pid = b.enforcer_pid(b.sb)
        rss = {"before": rss_kib(pid)}
        b.load = os.getloadavg()
        thr = b.throughput() if "1" in a.sections else None
        lat = b.latency() if "2" in a.sections else None
        dns, loops = b.dns() if "3" in a.sections else (None, None)
        rss["after"] = rss_kib(b.enforcer_pid(b.sb))
        rss["idle"] = rss_kib(b.enforcer_pid(b.idle)) if "4" in a.sections else None
        report(b, thr, lat, dns, loops, rss)
        return 0
    finally:
        b.teardown()


if __name__ == "__main__":
    sys.exit(main())
