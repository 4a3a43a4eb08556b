// km logs' text form: one line per stored event, whatever the source put in it.
#include "km/cli/logs_command.h"

#include <gtest/gtest.h>

namespace km::cli {
namespace {

using Json = nlohmann::json;

Json event(const std::string& type, Json detail, const std::string& source = "enforcer") {
  return Json{{"ts", "2026-11-24T10:00:00.000Z"}, {"seq", 7}, {"sandbox", "sb-1a2b3c4d"}, {"source", source},
              {"type", type}, {"detail", std::move(detail)}};
}

// The summary after the fixed-width head (time, seq, type, kind).
std::string summary_of(const Json& e) {
  std::string line = event_line(e);
  EXPECT_EQ(line.rfind("2026-11-24T10:00:00.000Z       7  ", 0), 0u) << line;
  return line.substr(24 + 1 + 7 + 2 + 9 + 1 + 14 + 1);
}

TEST(EventLine, DnsNamesTheQueryTypeByItsMnemonic) {
  EXPECT_EQ(summary_of(event("dns", {{"verdict", "allow"}, {"name", "api.allowed.test"}, {"qtype", 28}, {"rcode", "NOERROR"},
                                     {"addresses", {"2001:db8::1"}}, {"rule", "allowedDNSSuffixes: .allowed.test"}})),
            "allow api.allowed.test AAAA -> NOERROR [\"2001:db8::1\"] (allowedDNSSuffixes: .allowed.test)");
  EXPECT_EQ(summary_of(event("dns", {{"verdict", "deny"}, {"name", "x.evil.test"}, {"qtype", 1}, {"rcode", "NXDOMAIN"},
                                     {"reason", "name is not in the allowlist"}})),
            "deny x.evil.test A -> NXDOMAIN (name is not in the allowlist)");
  EXPECT_NE(summary_of(event("dns", {{"verdict", "deny"}, {"name", "t.test"}, {"qtype", 65280}, {"rcode", "NXDOMAIN"}})).find(" TYPE65280 "),
            std::string::npos);
}

TEST(EventLine, CommandsShowArgvPidsAndDirectory) {
  EXPECT_EQ(summary_of(event("exec", {{"pid", 42}, {"ppid", 1}, {"uid", 1000}, {"cwd", "/workspace"}, {"argv", {"ls", "-la"}}}, "kernel")),
            "ls -la  (pid 42, ppid 1, uid 1000, /workspace)");
  EXPECT_EQ(summary_of(event("exec", {{"pid", 1}, {"ppid", 0}, {"uid", 0}, {"cwd", "/"}, {"argv", {"sh"}}, {"truncated", true}}, "kernel")),
            "sh ...  (pid 1, ppid 0, uid 0, /)");
}

TEST(EventLine, ConnectionsShowVerdictDestinationAndWhy) {
  EXPECT_EQ(summary_of(event("net", {{"kind", "connect"}, {"verdict", "deny"}, {"addr", "203.0.113.5"}, {"port", 80}, {"proto", "http"},
                                     {"mode", "explicit"}, {"reason", "address is not covered by allowedCIDRs"}})),
            "deny 203.0.113.5:80 http explicit (address is not covered by allowedCIDRs)");
}

TEST(EventLine, WhatASandboxControlsCannotMoveTheTerminal) {
  // Control characters from a sandbox (an argv, a name, typed input) are escaped, and long
  // values are cut: a line stays one line.
  std::string s = summary_of(event("exec", {{"argv", {"printf", "\x1b[2J\r\nboom\x07"}}, {"cwd", "/"}}, "kernel"));
  EXPECT_EQ(s.find('\n'), std::string::npos);
  EXPECT_EQ(s.find('\x1b'), std::string::npos);
  EXPECT_NE(s.find("\\e[2J\\r\\nboom\\x07"), std::string::npos) << s;
  std::string long_name(5000, 'a');
  std::string d = summary_of(event("dns", {{"verdict", "deny"}, {"name", long_name}, {"qtype", 1}, {"rcode", "NXDOMAIN"}}));
  EXPECT_LT(d.size(), 200u);
  EXPECT_NE(d.find("..."), std::string::npos);
}

TEST(EventLine, SessionsAndLifecycle) {
  EXPECT_EQ(summary_of(event("session", {{"kind", "input"}, {"session", "s1"}, {"data", "ls\n"}}, "shell")), "s1 \"ls\\n\"");
  EXPECT_EQ(summary_of(event("session", {{"kind", "end"}, {"session", "s1"}, {"exit", 3}, {"input_bytes", 10}, {"output_bytes", 20}}, "shell")),
            "s1 ended: exit 3, 10 bytes typed, 20 shown");
  EXPECT_EQ(summary_of(event("lifecycle", {{"kind", "started"}, {"pid", 9}}, "kmd")), "{\"pid\":9}");
}

TEST(EventLine, AnythingElseIsNotAnError) {
  EXPECT_EQ(event_line(Json("text")), "(not an event)");
  std::string s = summary_of(event("novel", {{"kind", "x"}, {"n", 1}}, "kmd"));
  EXPECT_EQ(s, "{\"n\":1}");
  // A detail of the wrong shape prints what there is.
  EXPECT_NO_THROW(event_line(event("dns", Json::array({1, 2}))));
  EXPECT_NO_THROW(event_line(event("exec", {{"argv", "not a list"}, {"pid", "x"}})));
}

TEST(ParseSince, DurationsAgoAndUtcTimes) {
  const int64_t now = 1'800'000'000'000;
  EXPECT_EQ(parse_since("90m", now), now - 90 * 60 * 1000);
  EXPECT_EQ(parse_since("2h", now), now - 2 * 3600 * 1000);
  EXPECT_EQ(parse_since("2026-11-24T10:00:00Z", now).has_value(), true);
  EXPECT_EQ(parse_since("2026-11-24T10:00:00.000Z", now), parse_since("2026-11-24T10:00:00Z", now));
  EXPECT_FALSE(parse_since("yesterday", now));
  EXPECT_FALSE(parse_since("", now));
  EXPECT_FALSE(parse_since("0s", now));
}

}  // namespace
}  // namespace km::cli
