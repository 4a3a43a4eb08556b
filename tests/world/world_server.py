#!/usr/bin/env python3
"""The test world's servers: one process, run inside the world network namespace.

Started by km::testing::TestWorld (tests/world/world.cc) as
    python3 -I -B world_server.py CONFIG.json
with the write end of a pipe as fd `ready_fd`. Standard library only.

Serves, from the JSON config the fixture wrote:
  * authoritative DNS (UDP and TCP 53) for the configured zones on `dns.addr`;
  * an "attacker" resolver on `attacker.addr` answering A `attacker.answer` to any name, over
    DNS (UDP/TCP 53), DoT (853) and DoH (HTTPS 443, /dns-query, GET ?dns= and POST);
  * on every host with `serve`: HTTP 80, HTTPS 443 (certificate chosen by SNI), TCP echo 7,
    TCP 22 (an SSH banner, then echo), UDP echo 7 and 443.

Every connection or query that reaches a server appends one JSON line to the hits file, before
the server sends anything back (a connection that carries no request is recorded when it ends).

Bounded everywhere: each connection has an idle timeout, a request and byte budget; the number
of concurrent connections is capped; the process exits after `max_lifetime_s`, and if its parent
(the test) dies it tears the world down itself: kills every process left in the world and kmd
namespaces, unpins them and removes the world directory.
"""

import base64
import ctypes
import json
import os
import selectors
import shutil
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

# DNS constants.
T_A, T_NS, T_CNAME, T_SOA, T_TXT, T_AAAA, T_OPT, T_ANY = 1, 2, 5, 6, 16, 28, 41, 255
TYPES = {"A": T_A, "CNAME": T_CNAME, "TXT": T_TXT, "AAAA": T_AAAA}
NOERROR, FORMERR, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 3, 4, 5
CHUNK = 1 << 20
ZEROES = memoryview(b"w" * CHUNK)


class Hits:
    """Appends one JSON line per event; a single write per line, so readers never see half."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.lock = threading.Lock()

    def record(self, server, port, proto, peer, qname="", qtype=0, host="", sni="", path=""):
        line = json.dumps({"server": server, "port": port, "proto": proto, "qname": qname,
                           "qtype": qtype, "host": host, "sni": sni, "path": path,
                           "peer": "%s:%d" % peer[:2]}) + "\n"
        with self.lock:
            os.write(self.fd, line.encode())


# ---------------------------------------------------------------------------------------------
# DNS wire format

class DnsError(Exception):
    pass


def read_name(msg, off):
    """Returns (labels as bytes, offset after the name where it was written)."""
    labels, end, hops, size = [], None, 0, 1
    while True:
        if off >= len(msg):
            raise DnsError("name runs past the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg) or hops > 16:
                raise DnsError("bad compression pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            hops += 1
            continue
        if n & 0xC0:
            raise DnsError("bad label type")
        off += 1
        if n == 0:
            break
        if off + n > len(msg):
            raise DnsError("label runs past the message")
        labels.append(bytes(msg[off:off + n]))
        off += n
        size += n + 1
        if size > 255:
            raise DnsError("name too long")
    return labels, (end if end is not None else off)


def wire_name(labels):
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\0"


def encode_name(name):
    out = bytearray()
    for label in name.strip(".").split(".") if name.strip(".") else []:
        raw = label.encode("latin-1")
        if not 0 < len(raw) < 64:
            raise DnsError("bad label in %r" % name)
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\0")


class Query:
    def __init__(self, msg):
        if len(msg) < 12:
            raise DnsError("short header")
        self.id, self.flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
        self.opcode = (self.flags >> 11) & 0xF
        self.rd = (self.flags >> 8) & 1
        self.qname, self.qtype, self.question = "", 0, b""
        self.edns_size = None
        if self.flags & 0x8000:
            raise DnsError("not a query")
        if qd != 1:
            raise DnsError("expected one question, got %d" % qd)
        labels, off = read_name(msg, 12)
        if off + 4 > len(msg):
            raise DnsError("short question")
        self.qname = ".".join(x.decode("latin-1") for x in labels)
        self.qtype, self.qclass = struct.unpack("!HH", msg[off:off + 4])
        # The question as sent (case and all), uncompressed; answers to it are owned by this name.
        self.owner = wire_name(labels)
        self.question = self.owner + msg[off:off + 4]
        off += 4
        for _ in range(an + ns + ar):
            _, off = read_name(msg, off)
            if off + 10 > len(msg):
                raise DnsError("short record")
            rtype, rclass, _, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
            off += 10 + rdlen
            if rtype == T_OPT:
                self.edns_size = rclass


def build_response(q, rcode, answers=(), authority=(), aa=True, tc=False):
    flags = 0x8000 | (q.opcode << 11) | (0x0400 if aa else 0) | (0x0200 if tc else 0) | (q.rd << 8) | rcode
    arcount = 1 if q.edns_size is not None else 0
    body = bytearray(struct.pack("!HHHHHH", q.id, flags, 1 if q.question else 0, len(answers),
                                 len(authority), arcount))
    body += q.question
    for owner, rtype, ttl, rdata in list(answers) + list(authority):
        body += (owner if isinstance(owner, bytes) else encode_name(owner)) + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    if arcount:
        body += b"\0" + struct.pack("!HHIH", T_OPT, 1232, 0, 0)
    return bytes(body)


def error_response(msg, rcode):
    """A header-only error reply to a message whose question could not be parsed."""
    if len(msg) < 12:
        return None
    qid, flags = struct.unpack("!HH", msg[:4])
    if flags & 0x8000:
        return None
    return struct.pack("!HHHHHH", qid, 0x8000 | (flags & 0x7900) | rcode, 0, 0, 0, 0)


def rdata_for(rtype, value):
    if rtype == T_A:
        return socket.inet_pton(socket.AF_INET, value)
    if rtype == T_AAAA:
        return socket.inet_pton(socket.AF_INET6, value)
    if rtype == T_CNAME:
        return encode_name(value)
    if rtype == T_TXT:
        raw = value.encode()
        parts = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
        return b"".join(bytes([len(p)]) + p for p in parts)
    raise DnsError("unsupported type")


class Authority:
    """The zone data: exact names, wildcards (*.x) and empty non-terminals, per RFC 4592."""

    def __init__(self, zones, records, negative_ttl):
        self.zones = sorted({z.lower().strip(".") for z in zones}, key=len, reverse=True)
        self.names = {}
        for r in records:
            name = r["name"].lower().strip(".")
            rtype = TYPES.get(r["type"].upper())
            if rtype is None:
                raise ValueError("record %s: unsupported type %s" % (name, r["type"]))
            if self.zone_of(name) is None:
                raise ValueError("record %s is outside the zones %s" % (name, self.zones))
            value = r["value"].lower().strip(".") if rtype == T_CNAME else r["value"]
            self.names.setdefault(name, []).append((rtype, int(r["ttl"]), rdata_for(rtype, value), value))
        for z in self.zones:
            soa = encode_name("ns." + z) + encode_name("hostmaster." + z) + struct.pack(
                "!IIIII", 1, 3600, 600, 86400, negative_ttl)
            self.names.setdefault(z, []).append((T_SOA, negative_ttl, soa, ""))
        self.soa = {z: [r for r in self.names[z] if r[0] == T_SOA][0] for z in self.zones}

    def zone_of(self, name):
        for z in self.zones:
            if name == z or name.endswith("." + z):
                return z
        return None

    def exists(self, name):
        if name in self.names:
            return True
        suffix = "." + name
        return any(n.endswith(suffix) for n in self.names)

    def rrset(self, name, zone):
        """The records at `name` (exact or by wildcard), [] for an empty non-terminal, or None."""
        if name in self.names:
            return self.names[name]
        if self.exists(name):
            return []
        # The closest encloser is the nearest existing ancestor; its wildcard child answers.
        labels = name.split(".")
        for i in range(1, len(labels)):
            ancestor = ".".join(labels[i:])
            if self.exists(ancestor):
                return self.names.get("*." + ancestor)
            if ancestor == zone:
                break
        return None

    def answer(self, q):
        name = q.qname.lower()
        if q.qclass not in (1, 255) or self.zone_of(name) is None:
            return build_response(q, REFUSED, aa=False)
        answers, owner = [], q.owner
        for _ in range(8):  # CNAME chains are followed inside our zones, a bounded number of hops
            zone = self.zone_of(name)
            if zone is None:
                break
            rrs = self.rrset(name, zone)
            if rrs is None:
                return build_response(q, NXDOMAIN, answers, [(zone, T_SOA, self.soa[zone][1], self.soa[zone][2])])
            match = [r for r in rrs if r[0] == q.qtype or q.qtype == T_ANY]
            if match:
                answers += [(owner, r[0], r[1], r[2]) for r in match]
                break
            cname = [r for r in rrs if r[0] == T_CNAME]
            if not cname or q.qtype == T_CNAME:
                return build_response(q, NOERROR, answers, [(zone, T_SOA, self.soa[zone][1], self.soa[zone][2])])
            answers.append((owner, T_CNAME, cname[0][1], cname[0][2]))
            name = owner = cname[0][3]
        return build_response(q, NOERROR, answers)


class Attacker:
    """A resolver that answers every A question with one address (and nothing else)."""

    def __init__(self, answer, ttl):
        self.rdata = socket.inet_pton(socket.AF_INET, answer)
        self.ttl = ttl

    def answer(self, q):
        answers = [(q.owner, T_A, self.ttl, self.rdata)] if q.qtype in (T_A, T_ANY) else []
        return build_response(q, NOERROR, answers, aa=False)


def dns_reply(engine, msg, limit):
    """Returns (qname, qtype, reply or None)."""
    try:
        q = Query(msg)
    except (DnsError, UnicodeError, struct.error):
        return "", 0, error_response(msg, FORMERR)
    if q.opcode != 0:
        return q.qname.lower(), q.qtype, build_response(q, NOTIMP, aa=False)
    try:
        reply = engine.answer(q)
    except DnsError:
        reply = build_response(q, FORMERR, aa=False)
    if limit is not None:
        size = max(512, min(q.edns_size or 512, 4096))
        if len(reply) > size:
            reply = build_response(q, NOERROR, tc=True)
    return q.qname.lower(), q.qtype, reply


# ---------------------------------------------------------------------------------------------
# The world

class World:
    def __init__(self, cfg):
        self.cfg = cfg
        lim = cfg["limits"]
        self.idle = float(lim["idle_timeout_s"])
        self.echo_bytes = int(lim["echo_bytes"])
        self.max_requests = int(lim["max_requests_per_connection"])
        self.max_body = int(lim["max_body_bytes"])
        self.slots = threading.BoundedSemaphore(int(lim["max_connections"]))
        self.hits = Hits(cfg["hits"])
        self.auth = Authority(cfg["dns"]["zones"], cfg["dns"]["records"], int(cfg["dns"]["negative_ttl"]))
        self.attacker = Attacker(cfg["attacker"]["answer"], int(cfg["attacker"]["ttl"]))
        self.dns_addr = cfg["dns"]["addr"]
        self.attacker_addr = cfg["attacker"]["addr"]
        self.hosts = cfg["hosts"]
        self.https_ctx = {h["addr"]: self.tls_context(h, ["http/1.1"]) for h in self.hosts if h.get("cert")}
        self.dot_ctx = {h["addr"]: self.tls_context(h, ["dot"]) for h in self.hosts if h.get("cert")}
        self.install_sni(self.https_ctx)
        self.install_sni(self.dot_ctx)

    def tls_context(self, host, alpn):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(host["cert"], host["key"])
        ctx.set_alpn_protocols(alpn)
        return ctx

    def engine(self, addr):
        return self.auth if addr == self.dns_addr else self.attacker

    @staticmethod
    def name_matches(pattern, name):
        pattern, name = pattern.lower(), name.lower()
        if pattern.startswith("*."):
            head, _, rest = name.partition(".")
            return bool(head) and rest == pattern[2:]
        return pattern == name

    def install_sni(self, contexts):
        """Each connection starts with its local host's certificate; SNI naming a name another
        host's certificate covers switches to that one (a shared front end serving many names)."""

        def on_sni(sslsock, server_name, _ctx):
            sslsock.km_sni = server_name or ""
            if not server_name:
                return None
            local = sslsock.getsockname()[0]
            order = [h for h in self.hosts if h["addr"] == local] + [h for h in self.hosts if h["addr"] != local]
            for host in order:
                if host["addr"] in contexts and any(self.name_matches(n, server_name) for n in host["names"]):
                    sslsock.context = contexts[host["addr"]]
                    break
            return None

        for ctx in contexts.values():
            ctx.sni_callback = on_sni

    def wrap_tls(self, sock, local, contexts):
        """TLS server handshake: returns (TLS socket or None if the handshake failed, SNI)."""
        tls = contexts[local].wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError):
            sni = getattr(tls, "km_sni", "")
            tls.close()
            return None, sni
        return tls, getattr(tls, "km_sni", "")

    # -- connection handlers (each runs in its own thread) -----------------------------------

    def serve_echo(self, sock, local, port, peer, banner):
        self.hits.record(local, port, "tcp", peer)
        if banner:
            sock.sendall(b"SSH-2.0-world\r\n")
        total = 0
        while total < self.echo_bytes:
            data = sock.recv(min(65536, self.echo_bytes - total))
            if not data:
                break
            sock.sendall(data)
            total += len(data)

    def serve_dns_stream(self, sock, local, port, peer, proto, sni=""):
        queries = 0
        engine = self.engine(local)
        while queries < self.max_requests:
            head = recv_exact(sock, 2)
            if head is None:
                break
            msg = recv_exact(sock, struct.unpack("!H", head)[0])
            if msg is None:
                break
            queries += 1
            qname, qtype, reply = dns_reply(engine, msg, None)
            self.hits.record(local, port, proto, peer, qname=qname, qtype=qtype, sni=sni)
            if reply is None:
                break
            sock.sendall(struct.pack("!H", len(reply)) + reply)
        if queries == 0:
            self.hits.record(local, port, proto, peer, sni=sni)

    def serve_web(self, sock, local, port, peer, tls):
        sni = ""
        if tls:
            sock, sni = self.wrap_tls(sock, local, self.https_ctx)
            if sock is None:
                self.hits.record(local, port, "https", peer, sni=sni)
                return
        conn = Conn(self, local, port, sni, "https" if tls else "http")
        try:
            WebHandler(sock, peer, conn)
        finally:
            if conn.requests == 0:
                self.hits.record(local, port, conn.proto, peer, sni=sni)
            if tls:
                sock.close()

    def serve_dot(self, sock, local, port, peer):
        tls, sni = self.wrap_tls(sock, local, self.dot_ctx)
        if tls is None:
            self.hits.record(local, port, "dot", peer, sni=sni)
            return
        try:
            self.serve_dns_stream(tls, local, port, peer, "dot", sni)
        finally:
            tls.close()

    def on_datagram(self, sock, local, port):
        try:
            data, peer = sock.recvfrom(65535)
        except OSError:
            return
        if port == 53:
            qname, qtype, reply = dns_reply(self.engine(local), data, 512)
            self.hits.record(local, port, "dns-udp", peer, qname=qname, qtype=qtype)
        else:
            self.hits.record(local, port, "udp", peer)
            reply = data
        if reply is not None:
            try:
                sock.sendto(reply, peer)
            except OSError:
                pass

    def on_accept(self, lsock, local, port, kind):
        try:
            sock, peer = lsock.accept()
        except OSError:
            return
        if not self.slots.acquire(blocking=False):
            sock.close()  # over the connection cap: refuse rather than queue without bound
            return
        threading.Thread(target=self.run_connection, args=(sock, local, port, peer, kind), daemon=True).start()

    def run_connection(self, sock, local, port, peer, kind):
        try:
            sock.settimeout(self.idle)
            if kind == "echo":
                self.serve_echo(sock, local, port, peer, banner=False)
            elif kind == "ssh":
                self.serve_echo(sock, local, port, peer, banner=True)
            elif kind == "dns":
                self.serve_dns_stream(sock, local, port, peer, "dns-tcp")
            elif kind == "dot":
                self.serve_dot(sock, local, port, peer)
            elif kind in ("http", "https"):
                self.serve_web(sock, local, port, peer, kind == "https")
        except (OSError, ValueError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
            self.slots.release()


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        data = sock.recv(n - len(buf))
        if not data:
            return None
        buf += data
    return bytes(buf)


class Conn:
    """What a web handler knows about its connection (passed as BaseHTTPRequestHandler.server)."""

    def __init__(self, world, local, port, sni, proto):
        self.world, self.local, self.port, self.sni, self.proto = world, local, port, sni, proto
        self.requests = 0


class WebHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "world"
    sys_version = ""

    def setup(self):
        self.timeout = self.server.world.idle
        super().setup()

    def log_message(self, *args):
        pass

    def handle(self):
        # As BaseHTTPRequestHandler.handle, with a bound on requests per connection.
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and self.server.requests < self.server.world.max_requests:
            self.handle_one_request()

    def read_body(self):
        limit = self.server.world.max_body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline(100).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1000) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                if len(body) + size > limit:
                    raise ValueError("body too large")
                body += self.rfile.read(size)
                self.rfile.readline(10)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > limit:
            raise ValueError("body too large")
        return self.rfile.read(length)

    def do_any(self):
        conn = self.server
        conn.requests += 1
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True
            return self.send_json(413, {"error": "bad or too large body"})
        host = self.headers.get("Host", "")
        path = self.path
        url = urlsplit(path)
        world = conn.world
        if url.path == "/dns-query" and conn.local == world.attacker_addr and conn.proto == "https":
            return self.doh(url, body, host)
        world.hits.record(conn.local, conn.port, conn.proto, self.client_address, host=host, sni=conn.sni, path=path)
        if url.path.startswith("/bytes/"):
            return self.send_bytes(url.path[len("/bytes/"):])
        status = 200
        if url.path.startswith("/status/"):
            try:
                status = int(url.path[len("/status/"):])
            except ValueError:
                status = 400
            if not 200 <= status <= 599:
                status = 400
        self.send_json(status, {"server": conn.local, "port": conn.port, "host": host, "sni": conn.sni,
                                "path": path, "method": self.command, "body_bytes": len(body)})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_any

    def send_json(self, status, obj):
        data = (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_bytes(self, count):
        try:
            n = int(count)
        except ValueError:
            n = -1
        if not 0 <= n <= 4 << 30:
            return self.send_json(400, {"error": "N must be 0..4GiB"})
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        sock = self.connection
        while n > 0:
            part = min(n, CHUNK)
            sock.sendall(ZEROES[:part])
            n -= part

    def doh(self, url, body, host):
        conn = self.server
        msg = b""
        if self.command == "GET":
            value = parse_qs(url.query).get("dns", [""])[0]
            try:
                msg = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            except ValueError:
                msg = b""
        elif self.command == "POST":
            msg = body
        qname, qtype, reply = dns_reply(conn.world.engine(conn.local), msg, None) if msg else ("", 0, None)
        conn.world.hits.record(conn.local, conn.port, "doh", self.client_address, qname=qname, qtype=qtype,
                               host=host, sni=conn.sni, path=self.path)
        if reply is None:
            return self.send_json(400, {"error": "not a DNS query"})
        self.send_response(200)
        self.send_header("Content-Type", "application/dns-message")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


# ---------------------------------------------------------------------------------------------
# Start-up, the loop, and tear-down when orphaned

def listeners(world):
    """(socket, local, port, kind) for every service: bound, listening, non-blocking."""
    out = []

    def tcp(addr, port, kind):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(512)
        s.setblocking(False)
        out.append((s, addr, port, kind))

    def udp(addr, port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, port))
        s.setblocking(False)
        out.append((s, addr, port, "udp"))

    for h in world.hosts:
        if not h.get("serve", True):
            continue
        a = h["addr"]
        tcp(a, 7, "echo")
        tcp(a, 22, "ssh")
        tcp(a, 80, "http")
        if a in world.https_ctx:
            tcp(a, 443, "https")
        udp(a, 7)
        udp(a, 443)
    for a in (world.dns_addr, world.attacker_addr):
        tcp(a, 53, "dns")
        udp(a, 53)
    if world.attacker_addr in world.dot_ctx:
        tcp(world.attacker_addr, 853, "dot")
    return out


def netns_inode(path):
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return None


def tear_down_orphaned(cfg):
    """The test died without cleaning up: do what its destructor would have done."""
    ours = {netns_inode(p) for p in cfg["netns_pins"]} - {None}
    me = os.getpid()
    for _ in range(50):
        left = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            if netns_inode("/proc/%s/ns/net" % entry) in ours:
                left += 1
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass
        if left == 0:
            break
        time.sleep(0.02)
    libc = ctypes.CDLL(None, use_errno=True)
    for pin in cfg["netns_pins"]:
        libc.umount2(pin.encode(), 2)  # MNT_DETACH
    shutil.rmtree(cfg["dir"], ignore_errors=True)


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    parent = os.getppid()
    ready_fd = int(cfg["ready_fd"])
    world = World(cfg)
    socks = listeners(world)
    sel = selectors.DefaultSelector()
    for s, addr, port, kind in socks:
        sel.register(s, selectors.EVENT_READ, (addr, port, kind))
    with open(cfg["ready_file"], "w") as f:
        f.write("%d\n" % len(socks))
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)

    deadline = time.monotonic() + float(cfg["max_lifetime_s"])
    while time.monotonic() < deadline:
        if os.getppid() != parent:
            tear_down_orphaned(cfg)
            break
        for key, _ in sel.select(timeout=0.25):
            addr, port, kind = key.data
            if kind == "udp":
                world.on_datagram(key.fileobj, addr, port)
            else:
                world.on_accept(key.fileobj, addr, port, kind)
    os._exit(0)


if __name__ == "__main__":
    main()
