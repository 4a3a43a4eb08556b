#!/usr/bin/env python3
"""Fake AI provider endpoints: Anthropic, OpenAI and Bedrock runtime, for metering tests.

One process serves HTTPS (HTTP/1.1, keep-alive, ALPN http/1.1) or plain HTTP on one address:

    python3 -I -B -S fake_ai.py --listen ADDR:PORT --cert CHAIN.pem --key KEY.pem --log LOG.jsonl
                                [--max-lifetime S] [--plain] [--usage ...] [--reply TEXT] ...

In the test world: --cert <dir>/<addr>.pem --key <dir>/leaf.key on a host with serve = false,
spawned with spawn_in_world_netns. Port 0 picks a free port. Once listening, it prints one JSON
line {"listening": "ADDR:PORT", "pid": N} on stdout (and writes it to --ready-file, atomically,
and "ready\\n" to --ready-fd, if given). Standard library only; br and zstd need Debian's
python3-brotli and python3-zstandard (found in /usr/lib/python3/dist-packages even under -S);
without them a request for those encodings gets a 400.

Endpoints, chosen by path (the Host is only logged, so one address can front every provider):
  Anthropic  POST /v1/messages[?beta=true]     stream (SSE) or the Message JSON
             POST /v1/messages/count_tokens    {"input_tokens": N}
             GET /api/hello, /v1/oauth/hello   200 (Claude Code's first-run connectivity check)
  OpenAI     POST /v1/chat/completions         stream (SSE, usage chunk if
                                               stream_options.include_usage, then [DONE]) or JSON
             POST /v1/responses                stream (SSE, usage in response.completed) or JSON
  Bedrock    POST /model/{id}/invoke           Anthropic Message JSON + x-amzn-bedrock-* headers
             POST /model/{id}/invoke-with-response-stream   AWS event stream of Anthropic events
             POST /model/{id}/converse         Converse JSON
             POST /model/{id}/converse-stream  AWS event stream of Converse events
Anything else is a 404 in the provider's error shape (logged too). The reply is always text
with stop reason end_turn / stop, also when the request offers tools, so agents finish.

Token figures. Defaults, from the request: input = len(decoded body) // 4 + 1, output = the
number of words in the reply, cache_read = cache_write = reasoning = 0. Overridden server-wide
by --usage and per request by the header
    x-fake-usage: input=N,output=N,cache_read=N,cache_write=N,reasoning=N   (any subset)
Figures are in km::meter::Usage's convention (src/km/meter/usage.h): input is uncached input
(OpenAI's prompt_tokens / input_tokens are sent as input + cache_read, cached_tokens =
cache_read), output includes reasoning (reasoning <= output is enforced by raising output),
cache_write is not sent to OpenAI clients (it has no such field) and so is logged as 0 there.

Per-request options (headers; the server-wide flag of the same name sets the default):
  x-fake-usage        as above
  x-fake-reply        the reply text (--reply)
  x-fake-encoding     identity|gzip|deflate|br|zstd: Content-Encoding of the response (a stream
                      is flushed after every event). Otherwise identity, or with
                      --compress-by-accept the best of br, zstd, gzip, deflate that
                      Accept-Encoding allows.
  x-fake-delay-ms     N ms between streamed events (--delay-ms)
  x-fake-chunks       split the reply into N text deltas (default: one per word)
  x-fake-cut-after    close the connection after N streamed events (no chunked terminator, no
                      compressor trailer; N >= the number of events sends them all, then
                      closes); on a non-streamed response, after N body bytes (if fewer than
                      the body's)
  x-fake-status       200, or 400..599: the provider's error JSON with that status (429 with
                      retry-after: 1) (--status)
  x-fake-error-message  the error's message (--error-message)
  x-fake-full-delta-usage: 1   Anthropic message_delta carries every usage field (as the API
                      does nowadays), not only output_tokens
An invalid option is a 400 whose message starts with "fake:".

The log (--log): one JSON line per request, written after everything that carries usage has
been sent and before the last byte of the response (the chunked terminator, the last body
byte, or the close of a cut stream), so once a client has a whole response, or has seen a cut
stream end, its line is there. Fields:
  ts (epoch s), seq (1, 2, ...), conn (connection number), peer, method, host, path (as sent,
  with query), provider (anthropic|openai|bedrock|unknown), endpoint (messages, count_tokens,
  chat.completions, responses, invoke, invoke-with-response-stream, converse, converse-stream,
  or ""), model (from the body; Bedrock: the URL-decoded id in the path), stream, tools,
  encoding (Content-Encoding sent, "identity" if none), status, usage (field-wise maximum of
  the figures sent, in the convention above: {input, output, cache_read, cache_write,
  reasoning}; null if no usage was sent, e.g. a stream cut before message_start, an error, an
  OpenAI stream without include_usage, count_tokens), usage_raw (every usage object sent, in
  the provider's own shape, in order), cut (the stream or body was cut on purpose), client_gone
  (a send failed), events (stream events sent; null when not streamed), count_tokens (N for
  count_tokens), user_agent, auth (x-api-key|bearer|sigv4|none; never the secret), headers
  (anthropic-version, anthropic-beta, accept, accept-encoding, content-encoding, content-type,
  x-fake-*; with --log-all-headers every header, secrets redacted), body_bytes (request body as
  received), error (why the fake refused, if it did).

Bounds: --max-lifetime (default 600 s), --idle-timeout per connection (30 s), --max-connections
(256), --max-requests in all (100000; then it drains and exits), --max-requests-per-connection
(10000), request bodies up to 64 MiB. It also exits when its parent process goes away.
"""

import argparse
import base64
import json
import os
import re
import selectors
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit


def optional_module(name):
    """Imports `name`, falling back to Debian's dist-packages (absent from sys.path under -S)."""
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

ENCODINGS = ["identity", "gzip", "deflate"] + (["br"] if brotli else []) + (["zstd"] if zstandard else [])
ACCEPT_PREFERENCE = ["br", "zstd", "gzip", "deflate"]
MAX_BODY = 64 << 20
USAGE_KEYS = ("input", "output", "cache_read", "cache_write", "reasoning")
INTERESTING_HEADERS = ("anthropic-version", "anthropic-beta", "accept", "accept-encoding", "content-encoding",
                       "content-type")
SECRET_HEADERS = ("authorization", "x-api-key", "cookie", "proxy-authorization", "x-amz-security-token",
                  "api-key", "x-goog-api-key")


class BadOption(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Encodings


class Encoder:
    """A streaming Content-Encoding: chunk() returns the compressed bytes of one event, flushed
    so the client can decode it at once; finish() the trailer."""

    def __init__(self, name):
        self.name = name
        if name == "gzip":
            self.z = zlib.compressobj(6, zlib.DEFLATED, 31)
        elif name == "deflate":
            self.z = zlib.compressobj(6, zlib.DEFLATED, 15)  # HTTP's "deflate" is the zlib format
        elif name == "br":
            self.z = brotli.Compressor()
        elif name == "zstd":
            self.z = zstandard.ZstdCompressor().compressobj()
        else:
            self.z = None

    def chunk(self, data):
        if self.name in ("gzip", "deflate"):
            return self.z.compress(data) + self.z.flush(zlib.Z_SYNC_FLUSH)
        if self.name == "br":
            return self.z.process(data) + self.z.flush()
        if self.name == "zstd":
            return self.z.compress(data) + self.z.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return data

    def finish(self):
        if self.name in ("gzip", "deflate", "zstd"):
            return self.z.flush()
        if self.name == "br":
            return self.z.finish()
        return b""

    def whole(self, data):
        return self.chunk(data) + self.finish()


def decode_request_body(data, encoding):
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding == "gzip":
        return zlib.decompress(data, 47)
    if encoding == "deflate":
        return zlib.decompress(data)
    if encoding == "br" and brotli:
        return brotli.decompress(data)
    if encoding == "zstd" and zstandard:
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    raise BadOption("fake: cannot decode a request body in Content-Encoding %r" % encoding)


def negotiate(accept):
    """The encoding --compress-by-accept picks for an Accept-Encoding value."""
    allowed = set()
    for item in accept.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        m = re.search(r"q\s*=\s*([0-9.]+)", params)
        if m:
            try:
                q = float(m.group(1))
            except ValueError:
                q = 0.0
        if q > 0:
            allowed.add(name.strip().lower())
    for name in ACCEPT_PREFERENCE:
        if name in ENCODINGS and (name in allowed or ("*" in allowed and name == "gzip")):
            return name
    return "identity"


# ---------------------------------------------------------------------------------------------
# AWS event stream (application/vnd.amazon.eventstream)


def event_stream_message(headers, payload):
    """One message: prelude (total length, headers length, CRC32 of those 8 bytes), headers
    (all strings, type 7), payload, CRC32 of everything before it."""
    hbytes = b""
    for name, value in headers:
        n, v = name.encode(), value.encode()
        hbytes += struct.pack("!B", len(n)) + n + b"\x07" + struct.pack("!H", len(v)) + v
    total = 12 + len(hbytes) + len(payload) + 4
    prelude = struct.pack("!II", total, len(hbytes))
    msg = prelude + struct.pack("!I", zlib.crc32(prelude)) + hbytes + payload
    return msg + struct.pack("!I", zlib.crc32(msg))


def padding(n):
    """Bedrock pads stream payloads ("p") to hide their length; deterministic here."""
    return "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[: 1 + n % 60]


# ---------------------------------------------------------------------------------------------
# Replies


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def sse(event, obj):
    return ("event: %s\ndata: %s\n\n" % (event, compact(obj))).encode()


def sse_data(obj):
    return ("data: %s\n\n" % (obj if isinstance(obj, str) else compact(obj))).encode()


def split_text(text, n):
    """The reply as text deltas (joined, exactly the text): one per word by default, or n
    near-equal slices (fewer if the text is shorter); none for an empty text."""
    if not text:
        return []
    if n is None:
        pieces = re.findall(r"\s*\S+", text) or [""]
        pieces[-1] += text[len("".join(pieces)):]
        return pieces
    n = min(n, len(text))
    size, extra = divmod(len(text), n)
    out, at = [], 0
    for i in range(n):
        end = at + size + (1 if i < extra else 0)
        out.append(text[at:end])
        at = end
    return out


class Part:
    """One streamed event: its bytes, and the usage figures the client has after it, if it
    carries any (normalized, and the provider's own object)."""

    def __init__(self, data, usage=None, raw=None):
        self.data, self.usage, self.raw = data, usage, raw


class Plan:
    def __init__(self, status=200, content_type="application/json", headers=None, body=None, parts=None,
                 usage=None, raw=None):
        self.status = status
        self.content_type = content_type
        self.headers = headers or []
        self.body = body  # bytes for a whole response
        self.parts = parts  # [Part] for a stream
        self.usage = usage
        self.raw = raw  # [usage objects] sent in a whole response


class Request:
    """What a provider reply is built from."""

    def __init__(self, seq, body, doc, model, usage, text, chunks, full_delta, query=None):
        self.seq, self.body, self.doc, self.model = seq, body, doc, model
        self.u = usage  # dict over USAGE_KEYS
        self.text, self.chunks, self.full_delta = text, chunks, full_delta
        self.query = query


def anthropic_usage(u, output=None):
    return {"input_tokens": u["input"], "cache_creation_input_tokens": u["cache_write"],
            "cache_read_input_tokens": u["cache_read"],
            "cache_creation": {"ephemeral_5m_input_tokens": u["cache_write"], "ephemeral_1h_input_tokens": 0},
            "output_tokens": u["output"] if output is None else output, "service_tier": "standard"}


def norm(u, **override):
    out = {k: u[k] for k in USAGE_KEYS}
    out.update(override)
    return out


def anthropic_message(r, msg_id):
    return {"id": msg_id, "type": "message", "role": "assistant", "model": r.model,
            "content": [{"type": "text", "text": r.text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": anthropic_usage(r.u)}


def anthropic_events(r, msg_id, ping=True, bedrock_metrics=None):
    """The Messages stream as (event name, object, normalized usage or None, raw usage or None)."""
    u = r.u
    start_out = min(1, u["output"])
    start_usage = anthropic_usage(u, start_out)
    start = {"type": "message_start",
             "message": {"id": msg_id, "type": "message", "role": "assistant", "model": r.model, "content": [],
                         "stop_reason": None, "stop_sequence": None, "usage": start_usage}}
    out = [("message_start", start, norm(u, output=start_out, reasoning=0), start_usage)]
    out.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}}, None, None))
    if ping:
        out.append(("ping", {"type": "ping"}, None, None))
    for piece in split_text(r.text, r.chunks):
        out.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": piece}}, None, None))
    out.append(("content_block_stop", {"type": "content_block_stop", "index": 0}, None, None))
    delta_usage = {"output_tokens": u["output"]}
    if r.full_delta:
        delta_usage = {"input_tokens": u["input"], "cache_creation_input_tokens": u["cache_write"],
                       "cache_read_input_tokens": u["cache_read"], "output_tokens": u["output"]}
    out.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": delta_usage}, norm(u, reasoning=0), delta_usage))
    stop = {"type": "message_stop"}
    if bedrock_metrics is not None:
        stop["amazon-bedrock-invocationMetrics"] = bedrock_metrics
        out.append(("message_stop", stop, norm(u, reasoning=0), bedrock_metrics))
    else:
        out.append(("message_stop", stop, None, None))
    return out


def plan_anthropic(r, endpoint, stream):
    rid = "req_fake%06d" % r.seq
    msg_id = "msg_fake%06d" % r.seq
    headers = [("request-id", rid), ("anthropic-organization-id", "00000000-0000-4000-8000-000000000000")]
    if endpoint == "count_tokens":
        return Plan(headers=headers, body=compact({"input_tokens": r.u["input"]}).encode())
    if not stream:
        msg = anthropic_message(r, msg_id)
        return Plan(headers=headers, body=compact(msg).encode(), usage=norm(r.u, reasoning=0), raw=[msg["usage"]])
    parts = [Part(sse(name, obj), usage, raw) for name, obj, usage, raw in anthropic_events(r, msg_id)]
    return Plan(content_type="text/event-stream; charset=utf-8", headers=headers + [("cache-control", "no-cache")],
                parts=parts)


def openai_chat_usage(u):
    return {"prompt_tokens": u["input"] + u["cache_read"], "completion_tokens": u["output"],
            "total_tokens": u["input"] + u["cache_read"] + u["output"],
            "prompt_tokens_details": {"cached_tokens": u["cache_read"], "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": u["reasoning"], "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def openai_responses_usage(u):
    return {"input_tokens": u["input"] + u["cache_read"], "input_tokens_details": {"cached_tokens": u["cache_read"]},
            "output_tokens": u["output"], "output_tokens_details": {"reasoning_tokens": u["reasoning"]},
            "total_tokens": u["input"] + u["cache_read"] + u["output"]}


def plan_openai(r, endpoint, stream):
    headers = [("x-request-id", "req_fake%06d" % r.seq), ("openai-processing-ms", "1")]
    u = r.u
    sent = norm(u, cache_write=0)
    created = int(time.time())
    if endpoint == "chat.completions":
        cid = "chatcmpl-fake%06d" % r.seq
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": r.model,
                "system_fingerprint": "fp_fake", "service_tier": "default"}
        if not stream:
            usage = openai_chat_usage(u)
            doc = dict(base, object="chat.completion",
                       choices=[{"index": 0, "message": {"role": "assistant", "content": r.text, "refusal": None,
                                                         "annotations": []},
                                 "logprobs": None, "finish_reason": "stop"}], usage=usage)
            return Plan(headers=headers, body=compact(doc).encode(), usage=sent, raw=[usage])
        include = bool((r.doc.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish=None):
            c = dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
            if include:
                c["usage"] = None
            return Part(sse_data(c))

        parts = [chunk({"role": "assistant", "content": "", "refusal": None})]
        parts += [chunk({"content": piece}) for piece in split_text(r.text, r.chunks)]
        parts.append(chunk({}, "stop"))
        if include:
            usage = openai_chat_usage(u)
            parts.append(Part(sse_data(dict(base, choices=[], usage=usage)), sent, usage))
        parts.append(Part(sse_data("[DONE]")))
        return Plan(content_type="text/event-stream; charset=utf-8", headers=headers, parts=parts)

    # The Responses API.
    resp_id, item_id = "resp_fake%06d" % r.seq, "msg_fake%06d" % r.seq
    usage = openai_responses_usage(u)
    part_done = {"type": "output_text", "text": r.text, "annotations": [], "logprobs": []}
    item_done = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part_done]}

    def response(status, output, usage_obj):
        return {"id": resp_id, "object": "response", "created_at": created, "status": status, "error": None,
                "incomplete_details": None, "instructions": r.doc.get("instructions"), "model": r.model,
                "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                "text": {"format": {"type": "text"}}, "usage": usage_obj}

    if not stream:
        return Plan(headers=headers, body=compact(response("completed", [item_done], usage)).encode(), usage=sent,
                    raw=[usage])
    events = [("response.created", {"response": response("in_progress", [], None)}, None),
              ("response.in_progress", {"response": response("in_progress", [], None)}, None),
              ("response.output_item.added",
               {"output_index": 0, "item": dict(item_done, status="in_progress", content=[])}, None),
              ("response.content_part.added",
               {"item_id": item_id, "output_index": 0, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}, None)]
    for piece in split_text(r.text, r.chunks):
        events.append(("response.output_text.delta", {"item_id": item_id, "output_index": 0, "content_index": 0,
                                                       "delta": piece, "logprobs": []}, None))
    events += [("response.output_text.done", {"item_id": item_id, "output_index": 0, "content_index": 0,
                                               "text": r.text, "logprobs": []}, None),
               ("response.content_part.done", {"item_id": item_id, "output_index": 0, "content_index": 0,
                                               "part": part_done}, None),
               ("response.output_item.done", {"output_index": 0, "item": item_done}, None),
               ("response.completed", {"response": response("completed", [item_done], usage)}, usage)]
    parts = []
    for i, (name, obj, usage_obj) in enumerate(events):
        doc = dict({"type": name, "sequence_number": i}, **obj)
        parts.append(Part(sse(name, doc), sent if usage_obj else None, usage_obj))
    return Plan(content_type="text/event-stream; charset=utf-8", headers=headers, parts=parts)


def bedrock_metrics(u):
    return {"inputTokenCount": u["input"], "outputTokenCount": u["output"], "invocationLatency": 42,
            "firstByteLatency": 21, "cacheReadInputTokenCount": u["cache_read"],
            "cacheWriteInputTokenCount": u["cache_write"]}


def converse_usage(u):
    return {"inputTokens": u["input"], "outputTokens": u["output"],
            "totalTokens": u["input"] + u["output"] + u["cache_read"] + u["cache_write"],
            "cacheReadInputTokens": u["cache_read"], "cacheWriteInputTokens": u["cache_write"]}


def plan_bedrock(r, endpoint):
    u = r.u
    sent = norm(u, reasoning=0)
    headers = [("x-amzn-requestid", "00000000-0000-4000-8000-%012d" % r.seq)]
    msg_id = "msg_bdrk_fake%06d" % r.seq
    stream_headers = headers + [("x-amzn-bedrock-content-type", "application/json")]

    def message(event_type, obj):
        return event_stream_message([(":event-type", event_type), (":content-type", "application/json"),
                                     (":message-type", "event")], compact(obj).encode())

    if endpoint == "invoke":
        msg = anthropic_message(r, msg_id)
        token_headers = [("x-amzn-bedrock-input-token-count", str(u["input"])),
                         ("x-amzn-bedrock-output-token-count", str(u["output"])),
                         ("x-amzn-bedrock-cache-read-input-token-count", str(u["cache_read"])),
                         ("x-amzn-bedrock-cache-write-input-token-count", str(u["cache_write"])),
                         ("x-amzn-bedrock-invocation-latency", "42")]
        header_usage = {name: value for name, value in token_headers[:4]}
        return Plan(headers=headers + token_headers, body=compact(msg).encode(), usage=sent,
                    raw=[header_usage, msg["usage"]])
    if endpoint == "invoke-with-response-stream":
        parts = []
        for i, (_, obj, usage, raw) in enumerate(anthropic_events(r, msg_id, ping=False,
                                                                  bedrock_metrics=bedrock_metrics(u))):
            payload = {"bytes": base64.b64encode(compact(obj).encode()).decode(), "p": padding(i)}
            parts.append(Part(message("chunk", payload), usage, raw))
        return Plan(content_type="application/vnd.amazon.eventstream", headers=stream_headers, parts=parts)
    usage = converse_usage(u)
    if endpoint == "converse":
        doc = {"output": {"message": {"role": "assistant", "content": [{"text": r.text}]}}, "stopReason": "end_turn",
               "usage": usage, "metrics": {"latencyMs": 42}}
        return Plan(headers=headers, body=compact(doc).encode(), usage=sent, raw=[usage])
    events = [("messageStart", {"role": "assistant"}, None)]
    for piece in split_text(r.text, r.chunks):
        events.append(("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}, None))
    events += [("contentBlockStop", {"contentBlockIndex": 0}, None),
               ("messageStop", {"stopReason": "end_turn"}, None),
               ("metadata", {"usage": usage, "metrics": {"latencyMs": 42}}, usage)]
    parts = []
    for i, (name, obj, usage_obj) in enumerate(events):
        parts.append(Part(message(name, dict(obj, p=padding(i))), sent if usage_obj else None, usage_obj))
    return Plan(content_type="application/vnd.amazon.eventstream", headers=stream_headers, parts=parts)


ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
OPENAI_ERRORS = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
                 403: ("invalid_request_error", "unsupported_country_region_territory"),
                 404: ("invalid_request_error", "model_not_found"), 429: ("requests", "rate_limit_exceeded"),
                 500: ("server_error", None), 503: ("server_error", None)}
BEDROCK_ERRORS = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
                  408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
                  500: "InternalServerException", 503: "ServiceUnavailableException"}


def plan_error(provider, status, message, seq):
    headers = [("retry-after", "1")] if status == 429 else []
    if provider == "openai":
        etype, code = OPENAI_ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        doc = {"error": {"message": message, "type": etype, "param": None, "code": code}}
        headers.append(("x-request-id", "req_fake%06d" % seq))
    elif provider == "bedrock":
        etype = BEDROCK_ERRORS.get(status, "InternalServerException" if status >= 500 else "ValidationException")
        doc = {"message": message}
        headers += [("x-amzn-requestid", "00000000-0000-4000-8000-%012d" % seq),
                    ("x-amzn-errortype", "%s:http://internal.amazon.com/coral/com.amazon.bedrock/" % etype)]
    else:
        etype = ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        doc = {"type": "error", "error": {"type": etype, "message": message}, "request_id": "req_fake%06d" % seq}
        headers.append(("request-id", "req_fake%06d" % seq))
    return Plan(status=status, headers=headers, body=compact(doc).encode())


# ---------------------------------------------------------------------------------------------
# Options


def parse_usage(text):
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in USAGE_KEYS:
            raise BadOption("fake: bad usage item %r (want input|output|cache_read|cache_write|reasoning=N)" % item)
        out[key] = parse_int(value, "usage " + key, 0, 10**12)
    return out


def parse_status(value, what):
    status = parse_int(value, what, 200, 599)
    if status != 200 and status < 400:
        raise BadOption("fake: %s must be 200 or 400..599" % what)
    return status


def parse_int(value, what, low, high):
    try:
        n = int(str(value).strip())
    except ValueError:
        raise BadOption("fake: %s must be an integer, not %r" % (what, value)) from None
    if not low <= n <= high:
        raise BadOption("fake: %s must be in [%d, %d]" % (what, low, high))
    return n


class Defaults:
    """Server-wide defaults from the command line."""

    def __init__(self, args):
        self.usage = parse_usage(args.usage) if args.usage else {}
        self.reply = args.reply
        self.status = args.status
        self.error_message = args.error_message
        self.delay_ms = args.delay_ms
        self.compress_by_accept = args.compress_by_accept


class Options:
    def __init__(self, headers, defaults):
        get = headers.get
        self.usage = dict(defaults.usage)
        if get("x-fake-usage") is not None:
            self.usage.update(parse_usage(get("x-fake-usage")))
        self.reply = get("x-fake-reply", defaults.reply)
        self.status = defaults.status
        if get("x-fake-status") is not None:
            self.status = parse_status(get("x-fake-status"), "x-fake-status")
        self.error_message = get("x-fake-error-message", defaults.error_message)
        self.delay_ms = defaults.delay_ms
        if get("x-fake-delay-ms") is not None:
            self.delay_ms = parse_int(get("x-fake-delay-ms"), "x-fake-delay-ms", 0, 60000)
        self.chunks = None
        if get("x-fake-chunks") is not None:
            self.chunks = parse_int(get("x-fake-chunks"), "x-fake-chunks", 1, 100000)
        self.cut_after = None
        if get("x-fake-cut-after") is not None:
            self.cut_after = parse_int(get("x-fake-cut-after"), "x-fake-cut-after", 0, 1 << 40)
        self.full_delta = get("x-fake-full-delta-usage", "").strip().lower() in ("1", "true", "yes")
        forced = get("x-fake-encoding")
        if forced is not None:
            forced = forced.strip().lower()
            if forced not in ENCODINGS:
                raise BadOption("fake: x-fake-encoding %r is not one of %s" % (forced, "|".join(ENCODINGS)))
            self.encoding = forced
        elif defaults.compress_by_accept:
            self.encoding = negotiate(get("accept-encoding", ""))
        else:
            self.encoding = "identity"

    def figures(self, body, text):
        u = {"input": len(body) // 4 + 1, "output": len(text.split()), "cache_read": 0, "cache_write": 0,
             "reasoning": 0}
        u.update(self.usage)
        if u["reasoning"] > u["output"]:
            u["output"] = u["reasoning"]
        return u


# ---------------------------------------------------------------------------------------------
# The server


class Log:
    """Appends one JSON line per request; a single write per line, so readers never see half."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644) if path else -1
        self.lock = threading.Lock()

    def write(self, record):
        if self.fd < 0:
            return
        line = (json.dumps(record) + "\n").encode()
        with self.lock:
            os.write(self.fd, line)


class Fake:
    def __init__(self, args):
        self.args = args
        self.defaults = Defaults(args)
        self.log = Log(args.log)
        self.lock = threading.Lock()
        self.seq = 0
        self.conns = 0
        self.active = 0
        self.slots = threading.BoundedSemaphore(args.max_connections)
        self.draining = False

    def next_seq(self):
        with self.lock:
            self.seq += 1
            if self.seq >= self.args.max_requests:
                self.draining = True
            return self.seq

    def next_conn(self):
        with self.lock:
            self.conns += 1
            self.active += 1
            return self.conns

    def conn_done(self):
        with self.lock:
            self.active -= 1


class Conn:
    """What a handler knows about its connection (passed as BaseHTTPRequestHandler.server)."""

    def __init__(self, fake, number):
        self.fake, self.number, self.requests = fake, number, 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-ai"
    sys_version = ""

    def setup(self):
        self.timeout = self.server.fake.args.idle_timeout
        super().setup()

    def log_message(self, *args):
        pass

    def handle(self):
        # As BaseHTTPRequestHandler.handle, with a bound on requests per connection.
        self.close_connection = True
        self.handle_one_request()
        limit = self.server.fake.args.max_requests_per_connection
        while not self.close_connection and self.server.requests < limit and not self.server.fake.draining:
            self.handle_one_request()

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                line = self.rfile.readline(100)
                try:
                    size = int(line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    raise BadOption("fake: bad chunk size") from None
                if size == 0:
                    while self.rfile.readline(1000) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                if len(body) + size > MAX_BODY:
                    raise BadOption("fake: request body over %d bytes" % MAX_BODY)
                body += self.rfile.read(size)
                self.rfile.readline(10)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadOption("fake: bad Content-Length") from None
        if not 0 <= length <= MAX_BODY:
            raise BadOption("fake: request body over %d bytes" % MAX_BODY)
        data = self.rfile.read(length)
        if len(data) != length:
            raise BadOption("fake: request body cut short")
        return data

    def record_base(self, seq):
        h = self.headers
        auth = "none"
        if h.get("x-api-key"):
            auth = "x-api-key"
        elif h.get("authorization", "").startswith("AWS4-"):
            auth = "sigv4"
        elif h.get("authorization", "").lower().startswith("bearer "):
            auth = "bearer"
        if self.server.fake.args.log_all_headers:
            headers = {}
            for name, value in h.items():
                key = name.lower()
                if key in SECRET_HEADERS:
                    value = "<redacted %d bytes>" % len(value)
                headers[key] = value if key not in headers else headers[key] + ", " + value
        else:
            headers = {k: h[k] for k in INTERESTING_HEADERS if h.get(k) is not None}
            headers.update({k.lower(): v for k, v in h.items() if k.lower().startswith("x-fake-")})
        return {"ts": round(time.time(), 6), "seq": seq, "conn": self.server.number,
                "peer": "%s:%d" % self.client_address[:2], "method": self.command, "host": h.get("Host", ""),
                "path": self.path, "provider": "unknown", "endpoint": "", "model": "", "stream": False,
                "tools": False, "encoding": "identity", "status": 0, "usage": None, "usage_raw": [], "cut": False,
                "client_gone": False, "events": None, "count_tokens": None, "user_agent": h.get("User-Agent", ""),
                "auth": auth, "headers": headers, "body_bytes": 0, "error": None}

    def do_any(self):
        conn = self.server
        fake = conn.fake
        conn.requests += 1
        seq = fake.next_seq()
        rec = self.record_base(seq)
        url = urlsplit(self.path)
        path = url.path
        host = self.headers.get("Host", "").lower()
        provider, endpoint, model = "unknown", "", ""
        if path.startswith("/model/") and path.count("/") >= 3:
            provider = "bedrock"
            model_part, _, op = path[len("/model/"):].rpartition("/")
            model = unquote(model_part)
            if op in ("invoke", "invoke-with-response-stream", "converse", "converse-stream"):
                endpoint = op
        elif path in ("/v1/messages", "/v1/messages/count_tokens"):
            provider, endpoint = "anthropic", "messages" if path == "/v1/messages" else "count_tokens"
        elif path in ("/v1/chat/completions", "/v1/responses"):
            provider, endpoint = "openai", "chat.completions" if path == "/v1/chat/completions" else "responses"
        elif path in ("/api/hello", "/v1/oauth/hello"):
            provider, endpoint = "anthropic", "hello"  # Claude Code's first-run connectivity check
        elif "openai" in host:
            provider = "openai"
        elif host.startswith("bedrock"):
            provider = "bedrock"
        elif "anthropic" in host:
            provider = "anthropic"
        rec.update(provider=provider, endpoint=endpoint, model=model)
        if fake.draining:
            self.close_connection = True

        try:
            raw = self.read_body()
        except BadOption as e:
            self.close_connection = True
            rec["error"] = str(e)
            return self.finish_plan(rec, plan_error(provider, 413, str(e), seq), "identity", None, 0)
        rec["body_bytes"] = len(raw)
        try:
            options = Options(self.headers, fake.defaults)
            body = decode_request_body(raw, self.headers.get("Content-Encoding", ""))
        except (BadOption, zlib.error, ValueError) as e:
            rec["error"] = str(e) if isinstance(e, BadOption) else "fake: cannot decode the request body: %s" % e
            return self.finish_plan(rec, plan_error(provider, 400, rec["error"], seq), "identity", None, 0)
        encoding = options.encoding

        if endpoint == "hello" and self.command in ("GET", "HEAD"):
            return self.finish_plan(rec, Plan(body=compact({"message": "hello"}).encode()), encoding, None, 0)
        if not endpoint or self.command != "POST":
            rec["error"] = "fake: no such endpoint"
            message = "fake: %s %s is not an endpoint of the fake" % (self.command, path)
            return self.finish_plan(rec, plan_error(provider, 404, message, seq), encoding, None, 0)
        doc = {}
        if body:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
        if not isinstance(doc, dict):
            rec["error"] = "fake: the body is not a JSON object"
            return self.finish_plan(rec, plan_error(provider, 400, rec["error"], seq), encoding, None, 0)
        if provider != "bedrock":
            model = str(doc.get("model", ""))
        stream = bool(doc.get("stream")) if provider != "bedrock" else endpoint.endswith("-stream")
        rec.update(model=model, stream=stream, tools=bool(doc.get("tools") or doc.get("toolConfig")))
        if options.status >= 400:
            message = options.error_message or "fake: status %d requested" % options.status
            return self.finish_plan(rec, plan_error(provider, options.status, message, seq), encoding, None,
                                    0)
        r = Request(seq, body, doc, model, options.figures(body, options.reply), options.reply, options.chunks,
                    options.full_delta)
        if provider == "anthropic":
            plan = plan_anthropic(r, endpoint, stream)
            if endpoint == "count_tokens":
                rec["count_tokens"] = r.u["input"]
                rec["usage_raw"] = []
        elif provider == "openai":
            plan = plan_openai(r, endpoint, stream)
        else:
            plan = plan_bedrock(r, endpoint)
        return self.finish_plan(rec, plan, encoding, options.cut_after, options.delay_ms)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_any

    def head(self, plan, encoding, extra):
        lines = ["HTTP/1.1 %d %s" % (plan.status, self.responses.get(plan.status, ("Status",))[0]),
                 "Date: " + self.date_time_string(), "Server: fake-ai", "Content-Type: " + plan.content_type]
        lines += ["%s: %s" % kv for kv in plan.headers + extra]
        if encoding != "identity":
            lines.append("Content-Encoding: " + encoding)
            lines.append("Vary: Accept-Encoding")
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def finish_plan(self, rec, plan, encoding, cut_after, delay_ms):
        rec["status"] = plan.status
        rec["encoding"] = encoding
        sock = self.connection
        try:
            if plan.parts is None:
                self.send_whole(rec, plan, encoding, cut_after, sock)
            else:
                self.send_stream(rec, plan, encoding, cut_after, delay_ms, sock)
        except (OSError, ValueError):
            self.close_connection = True
            rec["client_gone"] = True
            if not rec.get("_logged"):
                self.write_log(rec)

    def write_log(self, rec):
        rec["_logged"] = True
        self.server.fake.log.write({k: v for k, v in rec.items() if not k.startswith("_")})

    def send_whole(self, rec, plan, encoding, cut_after, sock):
        body = Encoder(encoding).whole(plan.body) if plan.body else b""
        data = self.head(plan, encoding, [("Content-Length", str(len(body)))]) + body
        if plan.usage is not None:
            rec["usage"] = plan.usage
            rec["usage_raw"] = plan.raw or []
        if cut_after is not None and cut_after < len(body):
            self.close_connection = True
            rec["cut"] = True
            rec["usage"], rec["usage_raw"] = None, []
            sock.sendall(data[:len(data) - len(body) + cut_after])
            self.write_log(rec)
            cut(sock)
            return
        if self.command == "HEAD":
            data = data[:len(data) - len(body)]
        sock.sendall(data[:-1])
        self.write_log(rec)
        sock.sendall(data[-1:])

    def send_stream(self, rec, plan, encoding, cut_after, delay_ms, sock):
        encoder = Encoder(encoding)
        sock.sendall(self.head(plan, encoding, [("Transfer-Encoding", "chunked")]))
        usage = None
        raw = []
        rec["events"] = 0
        for i, part in enumerate(plan.parts):
            if cut_after is not None and i >= cut_after:
                break
            if i and delay_ms:
                time.sleep(delay_ms / 1000.0)
            data = encoder.chunk(part.data)
            if data:  # an empty chunk would end the body
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            rec["events"] = i + 1
            if part.usage is not None:
                usage = dict(part.usage) if usage is None else {k: max(usage[k], part.usage[k]) for k in USAGE_KEYS}
                raw.append(part.raw)
                rec["usage"], rec["usage_raw"] = usage, raw
        if cut_after is not None:
            self.close_connection = True
            rec["cut"] = True
            self.write_log(rec)
            cut(sock)
            return
        tail = encoder.finish()
        if tail:
            sock.sendall(b"%x\r\n%s\r\n" % (len(tail), tail))
        self.write_log(rec)
        sock.sendall(b"0\r\n\r\n")


def cut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def run_connection(fake, ctx, sock, peer):
    number = fake.next_conn()
    try:
        sock.settimeout(fake.args.idle_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_side=True)
        Handler(sock, peer, Conn(fake, number))
    except (OSError, ValueError, ssl.SSLError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass
        fake.conn_done()
        fake.slots.release()


def parse_args(argv):
    p = argparse.ArgumentParser(description="Fake AI provider endpoints (see the module docstring).")
    p.add_argument("--listen", required=True, help="ADDR:PORT (port 0: any free port)")
    p.add_argument("--cert", help="PEM certificate chain (leaf first)")
    p.add_argument("--key", help="PEM private key")
    p.add_argument("--plain", action="store_true", help="plain HTTP instead of HTTPS (benchmarks)")
    p.add_argument("--log", help="JSONL request log (appended)")
    p.add_argument("--log-all-headers", action="store_true", help="log every request header (secrets redacted)")
    p.add_argument("--usage", default="", help="input=N,output=N,cache_read=N,cache_write=N,reasoning=N")
    p.add_argument("--reply", default="Hello from the fake provider.", help="the reply text")
    p.add_argument("--status", type=int, default=200, help="answer every request with this status")
    p.add_argument("--error-message", default="", help="the message of error replies")
    p.add_argument("--delay-ms", type=int, default=0, help="ms between streamed events")
    p.add_argument("--compress-by-accept", action="store_true", help="compress responses as Accept-Encoding allows")
    p.add_argument("--max-lifetime", type=float, default=600.0, help="exit after this many seconds")
    p.add_argument("--idle-timeout", type=float, default=30.0, help="per-connection idle timeout, seconds")
    p.add_argument("--max-connections", type=int, default=256)
    p.add_argument("--max-requests", type=int, default=100000, help="in all; then drain and exit")
    p.add_argument("--max-requests-per-connection", type=int, default=10000)
    p.add_argument("--ready-file", help="write the listening line here once listening")
    p.add_argument("--ready-fd", type=int, help="write 'ready' to this fd once listening, then close it")
    p.add_argument("--no-watch-parent", action="store_true", help="keep running if the parent process exits")
    args = p.parse_args(argv)
    if not args.plain and not (args.cert and args.key):
        p.error("--cert and --key are needed (or --plain)")
    try:
        parse_usage(args.usage)
        parse_status(args.status, "--status")
    except BadOption as e:
        p.error(str(e))
    return args


def main(argv):
    args = parse_args(argv)
    addr, _, port = args.listen.rpartition(":")
    ctx = None
    if not args.plain:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])
    fake = Fake(args)
    lsock = socket.socket(socket.AF_INET6 if ":" in addr.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((addr.strip("[]"), int(port)))
    lsock.listen(128)
    lsock.setblocking(False)
    bound = lsock.getsockname()
    line = json.dumps({"listening": "%s:%d" % (addr, bound[1]), "pid": os.getpid()}) + "\n"
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(line)
        os.rename(tmp, args.ready_file)
    sys.stdout.write(line)
    sys.stdout.flush()
    if args.ready_fd is not None:
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    parent = os.getppid()
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ)
    deadline = time.monotonic() + args.max_lifetime
    while time.monotonic() < deadline:
        if not args.no_watch_parent and os.getppid() != parent:
            break
        if fake.draining:
            with fake.lock:
                if fake.active == 0:
                    break
            time.sleep(0.05)
            continue
        for _ in sel.select(timeout=0.25):
            try:
                sock, peer = lsock.accept()
            except OSError:
                continue
            if not fake.slots.acquire(blocking=False):
                sock.close()  # over the connection cap: refuse rather than queue without bound
                continue
            threading.Thread(target=run_connection, args=(fake, ctx, sock, peer), daemon=True).start()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
