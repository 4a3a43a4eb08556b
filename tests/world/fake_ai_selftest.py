#!/usr/bin/env python3
"""Self-test of fake_ai.py: starts it on 127.0.0.1 with a throwaway self-signed certificate (made
with the openssl CLI in a temp dir), drives every endpoint and option with http.client (and curl
when present), decodes what comes back independently of the fake (SSE, AWS event stream with its
CRCs, gzip/deflate/br/zstd) and checks the JSONL log against what was received.

    python3 tests/world/fake_ai_selftest.py

Bounded: every server it starts has --max-lifetime and is killed on the way out; every socket has
a timeout; the temp dir is removed. Prints one line per check and then "N passed, N failed";
exits 1 if any check failed. br and zstd are checked when Debian's python3-brotli and
python3-zstandard are installed, and reported as skipped (with the reason) otherwise.
"""

import base64
import http.client
import json
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_ai.py")
TIMEOUT = 10


def optional_module(name):
    try:
        return __import__(name)
    except ImportError:
        pass
    debian = "/usr/lib/python3/dist-packages"
    if os.path.isdir(debian) and debian not in sys.path:
        sys.path.append(debian)
        try:
            return __import__(name)
        except ImportError:
            pass
    return None


brotli = optional_module("brotli")
zstandard = optional_module("zstandard")


class Failed(Exception):
    pass


class Skipped(Exception):
    pass


def check(cond, what, *detail):
    if not cond:
        raise Failed(what + ("" if not detail else ": " + " ".join(repr(d)[:400] for d in detail)))


def eq(got, want, what):
    check(got == want, what, "got", got, "want", want)


# ---------------------------------------------------------------------------------------------
# Decoders, written independently of the fake


def decompress(data, encoding):
    if encoding in ("", "identity", None):
        return data
    if encoding == "gzip":
        return zlib.decompress(data, 31)
    if encoding == "deflate":
        return zlib.decompress(data, 15)
    if encoding == "br":
        return brotli.Decompressor().process(data)
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise Failed("unknown encoding %r" % encoding)


class StreamDecoder:
    def __init__(self, encoding):
        self.encoding = encoding
        if encoding == "gzip":
            self.d = zlib.decompressobj(31)
        elif encoding == "deflate":
            self.d = zlib.decompressobj(15)
        elif encoding == "br":
            self.d = brotli.Decompressor()
        elif encoding == "zstd":
            self.d = zstandard.ZstdDecompressor().decompressobj()
        else:
            self.d = None

    def feed(self, data):
        if self.d is None:
            return data
        if self.encoding == "br":
            return self.d.process(data)
        return self.d.decompress(data)


def parse_sse(text):
    """[(event or None, data string)]"""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        out.append((event, "\n".join(data)))
    return out


def decode_event_stream(buf):
    """[(headers dict, payload bytes)]; checks the prelude and message CRC32s and lengths."""
    out, off = [], 0
    while off < len(buf):
        check(len(buf) - off >= 16, "event-stream message shorter than 16 bytes")
        total, hlen = struct.unpack(">II", buf[off:off + 8])
        (prelude_crc,) = struct.unpack(">I", buf[off + 8:off + 12])
        eq(zlib.crc32(buf[off:off + 8]), prelude_crc, "prelude CRC")
        check(total >= 16 + hlen and off + total <= len(buf), "event-stream lengths", total, hlen, len(buf) - off)
        msg = buf[off:off + total]
        (msg_crc,) = struct.unpack(">I", msg[-4:])
        eq(zlib.crc32(msg[:-4]), msg_crc, "message CRC")
        headers, h = {}, msg[12:12 + hlen]
        i = 0
        while i < len(h):
            n = h[i]
            name = h[i + 1:i + 1 + n].decode()
            i += 1 + n
            eq(h[i], 7, "header value type (string)")
            (vlen,) = struct.unpack(">H", h[i + 1:i + 3])
            headers[name] = h[i + 3:i + 3 + vlen].decode()
            i += 3 + vlen
        out.append((headers, msg[12 + hlen:-4]))
        off += total
    return out


# ---------------------------------------------------------------------------------------------
# The fake under test


class Server:
    def __init__(self, tmp, name, *extra):
        self.log = os.path.join(tmp, name + ".jsonl")
        self.err = open(os.path.join(tmp, name + ".err"), "wb")
        argv = [sys.executable, "-I", "-B", "-S", FAKE, "--listen", "127.0.0.1:0", "--cert",
                os.path.join(tmp, "cert.pem"), "--key", os.path.join(tmp, "key.pem"), "--log", self.log,
                "--max-lifetime", "120", "--idle-timeout", "10"] + list(extra)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, stdin=subprocess.DEVNULL)
        ready, _, _ = select.select([self.proc.stdout], [], [], TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError("fake_ai did not start: %s" % open(self.err.name).read()[-2000:])
        self.port = int(json.loads(line)["listening"].rsplit(":", 1)[1])
        self.read = 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc.stdout.close()
        self.err.close()

    def records(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f]

    def last(self):
        """The newest record; the fake writes it before a response's last byte, so no waiting."""
        recs = self.records()
        check(recs, "the log has a record")
        return recs[-1]


class Client:
    def __init__(self, server, tmp):
        ctx = ssl.create_default_context(cafile=os.path.join(tmp, "cert.pem"))
        ctx.set_alpn_protocols(["http/1.1"])
        self.conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=TIMEOUT)

    def post(self, path, doc, headers=None, raw=None, method="POST"):
        body = raw if raw is not None else json.dumps(doc).encode()
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        self.conn.request(method, path, body=body if method != "GET" else None, headers=h)
        resp = self.conn.getresponse()
        cut = False
        try:
            data = resp.read()
        except http.client.IncompleteRead as e:
            data, cut = e.partial, True
        if cut or resp.will_close:
            self.conn.close()
        return resp, data, cut, body

    def close(self):
        self.conn.close()


ANTHROPIC_BODY = {"model": "claude-test-1", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
REPLY = "Hello from the fake provider."
WORDS = len(REPLY.split())


def default_input(body):
    return len(body) // 4 + 1


def anthropic_events(data):
    events = parse_sse(data.decode())
    return [(e, json.loads(d)) for e, d in events]


def check_anthropic_stream(events, text, usage):
    names = [e for e, _ in events]
    check(names[:3] == ["message_start", "content_block_start", "ping"], "stream opening", names)
    check(names[-3:] == ["content_block_stop", "message_delta", "message_stop"], "stream ending", names)
    for e, d in events:
        eq(d["type"], e, "event name = data type")
    got = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
    eq(got, text, "streamed text")
    u = events[0][1]["message"]["usage"]
    for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"):
        check(key in u, "message_start usage has " + key, u)
    eq((u["input_tokens"], u["cache_read_input_tokens"], u["cache_creation_input_tokens"]),
       (usage["input"], usage["cache_read"], usage["cache_write"]), "message_start input figures")
    eq(events[-2][1]["usage"]["output_tokens"], usage["output"], "message_delta output_tokens")
    eq(events[-2][1]["delta"]["stop_reason"], "end_turn", "stop_reason")


def usage(input, output, cache_read=0, cache_write=0, reasoning=0):
    return {"input": input, "output": output, "cache_read": cache_read, "cache_write": cache_write,
            "reasoning": reasoning}


# ---------------------------------------------------------------------------------------------
# Checks


def t_anthropic_stream(s, c, tmp):
    resp, data, cut, body = c.post("/v1/messages", dict(ANTHROPIC_BODY, stream=True),
                                   {"anthropic-version": "2023-06-01", "Accept-Encoding": "gzip, br"})
    eq(resp.status, 200, "status")
    check(resp.getheader("Content-Type", "").startswith("text/event-stream"), "content type")
    eq(resp.getheader("Transfer-Encoding"), "chunked", "chunked")
    check(c.conn.sock.selected_alpn_protocol() == "http/1.1", "ALPN http/1.1")
    want = usage(default_input(body), WORDS)
    events = anthropic_events(data)
    check_anthropic_stream(events, REPLY, want)
    eq(len(events), 6 + WORDS, "events: start, block start, ping, one delta per word, stop, delta, stop")
    eq(events[0][1]["message"]["model"], "claude-test-1", "model echoed")
    r = s.last()
    eq((r["provider"], r["endpoint"], r["path"], r["model"], r["stream"], r["status"], r["encoding"]),
       ("anthropic", "messages", "/v1/messages", "claude-test-1", True, 200, "identity"), "log identity")
    eq(r["usage"], want, "log usage")
    eq(len(r["usage_raw"]), 2, "usage objects sent (message_start, message_delta)")
    eq(r["usage_raw"][1], {"output_tokens": WORDS}, "raw message_delta usage")
    eq((r["cut"], r["events"], r["body_bytes"]), (False, len(events), len(body)), "log cut/events/body_bytes")
    eq(r["headers"].get("anthropic-version"), "2023-06-01", "log anthropic-version")
    eq(r["headers"].get("accept-encoding"), "gzip, br", "log accept-encoding")
    eq(r["user_agent"], "", "log user_agent (http.client sends none)")
    for key in ("ts", "seq", "conn", "peer", "method", "host", "tools", "usage_raw", "client_gone", "auth",
                "count_tokens", "error"):
        check(key in r, "log has " + key)


def t_anthropic_nonstream_beta_tools(s, c, tmp):
    doc = dict(ANTHROPIC_BODY, tools=[{"name": "Bash", "input_schema": {"type": "object"}}])
    resp, data, _, _ = c.post("/v1/messages?beta=true", doc,
                              {"x-fake-usage": "input=1200,output=34,cache_read=500,cache_write=70",
                               "x-api-key": "sk-ant-secret"})
    eq(resp.status, 200, "status")
    msg = json.loads(data)
    eq((msg["type"], msg["role"], msg["stop_reason"], msg["model"]), ("message", "assistant", "end_turn",
                                                                      "claude-test-1"), "message fields")
    eq(msg["content"], [{"type": "text", "text": REPLY}], "text content even with tools")
    u = msg["usage"]
    eq((u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"], u["cache_creation_input_tokens"]),
       (1200, 34, 500, 70), "usage from x-fake-usage")
    r = s.last()
    eq((r["path"], r["tools"], r["stream"], r["auth"]), ("/v1/messages?beta=true", True, False, "x-api-key"),
       "log path/tools/stream/auth")
    eq(r["usage"], usage(1200, 34, 500, 70), "log usage")
    check("sk-ant-secret" not in open(s.log).read(), "the API key never reaches the log")


def t_anthropic_full_delta(s, c, tmp):
    _, data, _, _ = c.post("/v1/messages", dict(ANTHROPIC_BODY, stream=True),
                           {"x-fake-full-delta-usage": "1", "x-fake-usage": "input=10,output=2,cache_read=3"})
    events = anthropic_events(data)
    eq(events[-2][1]["usage"], {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3,
                                "output_tokens": 2}, "message_delta carries every field")
    eq(s.last()["usage"], usage(10, 2, 3), "log usage")


def t_count_tokens(s, c, tmp):
    resp, data, _, body = c.post("/v1/messages/count_tokens", ANTHROPIC_BODY)
    eq(resp.status, 200, "status")
    eq(json.loads(data), {"input_tokens": default_input(body)}, "count")
    r = s.last()
    eq((r["endpoint"], r["count_tokens"], r["usage"]), ("count_tokens", default_input(body), None),
       "log: counted, not billed")


def t_hello(s, c, tmp):
    resp, data, _, _ = c.post("/api/hello", None, raw=b"", method="GET")
    eq(resp.status, 200, "GET /api/hello")
    eq(s.last()["endpoint"], "hello", "log endpoint")


def encodings():
    out = ["gzip", "deflate"]
    out += ["br"] if brotli else []
    out += ["zstd"] if zstandard else []
    return out


def t_encodings(s, c, tmp):
    for enc in encodings():
        resp, data, _, body = c.post("/v1/messages", dict(ANTHROPIC_BODY, stream=True), {"x-fake-encoding": enc})
        eq(resp.getheader("Content-Encoding"), enc, enc + " Content-Encoding")
        check_anthropic_stream(anthropic_events(decompress(data, enc)), REPLY, usage(default_input(body), WORDS))
        eq(s.last()["encoding"], enc, enc + " logged")
        resp, data, _, _ = c.post("/v1/chat/completions", {"model": "gpt-test"}, {"x-fake-encoding": enc})
        eq(json.loads(decompress(data, enc))["choices"][0]["message"]["content"], REPLY, enc + " whole body")
    missing = [n for n, m in (("br", brotli), ("zstd", zstandard)) if not m]
    if missing:
        raise Skipped("checked %s; %s need python3-brotli / python3-zstandard" % (", ".join(encodings()),
                                                                                   ", ".join(missing)))


def t_encoded_events_flushed(s, c, tmp):
    """Each event is decodable as it arrives: the fake flushes the compressor after every event."""
    for enc in encodings():
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT)
        ctx = ssl.create_default_context(cafile=os.path.join(tmp, "cert.pem"))
        tls = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
        body = json.dumps(dict(ANTHROPIC_BODY, stream=True)).encode()
        tls.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nx-fake-encoding: %s\r\n"
                    b"x-fake-delay-ms: 300\r\nConnection: close\r\n\r\n%s" % (len(body), enc.encode(), body))
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += tls.recv(65536)
        rest = buf.split(b"\r\n\r\n", 1)[1]
        # Read until the first chunk is whole (the server then waits 300 ms before the next).
        while b"\r\n" not in rest or len(rest) < int(rest.split(b"\r\n", 1)[0], 16) + len(rest.split(b"\r\n", 1)[0]) + 4:
            rest += tls.recv(65536)
        size_line, rest = rest.split(b"\r\n", 1)
        first = rest[:int(size_line, 16)]
        text = StreamDecoder(enc).feed(first).decode()
        check(text.startswith("event: message_start\n") and text.endswith("\n\n"),
              enc + ": the first chunk decodes to the whole first event", text[:80])
        tls.close()


def t_compress_by_accept(s2, c2, tmp):
    cases = [("gzip, br, zstd", "br" if brotli else ("zstd" if zstandard else "gzip")),
             ("gzip;q=1, deflate", "gzip"), ("deflate", "deflate"), ("identity", "identity"), ("", "identity"),
             ("br;q=0, gzip", "gzip")]
    for accept, want in cases:
        headers = {"Accept-Encoding": accept} if accept else {"Accept-Encoding": ""}
        resp, data, _, _ = c2.post("/v1/messages", dict(ANTHROPIC_BODY, stream=True), headers)
        eq(resp.getheader("Content-Encoding") or "identity", want, "Accept-Encoding %r" % accept)
        check_anthropic_stream(anthropic_events(decompress(data, want)), "one two three", usage(7, 3))
    resp, data, _, _ = c2.post("/v1/messages", ANTHROPIC_BODY, {"Accept-Encoding": "gzip",
                                                                "x-fake-encoding": "identity",
                                                                "x-fake-usage": "output=9"})
    eq(resp.getheader("Content-Encoding"), None, "x-fake-encoding overrides Accept-Encoding")
    eq(json.loads(data)["usage"]["output_tokens"], 9, "per-request usage over --usage")
    eq(json.loads(data)["usage"]["input_tokens"], 7, "--usage where the header says nothing")
    eq(s2.last()["usage"], usage(7, 9), "log usage")


def t_cut_after(s, c, tmp):
    resp, data, cut, body = c.post("/v1/messages", dict(ANTHROPIC_BODY, stream=True), {"x-fake-cut-after": "3"})
    check(cut, "the client saw the stream end early")
    names = [e for e, _ in anthropic_events(data)]
    eq(names, ["message_start", "content_block_start", "ping"], "events before the cut")
    r = s.last()
    eq((r["cut"], r["events"]), (True, 3), "log cut")
    eq(r["usage"], usage(default_input(body), 1), "usage as sent before the cut (message_start)")
    c.post("/v1/messages", dict(ANTHROPIC_BODY, stream=True), {"x-fake-cut-after": "0"})
    eq((s.last()["usage"], s.last()["events"]), (None, 0), "cut before any event: no usage sent")
    resp, data, cut, _ = c.post("/v1/messages", ANTHROPIC_BODY, {"x-fake-cut-after": "10"})
    check(cut and len(data) == 10, "whole body cut after 10 bytes", len(data))
    eq((s.last()["cut"], s.last()["usage"]), (True, None), "log of a cut body")
    # Bedrock: the invocation metrics travel in the last chunk; cut before it.
    resp, data, cut, body = c.post("/model/anthropic.claude-test/invoke-with-response-stream",
                                   {"anthropic_version": "bedrock-2023-05-31"}, {"x-fake-cut-after": "6"})
    check(cut, "bedrock stream cut")
    eq(len(s.last()["usage_raw"]), 1, "bedrock: only message_start usage was sent")


def t_chunks(s, c, tmp):
    for n, want in ((3, 3), (1, 1), (1000, len(REPLY))):
        _, data, _, _ = c.post("/v1/messages", dict(ANTHROPIC_BODY, stream=True), {"x-fake-chunks": str(n)})
        deltas = [d["delta"]["text"] for e, d in anthropic_events(data) if e == "content_block_delta"]
        eq(len(deltas), want, "x-fake-chunks %d" % n)
        eq("".join(deltas), REPLY, "x-fake-chunks %d text" % n)
    _, data, _, _ = c.post("/v1/chat/completions", {"model": "m", "stream": True}, {"x-fake-chunks": "2"})
    eq(len([1 for e, d in parse_sse(data.decode()) if d != "[DONE]" and json.loads(d)["choices"]
            and json.loads(d)["choices"][0]["delta"].get("content")]), 2, "openai chunks")


def t_delay(s, c, tmp):
    start = time.monotonic()
    _, data, _, _ = c.post("/v1/messages", dict(ANTHROPIC_BODY, stream=True),
                           {"x-fake-delay-ms": "40", "x-fake-chunks": "1"})
    elapsed = time.monotonic() - start
    n = len(anthropic_events(data))
    check(elapsed >= (n - 1) * 0.040, "x-fake-delay-ms 40 between %d events" % n, elapsed)


def t_status(s, c, tmp):
    resp, data, _, _ = c.post("/v1/messages", dict(ANTHROPIC_BODY, stream=True), {"x-fake-status": "429"})
    eq(resp.status, 429, "anthropic 429")
    eq(json.loads(data)["error"]["type"], "rate_limit_error", "anthropic error type")
    eq(resp.getheader("retry-after"), "1", "retry-after")
    eq((s.last()["status"], s.last()["usage"]), (429, None), "log 429")
    resp, data, _, _ = c.post("/v1/messages", ANTHROPIC_BODY,
                              {"x-fake-status": "403", "x-fake-error-message": "km: AI budget exhausted"})
    eq(json.loads(data)["error"], {"type": "permission_error", "message": "km: AI budget exhausted"}, "403 body")
    resp, data, _, _ = c.post("/v1/chat/completions", {"model": "m"}, {"x-fake-status": "500"})
    eq((resp.status, json.loads(data)["error"]["type"]), (500, "server_error"), "openai 500")
    resp, data, _, _ = c.post("/model/m/converse", {}, {"x-fake-status": "429"})
    eq(resp.status, 429, "bedrock 429")
    check(resp.getheader("x-amzn-ErrorType", "").startswith("ThrottlingException"), "bedrock error type")
    check("message" in json.loads(data), "bedrock error body")


def t_openai_chat(s, c, tmp):
    doc = {"model": "gpt-test", "stream": True, "stream_options": {"include_usage": True},
           "messages": [{"role": "user", "content": "hi"}]}
    hdr = {"x-fake-usage": "input=100,output=40,cache_read=60,reasoning=15", "Authorization": "Bearer sk-secret"}
    resp, data, _, _ = c.post("/v1/chat/completions", doc, hdr)
    events = parse_sse(data.decode())
    eq(events[-1][1], "[DONE]", "ends with [DONE]")
    chunks = [json.loads(d) for _, d in events[:-1]]
    check(all("usage" in ch for ch in chunks), "every chunk has usage (null) with include_usage")
    final = chunks[-1]
    eq(final["choices"], [], "usage chunk has no choices")
    u = final["usage"]
    eq((u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]), (160, 40, 200), "prompt includes cached")
    eq(u["prompt_tokens_details"]["cached_tokens"], 60, "cached_tokens")
    eq(u["completion_tokens_details"]["reasoning_tokens"], 15, "reasoning_tokens")
    eq("".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"]), REPLY, "text")
    eq(chunks[-2]["choices"][0]["finish_reason"], "stop", "finish_reason")
    r = s.last()
    eq((r["provider"], r["endpoint"], r["model"], r["auth"]), ("openai", "chat.completions", "gpt-test", "bearer"),
       "log")
    eq(r["usage"], usage(100, 40, 60, 0, 15), "log usage (input uncached)")
    doc.pop("stream_options")
    _, data, _, _ = c.post("/v1/chat/completions", doc)
    chunks = [json.loads(d) for _, d in parse_sse(data.decode()) if d != "[DONE]"]
    check(all("usage" not in ch for ch in chunks), "no usage without include_usage")
    eq((s.last()["usage"], s.last()["usage_raw"]), (None, []), "log: no usage sent")
    _, data, _, body = c.post("/v1/chat/completions", {"model": "gpt-test", "messages": []})
    full = json.loads(data)
    eq(full["object"], "chat.completion", "non-stream object")
    eq(full["usage"]["completion_tokens"], WORDS, "default output = words")
    eq(full["usage"]["prompt_tokens"], default_input(body), "default input")
    eq(s.last()["usage"], usage(default_input(body), WORDS), "log usage")


def t_openai_responses(s, c, tmp):
    hdr = {"x-fake-usage": "input=11,output=22,cache_read=5,reasoning=2"}
    _, data, _, _ = c.post("/v1/responses", {"model": "gpt-r", "stream": True, "input": "hi"}, hdr)
    events = [(e, json.loads(d)) for e, d in parse_sse(data.decode())]
    names = [e for e, _ in events]
    eq(names[0], "response.created", "first event")
    eq(names[-1], "response.completed", "last event")
    eq([d["sequence_number"] for _, d in events], list(range(len(events))), "sequence numbers")
    eq("".join(d["delta"] for e, d in events if e == "response.output_text.delta"), REPLY, "text")
    u = events[-1][1]["response"]["usage"]
    eq((u["input_tokens"], u["input_tokens_details"]["cached_tokens"], u["output_tokens"],
        u["output_tokens_details"]["reasoning_tokens"], u["total_tokens"]), (16, 5, 22, 2, 38), "usage")
    eq(s.last()["usage"], usage(11, 22, 5, 0, 2), "log usage")
    _, data, _, _ = c.post("/v1/responses", {"model": "gpt-r", "input": "hi"}, hdr)
    doc = json.loads(data)
    eq((doc["object"], doc["status"], doc["output"][0]["content"][0]["text"]), ("response", "completed", REPLY),
       "non-stream response")
    eq(doc["usage"]["input_tokens"], 16, "non-stream usage")


BEDROCK_HOST = "bedrock-runtime.us-east-1.amazonaws.com"
BEDROCK_MODEL = "us.anthropic.claude-test-v1:0"
BEDROCK_PATH = "/model/us.anthropic.claude-test-v1%3A0/"


def t_bedrock_invoke(s, c, tmp):
    hdr = {"Host": BEDROCK_HOST, "x-fake-usage": "input=300,output=12,cache_read=40,cache_write=8",
           "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request"}
    resp, data, _, _ = c.post(BEDROCK_PATH + "invoke", {"anthropic_version": "bedrock-2023-05-31",
                                                        "max_tokens": 10, "messages": []}, hdr)
    eq(resp.status, 200, "status")
    eq((resp.getheader("x-amzn-bedrock-input-token-count"), resp.getheader("x-amzn-bedrock-output-token-count")),
       ("300", "12"), "token count headers")
    msg = json.loads(data)
    eq((msg["usage"]["input_tokens"], msg["usage"]["output_tokens"]), (300, 12), "body usage")
    r = s.last()
    eq((r["provider"], r["endpoint"], r["model"], r["host"], r["auth"]),
       ("bedrock", "invoke", BEDROCK_MODEL, BEDROCK_HOST, "sigv4"), "log")
    eq(r["usage"], usage(300, 12, 40, 8), "log usage")


def t_bedrock_invoke_stream(s, c, tmp):
    hdr = {"Host": BEDROCK_HOST, "x-fake-usage": "input=300,output=12,cache_read=40,cache_write=8"}
    resp, data, _, _ = c.post(BEDROCK_PATH + "invoke-with-response-stream",
                              {"anthropic_version": "bedrock-2023-05-31", "messages": []}, hdr)
    eq(resp.getheader("Content-Type"), "application/vnd.amazon.eventstream", "content type")
    msgs = decode_event_stream(data)
    events = []
    for headers, payload in msgs:
        eq(headers, {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
           "headers")
        doc = json.loads(payload)
        check(set(doc) <= {"bytes", "p"}, "payload keys", doc)
        events.append(json.loads(base64.b64decode(doc["bytes"])))
    eq([e["type"] for e in events][:2], ["message_start", "content_block_start"], "anthropic events inside")
    eq(events[-1]["type"], "message_stop", "last event")
    m = events[-1]["amazon-bedrock-invocationMetrics"]
    eq((m["inputTokenCount"], m["outputTokenCount"], m["cacheReadInputTokenCount"], m["cacheWriteInputTokenCount"]),
       (300, 12, 40, 8), "invocation metrics")
    eq("".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta"), REPLY, "text")
    r = s.last()
    eq((r["endpoint"], r["stream"], r["usage"]), ("invoke-with-response-stream", True, usage(300, 12, 40, 8)), "log")
    eq(r["usage_raw"][-1], m, "log: the metrics were the last usage sent")


def t_bedrock_converse(s, c, tmp):
    hdr = {"Host": BEDROCK_HOST, "x-fake-usage": "input=50,output=6,cache_read=4,cache_write=2"}
    _, data, _, _ = c.post(BEDROCK_PATH + "converse", {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
                           hdr)
    doc = json.loads(data)
    eq(doc["output"]["message"]["content"], [{"text": REPLY}], "converse text")
    eq(doc["usage"], {"inputTokens": 50, "outputTokens": 6, "totalTokens": 62, "cacheReadInputTokens": 4,
                      "cacheWriteInputTokens": 2}, "converse usage")
    _, data, _, _ = c.post(BEDROCK_PATH + "converse-stream", {"messages": []}, hdr)
    msgs = decode_event_stream(data)
    types = [h[":event-type"] for h, _ in msgs]
    eq(types[0], "messageStart", "first")
    eq(types[-3:], ["contentBlockStop", "messageStop", "metadata"], "last three")
    check(all(h[":message-type"] == "event" and h[":content-type"] == "application/json" for h, _ in msgs),
          "headers")
    docs = [json.loads(p) for _, p in msgs]
    eq("".join(d["delta"]["text"] for t, d in zip(types, docs) if t == "contentBlockDelta"), REPLY, "text")
    eq(docs[-1]["usage"]["cacheWriteInputTokens"], 2, "metadata usage")
    eq(s.last()["usage"], usage(50, 6, 4, 2), "log usage")


def t_errors_logged(s, c, tmp):
    resp, data, _, _ = c.post("/v1/nothing", {})
    eq(resp.status, 404, "unknown path")
    eq(s.last()["status"], 404, "404 logged")
    resp, _, _, _ = c.post("/v1/messages", None, raw=b"", method="GET")
    eq(resp.status, 404, "GET /v1/messages")
    resp, data, _, _ = c.post("/v1/messages", ANTHROPIC_BODY, {"x-fake-usage": "input=abc"})
    eq(resp.status, 400, "bad x-fake-usage")
    check(json.loads(data)["error"]["message"].startswith("fake:"), "fake: message")
    resp, data, _, _ = c.post("/v1/messages", None, raw=b"{not json")
    eq(resp.status, 400, "bad JSON")
    resp, data, _, _ = c.post("/v1/messages", ANTHROPIC_BODY, {"x-fake-encoding": "lzma"})
    eq(resp.status, 400, "unknown encoding")
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    raw = gz.compress(json.dumps(dict(ANTHROPIC_BODY, model="gz-model")).encode()) + gz.flush()
    resp, data, _, _ = c.post("/v1/messages", None, {"Content-Encoding": "gzip"}, raw=raw)
    eq(json.loads(data)["model"], "gz-model", "gzip request body decoded")


def t_keep_alive(s, c, tmp):
    c2 = Client(s, tmp)
    for _ in range(3):
        c2.post("/v1/messages", dict(ANTHROPIC_BODY, stream=True))
        c2.post("/v1/messages", ANTHROPIC_BODY)
    c2.close()
    recs = s.records()[-6:]
    eq(len({r["conn"] for r in recs}), 1, "six requests on one connection")


def t_curl(s, c, tmp):
    curl = shutil.which("curl")
    if not curl:
        raise Skipped("curl is not installed")
    cmd = [curl, "-sS", "-v", "--max-time", "10", "--cacert", os.path.join(tmp, "cert.pem"), "--compressed",
           "-H", "content-type: application/json", "-H", "x-fake-encoding: gzip",
           "--data", json.dumps(dict(ANTHROPIC_BODY, stream=True)),
           "https://localhost:%d/v1/messages?beta=true" % s.port]
    p = subprocess.run(cmd, capture_output=True, timeout=20)
    check(p.returncode == 0, "curl exit", p.returncode, p.stderr.decode()[-500:])
    err = p.stderr.decode()
    check("ALPN: server accepted http/1.1" in err or "ALPN, server accepted to use http/1.1" in err,
          "curl negotiated http/1.1", err[-800:])
    names = [e for e, _ in parse_sse(p.stdout.decode())]
    eq(names[-1], "message_stop", "curl got the whole stream")
    eq(s.last()["user_agent"].split("/")[0], "curl", "log user agent")


def t_log_whole(s, c, tmp):
    recs = s.records()
    eq([r["seq"] for r in recs], sorted(r["seq"] for r in recs), "seq in order")
    eq(len({r["seq"] for r in recs}), len(recs), "one line per request")
    keys = set(recs[0])
    check(all(set(r) == keys for r in recs), "every line has the same fields")


def t_bounds(tmp):
    s = Server(tmp, "short", "--max-lifetime", "1")
    try:
        s.proc.wait(8)
    except subprocess.TimeoutExpired:
        raise Failed("--max-lifetime 1 did not end the server")
    finally:
        s.stop()
    s = Server(tmp, "few", "--max-requests", "2")
    try:
        c = Client(s, tmp)
        c.post("/v1/messages", ANTHROPIC_BODY)
        resp, _, _, _ = c.post("/v1/messages", ANTHROPIC_BODY)
        eq(resp.getheader("Connection"), "close", "the last request is answered with Connection: close")
        c.close()
        try:
            s.proc.wait(8)
        except subprocess.TimeoutExpired:
            raise Failed("--max-requests 2 did not end the server")
    finally:
        s.stop()


def make_cert(tmp):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", os.path.join(tmp, "key.pem"), "-out", os.path.join(tmp, "cert.pem"), "-days", "1",
                    "-subj", "/CN=fake-ai-selftest", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:api.anthropic.com,DNS:api.openai.com,DNS:"
                    + BEDROCK_HOST], check=True, capture_output=True, timeout=30)


def main():
    tmp = tempfile.mkdtemp(prefix="fake-ai-selftest-")
    passed = failed = skipped = 0
    servers = []
    try:
        make_cert(tmp)
        s = Server(tmp, "main")
        servers.append(s)
        s2 = Server(tmp, "accept", "--compress-by-accept", "--usage", "input=7,output=3", "--reply", "one two three")
        servers.append(s2)
        c, c2 = Client(s, tmp), Client(s2, tmp)
        checks = [(t, s, c) for t in (t_anthropic_stream, t_anthropic_nonstream_beta_tools, t_anthropic_full_delta,
                                      t_count_tokens, t_hello, t_encodings, t_encoded_events_flushed, t_cut_after,
                                      t_chunks, t_delay, t_status, t_openai_chat, t_openai_responses,
                                      t_bedrock_invoke, t_bedrock_invoke_stream, t_bedrock_converse,
                                      t_errors_logged, t_keep_alive, t_curl)]
        checks.append((t_compress_by_accept, s2, c2))
        checks.append((t_log_whole, s, c))
        checks.append((lambda *_: t_bounds(tmp), None, None))
        for fn, server, client in checks:
            name = getattr(fn, "__name__", "t_bounds").replace("<lambda>", "t_bounds")[2:]
            try:
                fn(server, client, tmp)
                print("ok    %s" % name)
                passed += 1
            except Skipped as e:
                print("ok    %s (partly skipped: %s)" % (name, e))
                passed += 1
                skipped += 1
            except Exception as e:  # a failed check, or the fake misbehaving in a way we did not foresee
                print("FAIL  %s: %s: %s" % (name, type(e).__name__, e))
                failed += 1
                if client is not None:
                    client.close()
    finally:
        for srv in servers:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
