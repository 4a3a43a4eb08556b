#include "km/daemon/tls_events.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

namespace km::daemon {
namespace {

using bpf::TlsDirection;
using bpf::TlsRecord;

TlsRecord record(TlsDirection dir, uint64_t bytes, bool head = false) {
  TlsRecord r;
  r.sandbox = 1;
  r.pid = 4242;
  r.comm = "curl";
  r.direction = dir;
  r.function = dir == TlsDirection::kWrite ? "SSL_write" : "SSL_read";
  r.conn = 0x55aa00;
  r.bytes = bytes;
  r.head = head;
  r.fd = 5;
  bpf::TlsEndpoint ep;
  ep.family = AF_INET;
  ep.addr = {10, 88, 0, 1};
  ep.port = 3128;
  r.remote = ep;
  r.local_port = 40123;
  return r;
}

TlsRecord request(const std::string& path) {
  TlsRecord r = record(TlsDirection::kWrite, 80, true);
  r.http.protocol = "HTTP/1.1";
  r.http.method = "GET";
  r.http.path = path;
  r.http.host = "allowed.test";
  return r;
}

TlsRecord response(int status, uint64_t bytes) {
  TlsRecord r = record(TlsDirection::kRead, bytes, true);
  r.http.protocol = "HTTP/1.1";
  r.http.status = status;
  return r;
}

TEST(TlsEvents, RequestHeadIsOneHttpEventWithWhatWasParsed) {
  TlsConnections c;
  std::vector<audit::Event> out;
  c.feed(request("/some/path?q=1"), 1000, out);
  ASSERT_EQ(out.size(), 1u);
  const audit::Event& e = out[0];
  EXPECT_EQ(e.type, "http");
  EXPECT_EQ(e.source, "tls");
  EXPECT_EQ(e.ts_ms, 1000);
  const auto& d = e.detail;
  EXPECT_EQ(d["kind"], "tls");
  EXPECT_EQ(d["method"], "GET");
  EXPECT_EQ(d["path"], "/some/path?q=1");
  EXPECT_EQ(d["host"], "allowed.test");
  EXPECT_EQ(d["protocol"], "HTTP/1.1");
  EXPECT_EQ(d["direction"], "write");
  EXPECT_EQ(d["function"], "SSL_write");
  EXPECT_EQ(d["pid"], 4242);
  EXPECT_EQ(d["comm"], "curl");
  EXPECT_EQ(d["conn"], "0x55aa00");
  EXPECT_EQ(d["bytes"], 80);
  EXPECT_EQ(d["remote"], "10.88.0.1:3128");
  EXPECT_EQ(d["sport"], 40123);
  EXPECT_FALSE(d.contains("payload"));
  EXPECT_FALSE(d.contains("status"));
}

TEST(TlsEvents, BodyChunksAreCountedNotEmittedAndTheCloseSummarises) {
  TlsConnections c;
  std::vector<audit::Event> out;
  c.feed(request("/bytes/100000"), 1000, out);
  c.feed(response(200, 16384), 1010, out);
  for (int i = 0; i < 50; ++i) c.feed(record(TlsDirection::kRead, 1000), 1020 + i, out);
  ASSERT_EQ(out.size(), 2u) << "one event per head, none per body chunk";
  EXPECT_EQ(out[1].detail["status"], 200);
  EXPECT_EQ(out[1].detail["direction"], "read");
  EXPECT_FALSE(out[1].detail.contains("method"));
  EXPECT_EQ(c.open(), 1u);

  TlsRecord close = record(TlsDirection::kWrite, 0);
  close.closed = true;
  close.function = "free";
  c.feed(close, 2000, out);
  ASSERT_EQ(out.size(), 3u);
  const auto& d = out[2].detail;
  EXPECT_EQ(out[2].type, "http");
  EXPECT_EQ(out[2].source, "tls");
  EXPECT_EQ(d["kind"], "tls-conn");
  EXPECT_EQ(d["end"], "freed");
  EXPECT_EQ(d["sent"], 80);
  EXPECT_EQ(d["received"], 16384 + 50 * 1000);
  EXPECT_EQ(d["calls"], 52);
  EXPECT_EQ(d["requests"], 1);
  EXPECT_EQ(d["responses"], 1);
  EXPECT_EQ(d["host"], "allowed.test");
  EXPECT_EQ(d["sport"], 40123);
  EXPECT_EQ(d["duration_ms"], 1000) << "from the first call to the free";
  EXPECT_EQ(c.open(), 0u);
  // A second free of the same handle (reused by a failed handshake) says nothing.
  c.feed(close, 2001, out);
  EXPECT_EQ(out.size(), 3u);
}

TEST(TlsEvents, KeepAliveGivesOneEventPerMessage) {
  TlsConnections c;
  std::vector<audit::Event> out;
  for (int i = 0; i < 3; ++i) {
    c.feed(request("/r" + std::to_string(i)), 1000 + i * 10, out);
    c.feed(response(i == 2 ? 404 : 200, 300), 1005 + i * 10, out);
  }
  ASSERT_EQ(out.size(), 6u);
  EXPECT_EQ(out[4].detail["path"], "/r2");
  EXPECT_EQ(out[5].detail["status"], 404);
}

TEST(TlsEvents, NonHttpHeadsOnlyCount) {
  TlsConnections c;
  std::vector<audit::Event> out;
  TlsRecord smtp = record(TlsDirection::kWrite, 12, true);  // a head that is not HTTP
  c.feed(smtp, 1000, out);
  c.feed(record(TlsDirection::kRead, 40, true), 1001, out);
  EXPECT_TRUE(out.empty());
  c.finish(5000, "stopped", out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].detail["end"], "stopped");
  EXPECT_EQ(out[0].detail["sent"], 12);
  EXPECT_EQ(out[0].detail["received"], 40);
  EXPECT_EQ(out[0].detail["requests"], 0);
  EXPECT_FALSE(out[0].detail.contains("protocol"));
}

TEST(TlsEvents, Http2PrefaceIsNamedOnce) {
  TlsConnections c;
  std::vector<audit::Event> out;
  TlsRecord preface = record(TlsDirection::kWrite, 100, true);
  preface.http.protocol = "h2";
  c.feed(preface, 1000, out);
  c.feed(record(TlsDirection::kRead, 50, true), 1001, out);   // frames: direction changes
  c.feed(record(TlsDirection::kWrite, 60, true), 1002, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].detail["protocol"], "h2");
}

TEST(TlsEvents, PayloadOnlyWhenTheRecordCarriesIt) {
  TlsConnections c;
  std::vector<audit::Event> out;
  TlsRecord r = request("/p");
  r.payload = "GET /p HTTP/1.1\r\nHost: allowed.test\r\n\r\n";
  c.feed(r, 1000, out);
  TlsRecord fault = response(200, 10);
  fault.payload_unreadable = true;
  c.feed(fault, 1001, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].detail["payload"], *r.payload);
  EXPECT_FALSE(out[1].detail.contains("payload"));
  EXPECT_EQ(out[1].detail["payload_unreadable"], true);
}

TEST(TlsEvents, ConnectionsAreKeptApartByProcessAndHandle) {
  TlsConnections c;
  std::vector<audit::Event> out;
  TlsRecord a = record(TlsDirection::kRead, 10);
  TlsRecord b = a;
  b.pid = 7;  // the same SSL* value in another process
  c.feed(a, 1000, out);
  c.feed(b, 1000, out);
  EXPECT_EQ(c.open(), 2u);
}

TEST(TlsEvents, IdleConnectionsAreSummarisedAndTheTableIsBounded) {
  TlsEventOptions o;
  o.idle_ms = 1000;
  o.max_connections = 2;
  TlsConnections c(o);
  std::vector<audit::Event> out;
  TlsRecord r = record(TlsDirection::kRead, 10);
  r.conn = 1;
  c.feed(r, 1000, out);
  r.conn = 2;
  c.feed(r, 1500, out);
  c.expire(2100, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].detail["end"], "idle");
  EXPECT_EQ(out[0].detail["conn"], "0x1");
  r.conn = 3;
  c.feed(r, 2200, out);
  r.conn = 4;
  c.feed(r, 2300, out);  // the table is full: the least recently active goes
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].detail["end"], "evicted");
  EXPECT_EQ(out[1].detail["conn"], "0x2");
  EXPECT_EQ(c.open(), 2u);
}

TEST(TlsEvents, SocketLearntLaterIsKept) {
  TlsConnections c;
  std::vector<audit::Event> out;
  TlsRecord first = record(TlsDirection::kWrite, 10);
  first.remote.reset();
  first.local_port = 0;
  first.fd = -1;
  c.feed(first, 1000, out);
  c.feed(record(TlsDirection::kRead, 10), 1001, out);
  TlsRecord again = record(TlsDirection::kWrite, 5);
  again.remote.reset();
  again.local_port = 0;
  c.feed(again, 1002, out);
  c.finish(1003, "stopped", out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].detail["sport"], 40123);
  EXPECT_EQ(out[0].detail["remote"], "10.88.0.1:3128");
}

}  // namespace
}  // namespace km::daemon
