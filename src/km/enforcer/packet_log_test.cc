#include "km/enforcer/packet_log.h"

#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <sstream>
#include <vector>

namespace km::enforcer {
namespace {

// One NFULNL_MSG_PACKET message carrying `payload` (an IP packet's first bytes).
std::vector<uint8_t> nflog_message(const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> m(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg)) + NLA_HDRLEN + NLA_ALIGN(payload.size()));
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(m.size());
  h.nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET;
  std::memcpy(m.data(), &h, sizeof h);
  size_t a = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
  nlattr attr{static_cast<uint16_t>(NLA_HDRLEN + payload.size()), NFULA_PAYLOAD};
  std::memcpy(m.data() + a, &attr, sizeof attr);
  std::memcpy(m.data() + a + NLA_HDRLEN, payload.data(), payload.size());
  return m;
}

std::vector<uint8_t> ipv4(uint8_t proto, std::array<uint8_t, 4> dst, uint16_t dport) {
  std::vector<uint8_t> p(28, 0);
  p[0] = 0x45;
  p[9] = proto;
  std::copy(dst.begin(), dst.end(), p.begin() + 16);
  p[22] = static_cast<uint8_t>(dport >> 8);
  p[23] = static_cast<uint8_t>(dport);
  return p;
}

TEST(PacketLog, ParsesDroppedPackets) {
  auto a = nflog_message(ipv4(17, {203, 0, 113, 10}, 443));
  auto b = nflog_message(ipv4(1, {198, 51, 100, 10}, 0));
  a.insert(a.end(), b.begin(), b.end());
  auto pkts = parse_nflog(a);
  ASSERT_EQ(pkts.size(), 2u);
  EXPECT_EQ(pkts[0].proto, "udp");
  EXPECT_EQ(pkts[0].addr, "203.0.113.10");
  EXPECT_EQ(pkts[0].port, 443);
  EXPECT_EQ(pkts[1].proto, "icmp");
  EXPECT_EQ(pkts[1].port, 0);
}

TEST(PacketLog, MalformedInputIsSkipped) {
  auto m = nflog_message(ipv4(17, {203, 0, 113, 10}, 443));
  for (size_t cut = 0; cut < m.size(); ++cut) {
    auto pkts = parse_nflog(std::span<const uint8_t>(m.data(), cut));
    EXPECT_TRUE(pkts.empty()) << cut;
  }
  auto short_ip = nflog_message({0x45, 0, 0});
  EXPECT_TRUE(parse_nflog(short_ip).empty());
  auto v6 = nflog_message(std::vector<uint8_t>(40, 0x60));
  EXPECT_TRUE(parse_nflog(v6).empty());
  std::vector<uint8_t> garbage(100, 0xff);
  EXPECT_TRUE(parse_nflog(garbage).empty());
}

}  // namespace
}  // namespace km::enforcer

#include "km/enforcer/audit.h"

#include <unistd.h>

namespace km::enforcer {
namespace {

TEST(AuditLog, OneJsonObjectPerLineWithTheCommonFieldsFirst) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  AuditLog log("sb-1a2b3c4d", p[1]);
  log.emit("dns", {{"name", "x.test"}, {"verdict", "deny"}, {"kind", "ignored"}, {"reason", "a \"quoted\"\nline"}});
  log.emit("connect", {{"port", 443}});
  ::close(p[1]);
  std::string out(4096, '\0');
  out.resize(static_cast<size_t>(::read(p[0], out.data(), out.size())));
  ::close(p[0]);
  auto nl = out.find('\n');
  ASSERT_NE(nl, std::string::npos);
  auto first = nlohmann::json::parse(out.substr(0, nl));
  EXPECT_EQ(first["sandbox"], "sb-1a2b3c4d");
  EXPECT_EQ(first["kind"], "dns");
  EXPECT_EQ(first["reason"], "a \"quoted\"\nline");
  EXPECT_EQ(out.substr(0, 6), "{\"ts\":");
  auto second = nlohmann::json::parse(out.substr(nl + 1, out.size() - nl - 2));
  EXPECT_EQ(second["port"], 443);
  EXPECT_EQ(log.events(), 2u);
  EXPECT_EQ(log.write_errors(), 0u);
}

}  // namespace
}  // namespace km::enforcer

namespace km::enforcer {
namespace {

TEST(AuditLog, DeferredLinesAreWrittenTogetherAfterTheBatch) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  std::vector<std::function<void()>> posted;
  {
    AuditLog log("sb-1", p[1]);
    log.set_deferred([&](std::function<void()> f) { posted.push_back(std::move(f)); });
    log.emit("dns", {{"n", 1}});
    log.emit("dns", {{"n", 2}});
    EXPECT_EQ(posted.size(), 1u);  // one flush for the batch
    for (auto& f : posted) f();
    log.emit("dns", {{"n", 3}});  // flushed by the destructor
  }
  ::close(p[1]);
  std::string out(4096, '\0');
  out.resize(static_cast<size_t>(::read(p[0], out.data(), out.size())));
  ::close(p[0]);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 3);
  EXPECT_NE(out.find("\"n\":3"), std::string::npos);
}

}  // namespace
}  // namespace km::enforcer

namespace km::enforcer {
namespace {

TEST(AuditLog, FloodsAreCountedNotWritten) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  AuditLog log("sb-1", p[1]);
  log.set_rate_limit(10);  // bursts of 100
  for (int i = 0; i < 1000; ++i) log.emit("dns", {{"n", i}});
  log.emit("connect", {{"n", 0}});  // other kinds have their own budget
  EXPECT_GE(log.suppressed(), 890u);
  EXPECT_LE(log.events(), 110u);
  ::close(p[1]);
  std::string out(1 << 20, '\0');
  out.resize(static_cast<size_t>(::read(p[0], out.data(), out.size())));
  ::close(p[0]);
  EXPECT_NE(out.find("\"kind\":\"connect\""), std::string::npos);
  EXPECT_LE(std::count(out.begin(), out.end(), '\n'), 110);
}

}  // namespace
}  // namespace km::enforcer

namespace km::enforcer {
namespace {

TEST(AuditLog, AFullPipeNeverBlocksItDropsCountsAndReportsLater) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  ::fcntl(p[1], F_SETPIPE_SZ, 4096);
  std::vector<std::function<void()>> retries;
  AuditLog log("sb-1", p[1]);
  log.set_max_pending(4096);
  log.set_retry([&](std::function<void()> f) { retries.push_back(std::move(f)); });
  for (int i = 0; i < 1000; ++i) log.emit("dns", {{"n", i}});  // nobody reads: it must not block
  EXPECT_GT(log.dropped(), 800u);  // about 8 KiB (the pipe and what may wait) got through
  EXPECT_EQ(log.events() + log.dropped(), 1000u);
  EXPECT_FALSE(retries.empty());  // what waits is tried again later
  // The reader catches up: what waited is written whole, then the report of what was lost.
  std::string out;
  char buf[65536];
  for (int round = 0; round < 100; ++round) {
    ssize_t n;
    ::fcntl(p[0], F_SETFL, O_NONBLOCK);
    while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    auto pending = std::move(retries);
    retries.clear();
    for (auto& f : pending) f();
    if (pending.empty() && log.pending_bytes() == 0) break;
  }
  log.emit("dns", {{"n", "last"}});
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  ::close(p[1]);
  uint64_t lines = 0, reported = 0;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);  // every line whole
    ++lines;
    if (j["kind"] == "audit") reported += j["dropped"].get<uint64_t>();
  }
  EXPECT_EQ(reported, log.dropped());
  EXPECT_EQ(lines, log.events() + 1);  // the events written and one report
}

}  // namespace
}  // namespace km::enforcer
