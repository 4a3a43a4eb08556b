#include "km/store/ledger.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

namespace km::store {
namespace {

class LedgerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/km-ledger-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    path_ = dir_ + "/spend.db";
    auto l = SpendLedger::open(path_);
    ASSERT_TRUE(l) << l.error().to_string();
    ledger_ = std::move(*l);
  }
  void TearDown() override {
    ledger_.reset();
    std::system(("rm -rf '" + dir_ + "'").c_str());
  }
  static AiCall call(const std::string& id, const std::string& model, int64_t ts = 100) {
    AiCall c;
    c.id = id;
    c.ts = ts;
    c.provider = "anthropic";
    c.api = "messages";
    c.model = model;
    c.price_basis = "exact";
    c.status = 200;
    return c;
  }
  std::string dir_, path_;
  std::unique_ptr<SpendLedger> ledger_;
};

TEST_F(LedgerTest, ACallsRowAndItsModelsTotalsMoveTogether) {
  // A streamed call recorded in two steps counts one request.
  EXPECT_EQ(*ledger_->record(call("c1", "claude-sonnet-4"), {1000, 0, 200, 0}, 3'000), 3'000);
  EXPECT_EQ(*ledger_->record(call("c1", "claude-sonnet-4"), {0, 500, 0, 0}, 7'500), 10'500);
  EXPECT_EQ(*ledger_->record(call("c2", "claude-haiku-4", 200), {10, 20, 0, 5}, 42), 10'542);
  EXPECT_EQ(*ledger_->ai_spent(), 10'542);
  auto models = *ledger_->models();
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0].model, "claude-sonnet-4");  // highest cost first
  EXPECT_EQ(models[0].input, 1000);
  EXPECT_EQ(models[0].output, 500);
  EXPECT_EQ(models[0].cache_read, 200);
  EXPECT_EQ(models[0].requests, 1);
  EXPECT_EQ(models[0].cost_micros, 10'500);
  EXPECT_EQ(models[1].cache_write, 5);
  auto calls = *ledger_->calls(10);
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].call.id, "c2");  // newest first
  EXPECT_EQ(calls[1].tokens.output, 500);
  EXPECT_EQ(calls[1].cost_micros, 10'500);
  EXPECT_EQ(ledger_->calls(1)->size(), 1u);
}

TEST_F(LedgerTest, ACorrectionMayBeNegativeAndReplacesTheCallsState) {
  AiCall c = call("c1", "m");
  c.estimated = true;
  ASSERT_TRUE(ledger_->record(c, {100, 400, 0, 0}, 5'000));
  // The final usage arrived: fewer output tokens than estimated.
  c.estimated = false;
  EXPECT_EQ(*ledger_->record(c, {0, -100, 0, 0}, -1'000), 4'000);
  auto calls = *ledger_->calls(10);
  EXPECT_EQ(calls[0].tokens.output, 300);
  EXPECT_FALSE(calls[0].call.estimated);
  EXPECT_EQ(ledger_->models()->at(0).output, 300);
}

TEST_F(LedgerTest, AModelLearnedLateTakesTheCallsTotalsWithIt) {
  ASSERT_TRUE(ledger_->record(call("c1", ""), {100, 0, 0, 0}, 1'000));
  ASSERT_TRUE(ledger_->record(call("c1", "claude-opus-4"), {0, 50, 0, 0}, 2'000));
  auto models = *ledger_->models();
  ASSERT_EQ(models.size(), 1u);  // the empty model's row went to zero and is not listed
  EXPECT_EQ(models[0].model, "claude-opus-4");
  EXPECT_EQ(models[0].input, 100);
  EXPECT_EQ(models[0].requests, 1);
  EXPECT_EQ(models[0].cost_micros, 3'000);
  EXPECT_EQ(*ledger_->ai_spent(), 3'000);
}

TEST_F(LedgerTest, LimitsAreSetOnceAndRaisedAdditively) {
  EXPECT_FALSE(ledger_->limits()->ai_micros);  // none before init
  Limits l;
  l.ai_micros = 10'000'000;
  l.warning_threshold = 0.5;
  l.compute_rate_micros_per_hour = 36'000'000;
  ASSERT_TRUE(ledger_->init_limits(l));
  Limits other;
  other.ai_micros = 1;
  ASSERT_TRUE(ledger_->init_limits(other));  // idempotent: the first stays
  Limits got = *ledger_->limits();
  EXPECT_EQ(got.ai_micros, 10'000'000);
  EXPECT_FALSE(got.compute_micros);
  EXPECT_EQ(got.warning_threshold, 0.5);
  EXPECT_EQ(got.compute_rate_micros_per_hour, 36'000'000);
  EXPECT_EQ(got.epoch, 0);
  // Raising an absent ceiling creates it.
  Limits raised = *ledger_->raise_limits(2'500'000, 1'000'000);
  EXPECT_EQ(raised.ai_micros, 12'500'000);
  EXPECT_EQ(raised.compute_micros, 1'000'000);
  EXPECT_EQ(raised.epoch, 1);
  EXPECT_EQ(ledger_->limits()->ai_micros, 12'500'000);
  EXPECT_FALSE(ledger_->raise_limits(-1, 5));
  EXPECT_FALSE(ledger_->raise_limits(0, 0));
  EXPECT_FALSE(ledger_->raise_limits(int64_t{1} << 61, 0));
  EXPECT_EQ(ledger_->limits()->epoch, 1);  // refused raises change nothing
}

TEST_F(LedgerTest, ClaimsAreGrantedOncePerPoolUntilThatPoolIsRaised) {
  Limits l;
  l.ai_micros = 1'000'000;
  l.compute_micros = 1'000'000;
  ASSERT_TRUE(ledger_->init_limits(l));
  EXPECT_TRUE(*ledger_->claim_warning("ai"));
  EXPECT_FALSE(*ledger_->claim_warning("ai"));
  EXPECT_TRUE(*ledger_->claim_exhausted("ai"));
  EXPECT_FALSE(*ledger_->claim_exhausted("ai"));
  EXPECT_TRUE(*ledger_->claim_warning("compute"));
  // Raising compute re-arms compute's claims only.
  ASSERT_TRUE(ledger_->raise_limits(0, 500'000));
  EXPECT_TRUE(*ledger_->claim_warning("compute"));
  EXPECT_TRUE(*ledger_->claim_exhausted("compute"));
  EXPECT_FALSE(*ledger_->claim_warning("ai"));
  EXPECT_FALSE(*ledger_->claim_exhausted("ai"));
  ASSERT_TRUE(ledger_->raise_limits(1, 0));
  EXPECT_TRUE(*ledger_->claim_warning("ai"));
  EXPECT_FALSE(*ledger_->claim_warning("compute"));
  EXPECT_FALSE(ledger_->claim_warning("gpu"));
}

TEST_F(LedgerTest, ALedgerSurvivesReopenAndANonLedgerFileIsAnError) {
  ASSERT_TRUE(ledger_->record(call("c1", "m"), {1, 2, 3, 4}, 99));
  ledger_.reset();
  auto again = SpendLedger::open(path_);
  ASSERT_TRUE(again);
  EXPECT_EQ(*(*again)->ai_spent(), 99);
  std::ofstream(dir_ + "/junk.db") << std::string(8192, 'x');
  auto junk = SpendLedger::open(dir_ + "/junk.db");
  EXPECT_FALSE(junk);
}

// Records `n` calls of 1 µ$ and 1 input token each, ids "<prefix>-<i>", plus `n` updates of
// one shared call ("shared") by 1 µ$.
void record_many(SpendLedger& l, const std::string& prefix, int n) {
  for (int i = 0; i < n; ++i) {
    AiCall c;
    c.id = prefix + "-" + std::to_string(i);
    c.model = i % 2 ? "a" : "b";
    auto r = l.record(c, {1, 0, 0, 0}, 1);
    ASSERT_TRUE(r) << r.error().to_string();
    AiCall s;
    s.id = "shared";
    s.model = "a";
    r = l.record(s, {0, 1, 0, 0}, 1);
    ASSERT_TRUE(r) << r.error().to_string();
  }
}

TEST_F(LedgerTest, TwoInstancesAndAnotherProcessRecordingAtOnceLoseNothing) {
  constexpr int kEach = 300;
  auto second = SpendLedger::open(path_);
  ASSERT_TRUE(second);
  pid_t child = ::fork();
  if (child == 0) {
    auto mine = SpendLedger::open(path_);
    if (!mine) _exit(2);
    for (int i = 0; i < kEach; ++i) {
      AiCall c;
      c.id = "proc-" + std::to_string(i);
      c.model = "a";
      if (!(*mine)->record(c, {1, 0, 0, 0}, 1)) _exit(3);
      AiCall s;
      s.id = "shared";
      s.model = "a";
      if (!(*mine)->record(s, {0, 1, 0, 0}, 1)) _exit(3);
    }
    _exit(0);
  }
  std::thread t1([&] { record_many(*ledger_, "t1", kEach); });
  std::thread t2([&] { record_many(**second, "t2", kEach); });
  t1.join();
  t2.join();
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(*ledger_->ai_spent(), 6 * kEach);
  auto calls = *(*second)->calls(100000);
  EXPECT_EQ(calls.size(), 3u * kEach + 1);
  int64_t requests = 0, input = 0, output = 0;
  auto models = *ledger_->models();
  for (const auto& m : models) requests += m.requests, input += m.input, output += m.output;
  EXPECT_EQ(requests, 3 * kEach + 1);
  EXPECT_EQ(input, 3 * kEach);
  EXPECT_EQ(output, 3 * kEach);
  for (const auto& c : calls) {
    if (c.call.id == "shared") {
      EXPECT_EQ(c.cost_micros, 3 * kEach);
    }
  }
}

TEST_F(LedgerTest, RaisesRacingRecordsAreAllApplied) {
  Limits l;
  l.ai_micros = 1'000;
  ASSERT_TRUE(ledger_->init_limits(l));
  auto kmd = SpendLedger::open(path_);
  ASSERT_TRUE(kmd);
  constexpr int kRaises = 200;
  std::thread raiser([&] {
    for (int i = 0; i < kRaises; ++i) {
      auto r = (*kmd)->raise_limits(10, i % 2);
      ASSERT_TRUE(r) << r.error().to_string();
    }
  });
  record_many(*ledger_, "t", kRaises);
  raiser.join();
  Limits got = *ledger_->limits();
  EXPECT_EQ(got.ai_micros, 1'000 + 10 * kRaises);
  EXPECT_EQ(got.compute_micros, kRaises / 2);
  EXPECT_EQ(got.epoch, kRaises);
  EXPECT_EQ(*ledger_->ai_spent(), 2 * kRaises);
}

// What kmd (root) and the enforcer (an unprivileged uid) do with one ledger.
class LedgerOwnershipTest : public LedgerTest {
 protected:
  static constexpr uid_t kOwner = 65534;
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (files opened as another uid)";
    LedgerTest::SetUp();
    ::chmod(dir_.c_str(), 0711);
    owned_ = dir_ + "/ledger";
    ASSERT_EQ(::mkdir(owned_.c_str(), 0700), 0);
    ASSERT_EQ(::chown(owned_.c_str(), kOwner, kOwner), 0);
  }
  static uid_t owner_of(const std::string& p) {
    struct stat st {};
    return ::lstat(p.c_str(), &st) == 0 ? st.st_uid : static_cast<uid_t>(-1);
  }
  std::string owned_;
};

TEST_F(LedgerOwnershipTest, RootCreatesTheLedgerAndTheOwnerCanWriteIt) {
  std::string p = owned_ + "/spend.db";
  auto kmd = SpendLedger::open_as(p, kOwner, kOwner);
  ASSERT_TRUE(kmd) << kmd.error().to_string();
  Limits l;
  l.ai_micros = 5'000'000;
  ASSERT_TRUE((*kmd)->init_limits(l));
  for (const std::string& f : {p, p + "-wal", p + "-shm"}) EXPECT_EQ(owner_of(f), kOwner) << f;
  pid_t child = ::fork();
  if (child == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(kOwner) != 0 || ::setuid(kOwner) != 0) _exit(2);
    auto enforcer = SpendLedger::open(p);
    if (!enforcer) _exit(3);
    AiCall c;
    c.id = "c1";
    c.model = "m";
    auto total = (*enforcer)->record(c, {1, 1, 0, 0}, 1234);
    _exit(total && *total == 1234 ? 0 : 4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(*(*kmd)->ai_spent(), 1234);
  // The calling thread has root's filesystem identity again: a file no one may read opens.
  std::string closed = dir_ + "/closed";
  std::ofstream(closed) << "x";
  ::chmod(closed.c_str(), 0);
  int fd = ::open(closed.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0);
  if (fd >= 0) ::close(fd);
}

TEST_F(LedgerOwnershipTest, LinksPlantedByTheOwnerDoNotRedirectRootsWrites) {
  std::string victim = dir_ + "/victim";
  std::ofstream(victim) << "root's file\n";
  ::chmod(victim.c_str(), 0600);
  std::string p = owned_ + "/spend.db";
  // The ledger itself a link to an empty file of root's (an empty file is a valid empty
  // database, so following the link would write a ledger into it): refused.
  std::string empty = dir_ + "/empty";
  std::ofstream{empty};
  ASSERT_EQ(::symlink(empty.c_str(), p.c_str()), 0);
  EXPECT_FALSE(SpendLedger::open_as(p, kOwner, kOwner));
  struct stat est {};
  ASSERT_EQ(::stat(empty.c_str(), &est), 0);
  EXPECT_EQ(est.st_size, 0);
  ::unlink(p.c_str());
  // Its -wal and -shm links to root's file: whatever happens, root's file is untouched.
  {
    auto first = SpendLedger::open(p);  // a valid ledger, as the owner would make it
    ASSERT_TRUE(first);
  }
  ::chown(p.c_str(), kOwner, kOwner);
  ::unlink((p + "-wal").c_str());
  ::unlink((p + "-shm").c_str());
  ASSERT_EQ(::symlink(victim.c_str(), (p + "-wal").c_str()), 0);
  ASSERT_EQ(::symlink(victim.c_str(), (p + "-shm").c_str()), 0);
  auto kmd = SpendLedger::open_as(p, kOwner, kOwner);
  if (kmd) {
    Limits l;
    l.ai_micros = 1;
    (void)(*kmd)->init_limits(l);
    (void)(*kmd)->raise_limits(1, 1);
    kmd->reset();
  }
  std::ifstream in(victim);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "root's file\n");
  EXPECT_EQ(owner_of(victim), 0u);
}

}  // namespace
}  // namespace km::store
