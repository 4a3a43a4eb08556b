#include "km/daemon/audit_trails.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "km/base/file.h"
#include "km/enforcer/audit.h"
#include "km/store/trail.h"

namespace km::daemon {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kSecret = "hunter2-s3cr3t-value";

class Trails : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/km-trails-test-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    ::mkdir((root_ + "/run").c_str(), 0700);
  }
  void TearDown() override {
    trails_.reset();
    std::system(("rm -rf '" + root_ + "'").c_str());
  }
  AuditTrailsOptions options() {
    AuditTrailsOptions o;
    o.db_path = root_ + "/km.db";
    o.live_dir = [r = root_](const std::string& id) { return r + "/sandboxes/" + id + "/audit"; };
    o.secrets = [](const std::string&) { return std::vector<std::string>{kSecret}; };
    return o;
  }
  void start(AuditTrailsOptions o) {
    auto t = AuditTrails::create(std::move(o), log_);
    ASSERT_TRUE(t) << t.error().to_string();
    trails_ = std::move(*t);
  }
  // Waits (bounded) until the trail's head reaches `seq`.
  bool wait_head(const std::string& id, uint64_t seq) {
    for (int i = 0; i < 500 && trails_->head(id) < seq; ++i) trails_->wait_after(id, trails_->head(id), 20);
    return trails_->head(id) >= seq;
  }
  std::vector<Json> all(const std::string& id) {
    store::AuditIndex::Query q;
    q.limit = 100000;
    auto e = trails_->query(id, q);
    EXPECT_TRUE(e) << (e ? "" : e.error().to_string());
    return e ? *e : std::vector<Json>{};
  }
  std::string files_text(const std::string& dir) {
    std::string text;
    (void)store::scan_trail(dir, [&](const store::TrailFile&, uint64_t, std::string_view l) {
      text.append(l);
      text += '\n';
      return true;
    });
    return text;
  }
  static void write_all(int fd, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::write(fd, s.data() + off, s.size() - off);
      ASSERT_GT(n, 0);
      off += static_cast<size_t>(n);
    }
  }

  std::string root_;
  log::Logger log_{"test", ::open("/dev/null", O_WRONLY | O_CLOEXEC)};
  std::unique_ptr<AuditTrails> trails_;
};

TEST_F(Trails, EnforcerLinesAndRecordedEventsAreRedactedChainedAndIndexed) {
  start(options());
  auto w = trails_->enforcer_writer("sb-1", root_ + "/run/audit.fifo");
  ASSERT_TRUE(w) << w.error().to_string();
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/run/audit.fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // not the original's 0666
  trails_->record("sb-1", audit::from_lifecycle("created", Json{{"profile", "quickstart"}}, 0));
  trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"pid", 7}, {"argv", {"curl", "-H", std::string("X-Token: ") + kSecret, "https://x.test"}}}});
  // The enforcer's lines, as its AuditLog writes them.
  enforcer::AuditLog log("sb-1", w->get());
  log.emit("dns", {{"name", std::string(kSecret) + ".evil.test"}, {"qtype", 1}, {"verdict", "deny"}, {"rcode", "NXDOMAIN"}});
  log.emit("connect", {{"addr", "203.0.113.9"}, {"port", 443}, {"verdict", "deny"}, {"mode", "transparent"}});
  log.emit("ai", {{"provider", "anthropic"}, {"model", "claude"}, {"cost_micros", 12}});
  ASSERT_TRUE(wait_head("sb-1", 5));
  auto events = all("sb-1");
  ASSERT_EQ(events.size(), 5u);
  std::vector<std::string> types;
  for (const auto& e : events) types.push_back(e["type"].get<std::string>() + "/" + audit::kind_of(e["type"].get<std::string>(), e["detail"]));
  // The two kmd records are in order; the enforcer's arrive in its own order.
  EXPECT_EQ(std::count(types.begin(), types.end(), "lifecycle/created"), 1);
  EXPECT_EQ(std::count(types.begin(), types.end(), "exec/exec"), 1);
  EXPECT_EQ(std::count(types.begin(), types.end(), "dns/dns"), 1);
  EXPECT_EQ(std::count(types.begin(), types.end(), "net/connect"), 1);
  EXPECT_EQ(std::count(types.begin(), types.end(), "http/ai"), 1);
  for (const auto& e : events) {
    EXPECT_EQ(e["sandbox"], "sb-1");
    EXPECT_EQ(e["source"], e["type"] == "exec" ? "kernel" : e["type"] == "lifecycle" ? "kmd" : "enforcer");
  }
  // The secret never reached the disk: not in the trail, not in the index's database.
  std::string dir = root_ + "/sandboxes/sb-1/audit";
  std::string text = files_text(dir);
  EXPECT_EQ(text.find(kSecret), std::string::npos) << text;
  EXPECT_NE(text.find("[REDACTED:"), std::string::npos);
  EXPECT_NE(text.find(".evil.test"), std::string::npos);
  auto db = read_file(root_ + "/km.db", 64 << 20);
  ASSERT_TRUE(db);
  EXPECT_EQ(db->find(kSecret), std::string::npos);
  auto v = trails_->verify("sb-1");
  ASSERT_TRUE(v);
  EXPECT_FALSE(v->problem);
  EXPECT_EQ(v->events, 5u);
  // Queries by type and sub-kind.
  store::AuditIndex::Query q;
  q.types = {"net"};
  EXPECT_EQ(trails_->query("sb-1", q)->size(), 1u);
  q = {};
  q.kinds = {"ai"};
  EXPECT_EQ(trails_->query("sb-1", q)->size(), 1u);
  EXPECT_EQ(trails_->counters("sb-1").events, 5u);
}

TEST_F(Trails, LongLinesAreCutMalformedOnesCountedAndTheReaderGoesOn) {
  auto o = options();
  o.max_line = 4096;
  start(o);
  auto w = trails_->enforcer_writer("sb-1", root_ + "/run/audit.fifo");
  ASSERT_TRUE(w);
  std::string big = R"({"ts":"2026-11-24T05:26:41.123Z","kind":"http","path":")" + std::string(300000, 'a') + "\"}\n";
  std::thread writer([fd = w->get(), &big] {
    write_all(fd, R"({"kind":"dns","name":"before.test"})" "\n");
    write_all(fd, big);
    write_all(fd, "not json at all\n{\"no\":\"kind\"}\n");
    write_all(fd, R"({"kind":"dns","name":"after.test"})" "\n");
  });
  writer.join();
  ASSERT_TRUE(wait_head("sb-1", 4));  // before, truncated, the malformed report, after
  auto events = all("sb-1");
  std::string names;
  for (const auto& e : events) names += audit::kind_of(e["type"].get<std::string>(), e["detail"]) + " ";
  EXPECT_NE(names.find("truncated"), std::string::npos) << names;
  EXPECT_NE(names.find("malformed"), std::string::npos) << names;
  bool after = false;
  for (const auto& e : events) {
    if (e["detail"].value("name", "") == "after.test") after = true;
    if (audit::kind_of(e["type"].get<std::string>(), e["detail"]) == "truncated") {
      EXPECT_EQ(e["detail"]["bytes"], big.size() - 1);
      EXPECT_LE(e["detail"]["head"].get<std::string>().size(), 1024u);
    }
  }
  EXPECT_TRUE(after);
  auto c = trails_->counters("sb-1");
  EXPECT_EQ(c.truncated, 1u);
  EXPECT_EQ(c.malformed, 2u);
}

TEST_F(Trails, AFullQueueDropsAndCountsAndTheTrailSaysSo) {
  auto o = options();
  o.queue_limit = 0;  // nothing gets in: a disk far slower than the sandbox
  start(o);
  for (int i = 0; i < 25; ++i) EXPECT_FALSE(trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"n", i}}}));
  EXPECT_EQ(trails_->counters("sb-1").dropped_kmd, 25u);
  ASSERT_TRUE(wait_head("sb-1", 1));
  uint64_t reported = 0;
  for (int i = 0; i < 100 && reported < 25; ++i) {
    reported = 0;
    for (const auto& e : all("sb-1")) {
      EXPECT_EQ(e["type"], "audit");
      EXPECT_EQ(e["detail"]["kind"], "dropped");
      reported += e["detail"]["dropped"].get<uint64_t>();
    }
    if (reported < 25) std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(reported, 25u);
  EXPECT_EQ(trails_->counters("sb-1").dropped(), 25u);
}

TEST_F(Trails, TheQueueIsBoundedInBytesAsWellAsInEvents) {
  auto o = options();
  o.queue_bytes = 4096;  // room for many small events, none of 8 KiB
  start(o);
  EXPECT_FALSE(trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"argv", std::string(8192, 'a')}}}));
  EXPECT_FALSE(trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"argv", Json::array({std::string(3000, 'b'), std::string(3000, 'c')})}}}));
  EXPECT_TRUE(trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"argv", "true"}}}));
  EXPECT_EQ(trails_->counters("sb-1").dropped_kmd, 2u);
  ASSERT_TRUE(trails_->flush("sb-1"));
  uint64_t reported = 0, kept = 0;
  for (const auto& e : all("sb-1")) {
    if (e["type"] == "audit" && e["detail"]["kind"] == "dropped") reported += e["detail"]["dropped"].get<uint64_t>();
    if (e["type"] == "exec") {
      ++kept;
      EXPECT_EQ(e["detail"]["argv"], "true");
    }
  }
  EXPECT_EQ(reported, 2u);
  EXPECT_EQ(kept, 1u);
  // What the writer took is given back: the queue takes small events again.
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"n", i}}}));
  ASSERT_TRUE(trails_->flush("sb-1"));
}

TEST_F(Trails, TheEnforcersOwnLossReportsAreCounted) {
  start(options());
  auto w = trails_->enforcer_writer("sb-1", root_ + "/run/audit.fifo");
  ASSERT_TRUE(w);
  write_all(w->get(), R"({"kind":"audit","dropped":5,"dropped_total":5})" "\n" R"({"kind":"suppressed","of":"dns","count":3})" "\n");
  ASSERT_TRUE(wait_head("sb-1", 2));
  auto c = trails_->counters("sb-1");
  EXPECT_EQ(c.dropped_enforcer, 5u);
  EXPECT_EQ(c.suppressed, 3u);
  EXPECT_EQ(c.dropped(), 5u);
}

TEST_F(Trails, AnEnforcerNeverBlocksOnAFullPipeAndReportsWhatItDropped) {
  auto o = options();
  o.pipe_bytes = 4096;
  start(o);
  std::string fifo = root_ + "/run/audit.fifo";
  auto w = trails_->enforcer_writer("sb-1", fifo);
  ASSERT_TRUE(w);
  // kmd stops reading (the sandbox's enforcer is detached), the pipe fills.
  trails_->detach_enforcer("sb-1");
  enforcer::AuditLog log("sb-1", w->get());
  log.set_max_pending(8192);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5000; ++i) log.emit("dns", {{"name", "n" + std::to_string(i) + ".test"}});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);  // never waited on the pipe
  EXPECT_GT(log.dropped(), 4000u);
  // kmd reads again: what waited arrives, then the report of what was lost.
  ASSERT_TRUE(trails_->read_enforcer("sb-1", fifo));
  for (int i = 0; i < 200 && log.pending_bytes() > 0; ++i) {
    std::this_thread::sleep_for(5ms);
    log.flush();
  }
  log.emit("dns", {{"name", "last.test"}});
  log.flush();
  uint64_t written = log.events();
  for (int i = 0; i < 300 && trails_->counters("sb-1").dropped_enforcer < log.dropped(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(trails_->counters("sb-1").dropped_enforcer, log.dropped());
  EXPECT_EQ(log.dropped() + written, 5001u);
}

TEST_F(Trails, RotatedFilesAreCompressedAndStillRead) {
  auto o = options();
  o.rotate_bytes = 8192;
  start(o);
  for (int i = 0; i < 400; ++i) {
    trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"n", i}, {"argv", {"make", std::string(100, 'x')}}}});
    if (i % 50 == 0) trails_->flush("sb-1");
  }
  ASSERT_TRUE(trails_->flush("sb-1"));
  std::string dir = root_ + "/sandboxes/sb-1/audit";
  size_t gz = 0;
  for (int i = 0; i < 200; ++i) {
    gz = 0;
    for (const auto& f : store::trail_files(dir)) gz += f.compressed;
    if (gz >= 3) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(gz, 3u);
  auto events = all("sb-1");
  ASSERT_EQ(events.size(), 400u);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i]["detail"]["n"], i);
  auto v = trails_->verify("sb-1");
  ASSERT_TRUE(v);
  EXPECT_FALSE(v->problem) << v->problem->reason;
  EXPECT_EQ(v->events, 400u);
}

TEST_F(Trails, ArchivedTrailsGoOnWhereTheyWereMovedAndSurviveARestart) {
  start(options());
  trails_->record("sb-1", audit::from_lifecycle("created", Json::object(), 0));
  ASSERT_TRUE(wait_head("sb-1", 1));
  std::string dest = root_ + "/artifacts/sb-1/audit";
  ASSERT_TRUE(trails_->archive("sb-1", dest));
  trails_->record("sb-1", audit::from_lifecycle("destroyed", Json::object(), 0));
  ASSERT_TRUE(wait_head("sb-1", 2));
  trails_->close("sb-1");
  EXPECT_TRUE(store::trail_files(root_ + "/sandboxes/sb-1/audit").empty());
  EXPECT_EQ(store::trail_files(dest).size(), 1u);
  // A new kmd: the trail, its head and its counters come back from the index.
  trails_.reset();
  start(options());
  EXPECT_EQ(trails_->head("sb-1"), 2u);
  EXPECT_EQ(trails_->dir("sb-1"), dest);
  EXPECT_EQ(all("sb-1").size(), 2u);
  trails_->record("sb-1", audit::from_lifecycle("late", Json::object(), 0));
  ASSERT_TRUE(wait_head("sb-1", 3));
  auto v = trails_->verify("sb-1");
  ASSERT_TRUE(v);
  EXPECT_FALSE(v->problem);
  EXPECT_EQ(v->events, 3u);
}

TEST_F(Trails, TheIndexCatchesUpWithTheFiles) {
  start(options());
  for (int i = 0; i < 10; ++i) trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"n", i}}});
  ASSERT_TRUE(wait_head("sb-1", 10));
  trails_.reset();
  // The index lost its rows (a crash between the write and the commit, in effect).
  {
    auto x = store::AuditIndex::open(root_ + "/km.db");
    ASSERT_TRUE(x);
    ASSERT_TRUE((*x)->forget("sb-1"));
  }
  start(options());
  trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"n", 10}}});
  ASSERT_TRUE(wait_head("sb-1", 11));
  auto events = all("sb-1");
  ASSERT_EQ(events.size(), 11u);
  EXPECT_EQ(events.front()["seq"], 1u);
}

TEST_F(Trails, OneSandboxsFloodCannotMakeAnotherLoseEvents) {
  auto o = options();
  o.queue_limit = 100;  // a sandbox may hold 50
  start(o);
  int quiet_dropped = 0;
  for (int i = 0; i < 2000; ++i) {
    trails_->record("sb-flood", audit::Event{0, "kernel", "exec", Json{{"n", i}}});
    if (i % 100 == 0 && !trails_->record("sb-quiet", audit::Event{0, "kernel", "exec", Json{{"n", i}}})) ++quiet_dropped;
  }
  EXPECT_EQ(quiet_dropped, 0);
  EXPECT_EQ(trails_->counters("sb-quiet").dropped_kmd, 0u);
  ASSERT_TRUE(trails_->flush("sb-quiet"));
  EXPECT_EQ(all("sb-quiet").size(), 20u);
}

TEST_F(Trails, IndexRowsPastTheEndOfTheFilesAreDroppedAtOpen) {
  start(options());
  for (int i = 0; i < 10; ++i) trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"n", i}}});
  ASSERT_TRUE(wait_head("sb-1", 10));
  trails_.reset();
  // The host crashed: the index's commit reached the disk, the last five lines did not.
  std::string path = root_ + "/sandboxes/sb-1/audit/events-1.jsonl";
  auto text = km::read_file(path, 1 << 20);
  ASSERT_TRUE(text);
  size_t cut = 0;
  for (int i = 0; i < 5; ++i) cut = text->find('\n', cut) + 1;
  {
    std::ofstream f(path, std::ios::trunc);
    f << text->substr(0, cut);
  }
  start(options());
  trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"n", 100}}});
  ASSERT_TRUE(trails_->flush("sb-1"));
  EXPECT_EQ(trails_->head("sb-1"), 6u);
  auto events = all("sb-1");
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events.back()["seq"], 6u);
  EXPECT_EQ(events.back()["detail"]["n"], 100);
  auto v = trails_->verify("sb-1");
  ASSERT_TRUE(v);
  EXPECT_FALSE(v->problem) << v->problem->reason;
}

TEST_F(Trails, ALineTornByACrashIsCutAndTheTrailSaysSo) {
  start(options());
  for (int i = 0; i < 3; ++i) trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"n", i}}});
  ASSERT_TRUE(wait_head("sb-1", 3));
  trails_.reset();
  {
    std::ofstream f(root_ + "/sandboxes/sb-1/audit/events-1.jsonl", std::ios::app);
    f << "{\"detail\":{\"n\":3";  // the host died in the middle of a write
  }
  start(options());
  trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"n", 3}}});
  ASSERT_TRUE(wait_head("sb-1", 5));
  auto events = all("sb-1");
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(events[3]["detail"]["kind"], "recovered");
  EXPECT_NE(events[3]["detail"]["reason"].get<std::string>().find("torn last line"), std::string::npos);
  EXPECT_EQ(events[4]["detail"]["n"], 3);
  auto v = trails_->verify("sb-1");
  ASSERT_TRUE(v);
  EXPECT_FALSE(v->problem);
}

TEST_F(Trails, VerifyNamesTheEventThatWasTamperedWith) {
  start(options());
  for (int i = 0; i < 20; ++i) trails_->record("sb-1", audit::Event{0, "kernel", "exec", Json{{"n", i}}});
  ASSERT_TRUE(wait_head("sb-1", 20));
  std::string path = root_ + "/sandboxes/sb-1/audit/events-1.jsonl";
  auto text = read_file(path, 1 << 20);
  ASSERT_TRUE(text);
  size_t at = text->find("\"n\":7");
  ASSERT_NE(at, std::string::npos);
  std::string edited = *text;
  edited.replace(at, 5, "\"n\":8");
  ASSERT_TRUE(write_file_atomic(path, edited, 0600));
  auto v = trails_->verify("sb-1");
  ASSERT_TRUE(v);
  ASSERT_TRUE(v->problem);
  EXPECT_EQ(v->problem->seq, 8u);
  EXPECT_EQ(v->problem->where, "events-1.jsonl line 8");
  EXPECT_NE(v->problem->reason.find("edited"), std::string::npos);
  // Deleting the last lines is caught against the head kmd wrote.
  std::string cut = text->substr(0, text->find('\n', text->find("\"seq\":18")) + 1);
  ASSERT_TRUE(write_file_atomic(path, cut, 0600));
  v = trails_->verify("sb-1");
  ASSERT_TRUE(v && v->problem);
  EXPECT_NE(v->problem->reason.find("events 19 to 20 are missing"), std::string::npos) << v->problem->reason;
}

}  // namespace
}  // namespace km::daemon
