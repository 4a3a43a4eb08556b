#include "km/audit/event.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace km::audit {
namespace {

using Json = nlohmann::json;

Event exec_event(int i) {
  return Event{1795500000000 + i, "kernel", "exec", Json{{"pid", 100 + i}, {"argv", {"ls", "-l", std::to_string(i)}}}};
}

std::vector<std::string> trail(const std::string& sandbox, int n) {
  Chain c(sandbox);
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) lines.push_back(c.seal(exec_event(i)).line);
  return lines;
}

// The first problem a verifier finds in `lines`, or "" when the chain is intact. `head` is the
// last seq kmd says it wrote.
std::string verify(const std::string& sandbox, const std::vector<std::string>& lines, std::optional<uint64_t> head = std::nullopt) {
  ChainVerifier v(sandbox);
  for (size_t i = 0; i < lines.size(); ++i) v.feed(lines[i], "line " + std::to_string(i + 1));
  v.finish(head);
  return v.problem() ? v.problem()->where + ": " + v.problem()->reason : "";
}

TEST(Timestamps, MillisecondsInUtcBothWays) {
  EXPECT_EQ(format_ts(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_ts(1795498001123), "2026-11-24T05:26:41.123Z");
  EXPECT_EQ(parse_ts("2026-11-24T05:26:41.123Z"), 1795498001123);
  EXPECT_EQ(parse_ts("2026-11-24T05:26:41Z"), 1795498001000);
  EXPECT_EQ(parse_ts("2026-11-24T05:26:41.123456789Z"), 1795498001123);
  EXPECT_EQ(parse_ts(format_ts(1234567890)), 1234567890);
  for (const char* bad : {"", "2026-11-24", "2026-11-24T05:26:41", "2026-11-24T05:26:41+01:00", "2026-13-24T23:26:41Z",
                          "2026-11-24T05:26:41.Z", "2026-11-24T05:26:41.1234567890Z", "2026-11-24 23:26:41Z"}) {
    EXPECT_FALSE(parse_ts(bad)) << bad;
  }
}

TEST(Chain, SealedLinesAreCanonicalJsonWithTheSchemaFields) {
  Chain c("qs-1a2b3c4d");
  auto s = c.seal(Event{1795498001123, "kernel", "exec", Json{{"pid", 7}, {"argv", {"ls"}}, {"cwd", "/workspace"}}});
  Json j = Json::parse(s.line);
  EXPECT_EQ(canonical(j), s.line);  // a verifier re-dumps a parsed line to the same text
  EXPECT_EQ(j["seq"], 1);
  EXPECT_EQ(j["sandbox"], "qs-1a2b3c4d");
  EXPECT_EQ(j["source"], "kernel");
  EXPECT_EQ(j["type"], "exec");
  EXPECT_EQ(j["ts"], "2026-11-24T05:26:41.123Z");
  EXPECT_EQ(j["prev"], genesis("qs-1a2b3c4d"));
  EXPECT_EQ(j["hash"], s.hash);
  j.erase("hash");
  EXPECT_EQ(sha256_hex(canonical(j)), s.hash);
  auto second = Json::parse(c.seal(exec_event(1)).line);
  EXPECT_EQ(second["seq"], 2);
  EXPECT_EQ(second["prev"], s.hash);
  EXPECT_EQ(s.line.substr(0, 10), "{\"detail\":");
}

TEST(Chain, TextThatNeedsEscapingOrIsNotUtf8StaysCanonical) {
  Chain c("sb-1");
  std::string bad = "caf\xc3\xa9 \xff\xfe \x01\n\"quoted\" \\ \xe2\x82";
  auto s = c.seal(Event{1, "shell", "session", Json{{"data", bad}, {"kind", "output"}}});
  Json j = Json::parse(s.line);
  EXPECT_EQ(canonical(j), s.line);
  EXPECT_EQ(verify("sb-1", {s.line}), "");
}

TEST(Chain, GenesisDependsOnTheSandbox) {
  EXPECT_NE(genesis("a"), genesis("b"));
  EXPECT_EQ(genesis("a").size(), 64u);
  // A trail moved to another sandbox's name does not verify.
  auto lines = trail("sb-a", 2);
  EXPECT_NE(verify("sb-b", lines), "");
}

TEST(Chain, ContinuesFromAHead) {
  auto lines = trail("sb-1", 3);
  Json last = Json::parse(lines.back());
  Chain c("sb-1", 3, last["hash"]);
  lines.push_back(c.seal(exec_event(3)).line);
  EXPECT_EQ(verify("sb-1", lines, 4), "");
}

TEST(ChainVerifier, AnIntactTrailVerifies) {
  auto lines = trail("sb-1", 50);
  ChainVerifier v("sb-1");
  for (const auto& l : lines) EXPECT_TRUE(v.feed(l, "x"));
  v.finish(50);
  EXPECT_FALSE(v.problem());
  EXPECT_EQ(v.events(), 50u);
  EXPECT_EQ(v.last_seq(), 50u);
}

TEST(ChainVerifier, DetectsADeletedEvent) {
  auto lines = trail("sb-1", 10);
  lines.erase(lines.begin() + 4);  // event 5
  EXPECT_EQ(verify("sb-1", lines), "line 5: event 5 is missing (deleted, or moved elsewhere): a gap before event 6");
  auto first = trail("sb-1", 10);
  first.erase(first.begin());
  EXPECT_EQ(verify("sb-1", first), "line 1: event 1 is missing (deleted, or moved elsewhere): a gap before event 2");
  auto several = trail("sb-1", 10);
  several.erase(several.begin() + 2, several.begin() + 5);
  EXPECT_EQ(verify("sb-1", several), "line 3: events 3 to 5 are missing (deleted, or moved elsewhere): a gap before event 6");
}

TEST(ChainVerifier, DetectsEventsCutFromTheEndAgainstTheHead) {
  auto lines = trail("sb-1", 10);
  lines.resize(8);
  EXPECT_EQ(verify("sb-1", lines), "");  // the chain alone cannot tell
  EXPECT_EQ(verify("sb-1", lines, 10), "end of the trail: the trail ends at event 8 but kmd wrote 10: events 9 to 10 are missing");
  EXPECT_NE(verify("sb-1", trail("sb-1", 10), 9), "");  // appended after kmd's last
}

TEST(ChainVerifier, DetectsAnEditedEvent) {
  auto lines = trail("sb-1", 10);
  Json j = Json::parse(lines[6]);
  j["detail"]["argv"][0] = "rm";
  lines[6] = canonical(j);
  EXPECT_EQ(verify("sb-1", lines), "line 7: event 7 does not match its hash: it was edited");
  // Whitespace or key order changed by an editor is not an edit of the event.
  auto spaced = trail("sb-1", 3);
  spaced[1] = Json::parse(spaced[1]).dump(2);
  spaced[1].erase(std::remove(spaced[1].begin(), spaced[1].end(), '\n'), spaced[1].end());
  EXPECT_EQ(verify("sb-1", spaced), "");
}

TEST(ChainVerifier, DetectsAnEditWhoseHashWasRecomputed) {
  // The attacker edits event 4 and recomputes its hash: event 5's prev no longer matches.
  auto lines = trail("sb-1", 10);
  Json j = Json::parse(lines[3]);
  j["detail"]["pid"] = 1;
  j.erase("hash");
  j["hash"] = sha256_hex(canonical(j));
  lines[3] = canonical(j);
  EXPECT_EQ(verify("sb-1", lines),
            "line 5: event 5 does not follow the event before it (prev is not its hash): an event was replaced, inserted or reordered");
}

TEST(ChainVerifier, DetectsAnInsertedEvent) {
  auto lines = trail("sb-1", 10);
  // A forged event that claims to be the next one after event 3, hash and all.
  Chain forger("sb-1", 3, Json::parse(lines[2])["hash"]);
  lines.insert(lines.begin() + 3, forger.seal(Event{1, "kernel", "exec", Json{{"argv", {"innocent"}}}}).line);
  EXPECT_EQ(verify("sb-1", lines), "line 5: event 4 comes after event 4: events were inserted, duplicated or reordered");
  // A line that is not an event at all.
  auto junk = trail("sb-1", 5);
  junk.insert(junk.begin() + 2, "{\"note\":\"hello\"}");
  EXPECT_EQ(verify("sb-1", junk), "line 3: the line is not an audit event (fields missing, extra or of the wrong type)");
  auto text = trail("sb-1", 5);
  text.insert(text.begin() + 2, "not json");
  EXPECT_EQ(verify("sb-1", text), "line 3: the line is not a JSON object (altered, or not part of a trail)");
}

TEST(ChainVerifier, DetectsReordering) {
  auto lines = trail("sb-1", 10);
  std::swap(lines[3], lines[4]);
  EXPECT_EQ(verify("sb-1", lines), "line 4: event 4 is missing (deleted, or moved elsewhere): a gap before event 5");
  auto back = trail("sb-1", 10);
  std::rotate(back.begin() + 2, back.begin() + 3, back.end());  // event 3 moved to the end
  EXPECT_EQ(verify("sb-1", back).substr(0, 7), "line 3:");
  auto last_two = trail("sb-1", 10);
  std::swap(last_two[8], last_two[9]);
  EXPECT_EQ(verify("sb-1", last_two).substr(0, 7), "line 9:");
}

TEST(ChainVerifier, DetectsAReplacedEndAgainstTheHeadHash) {
  auto lines = trail("sb-1", 5);
  std::string kmd_last = Json::parse(lines.back())["hash"];
  Chain forger("sb-1", 4, Json::parse(lines[3])["hash"]);
  lines.back() = forger.seal(Event{1, "kernel", "exec", Json{{"argv", {"other"}}}}).line;
  ChainVerifier v("sb-1");
  for (const auto& l : lines) v.feed(l, "x");
  v.finish(5, kmd_last);
  ASSERT_TRUE(v.problem());
  EXPECT_EQ(v.problem()->seq, 5u);
}

TEST(EnforcerLines, MapOntoTheSchema) {
  auto map = [](const char* text) { return from_enforcer_line(Json::parse(text), 42); };
  auto dns = map(R"({"ts":"2026-11-24T05:26:41.123Z","sandbox":"forged","kind":"dns","name":"x.test","verdict":"deny"})");
  ASSERT_TRUE(dns);
  EXPECT_EQ(dns->type, "dns");
  EXPECT_EQ(dns->source, "enforcer");
  EXPECT_EQ(dns->ts_ms, 1795498001123);
  EXPECT_EQ(dns->detail, Json::parse(R"({"name":"x.test","verdict":"deny"})"));  // no sandbox, ts or kind
  auto connect = map(R"({"ts":"bad","kind":"connect","addr":"203.0.113.9","port":443})");
  EXPECT_EQ(connect->type, "net");
  EXPECT_EQ(connect->detail["kind"], "connect");
  EXPECT_EQ(connect->ts_ms, 42);  // kmd's time when the line's is not one
  EXPECT_EQ(map(R"({"kind":"packet"})")->type, "net");
  EXPECT_EQ(map(R"({"kind":"socket"})")->detail["kind"], "socket");
  EXPECT_EQ(map(R"({"kind":"http","host":"api.github.com"})")->type, "http");
  EXPECT_FALSE(map(R"({"kind":"http"})")->detail.contains("kind"));
  auto ai = map(R"({"kind":"ai","model":"claude","cost_micros":12})");
  EXPECT_EQ(ai->type, "http");
  EXPECT_EQ(ai->detail["kind"], "ai");
  EXPECT_EQ(kind_of(ai->type, ai->detail), "ai");
  auto dropped = map(R"({"kind":"audit","dropped":7})");
  EXPECT_EQ(dropped->type, "audit");
  EXPECT_EQ(dropped->detail["kind"], "dropped");
  EXPECT_EQ(map(R"({"kind":"suppressed","of":"dns","count":3})")->detail["kind"], "suppressed");
  EXPECT_EQ(map(R"({"kind":"otel"})")->type, "otel");
  EXPECT_EQ(map(R"({"kind":"Not A Name"})")->type, "enforcer");
  EXPECT_FALSE(map(R"({"name":"no kind"})"));
  EXPECT_FALSE(map(R"({"kind":7})"));
  EXPECT_FALSE(map(R"([1,2])"));
}

TEST(Lifecycle, BudgetNoticesAreBudgetEventsTheRestLifecycle) {
  auto created = from_lifecycle("created", Json{{"profile", "quickstart"}}, 5);
  EXPECT_EQ(created.type, "lifecycle");
  EXPECT_EQ(created.source, "kmd");
  EXPECT_EQ(created.detail["kind"], "created");
  EXPECT_EQ(created.detail["profile"], "quickstart");
  EXPECT_EQ(from_lifecycle("budget-warning", Json::object(), 5).type, "budget");
  EXPECT_EQ(from_lifecycle("ttl-warning", nullptr, 5).detail, Json::parse(R"({"kind":"ttl-warning"})"));
}

}  // namespace
}  // namespace km::audit
