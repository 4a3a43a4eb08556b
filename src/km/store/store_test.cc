#include "km/store/store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <sqlite3.h>

#include <chrono>

namespace km::store {
namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/km-store-XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto s = Store::open(dir_ + "/km.db");
    ASSERT_TRUE(s) << s.error().to_string();
    store_ = std::move(*s);
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  Sandbox make(const std::string& id, const std::string& alias = "") {
    Sandbox s;
    s.id = id;
    s.alias = alias;
    s.profile_name = "p";
    s.profile_yaml = "y";
    s.created_at = 1000;
    auto r = store_->insert(s);
    EXPECT_TRUE(r) << (r ? "" : r.error().to_string());
    return r ? *r : s;
  }
  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, NumbersAndSlotsAreSmallestFreeAndStableWhileAlive) {
  EXPECT_EQ(make("sb-00000001").number, 1);
  EXPECT_EQ(make("sb-00000002").number, 2);
  Sandbox c = make("sb-00000003");
  EXPECT_EQ(c.number, 3);
  EXPECT_EQ(c.slot, 2);
  ASSERT_TRUE(*store_->transition("sb-00000002", {State::kStarting}, State::kDestroyed));
  Sandbox d = make("sb-00000004");
  EXPECT_EQ(d.number, 2);  // reused only after destroy
  EXPECT_EQ(d.slot, 1);
  EXPECT_EQ((*store_->get("sb-00000003"))->number, 3);
}

TEST_F(StoreTest, ReferencesResolveAliasThenIdThenNumber) {
  make("sb-00000001", "alpha");
  make("sb-00000002", "2");  // an alias that looks like a number wins over number 2
  EXPECT_EQ((*store_->resolve("alpha"))->id, "sb-00000001");
  EXPECT_EQ((*store_->resolve("sb-00000001"))->id, "sb-00000001");
  EXPECT_EQ((*store_->resolve("1"))->id, "sb-00000001");
  EXPECT_EQ((*store_->resolve("2"))->id, "sb-00000002");
  EXPECT_FALSE(*store_->resolve("nope"));
  EXPECT_FALSE(*store_->resolve("99999999999999999999"));
}

TEST_F(StoreTest, AliasIsUniqueAmongLiveSandboxes) {
  make("sb-00000001", "alpha");
  Sandbox s;
  s.id = "sb-00000002";
  s.alias = "alpha";
  s.profile_name = "p";
  s.profile_yaml = "y";
  auto r = store_->insert(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kAlreadyExists);
  ASSERT_TRUE(*store_->transition("sb-00000001", {State::kStarting}, State::kDestroyed));
  EXPECT_TRUE(store_->insert(s));
}

TEST_F(StoreTest, TransitionsAreConditional) {
  make("sb-00000001");
  EXPECT_TRUE(*store_->transition("sb-00000001", {State::kStarting}, State::kRunning));
  EXPECT_FALSE(*store_->transition("sb-00000001", {State::kStarting}, State::kFailed));
  EXPECT_EQ((*store_->get("sb-00000001"))->state, State::kRunning);
  EXPECT_TRUE(*store_->transition("sb-00000001", {State::kRunning, State::kPaused}, State::kFailed, "why"));
  EXPECT_EQ((*store_->get("sb-00000001"))->reason, "why");
}

TEST_F(StoreTest, ReopenKeepsDataAndSchemaVersion) {
  make("sb-00000001", "a");
  store_.reset();
  auto s = Store::open(dir_ + "/km.db");
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)->schema_version(), 2);
  EXPECT_EQ((*(*s)->get("sb-00000001"))->alias, "a");
}

TEST_F(StoreTest, ThousandsOfRecordsInsertAndList) {
  for (int i = 0; i < 3000; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "sb-%08x", i);
    Sandbox s;
    s.id = id;
    s.profile_name = "p";
    s.profile_yaml = std::string(200, 'y');
    ASSERT_TRUE(store_->insert(s));
  }
  auto all = store_->list();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 3000u);
  EXPECT_EQ(all->back().number, 3000);
  // Listings leave the profile out; a single record has it.
  EXPECT_TRUE(all->back().profile_yaml.empty());
  EXPECT_EQ((*store_->get(all->back().id))->profile_yaml, std::string(200, 'y'));
}

TEST_F(StoreTest, RunningTimeExcludesStartingPausedAndStoppedTime) {
  int64_t now = 1000;
  store_->set_clock([&now] { return now; });
  make("sb-00000001");
  auto at = [&](int64_t t, std::initializer_list<State> from, State to) {
    now = t;
    EXPECT_TRUE(*store_->transition("sb-00000001", from, to));
    return **store_->get("sb-00000001");
  };
  Sandbox s = at(1010, {State::kStarting}, State::kRunning);
  EXPECT_EQ(s.running_seconds, 0);
  EXPECT_EQ(s.running_since, 1010);
  s = at(1070, {State::kRunning}, State::kPaused);
  EXPECT_EQ(s.running_seconds, 60);
  EXPECT_EQ(s.running_since, 0);
  s = at(1100, {State::kPaused}, State::kRunning);
  EXPECT_EQ(s.running_since, 1100);
  // A transition that stays in running keeps the open interval's start.
  s = at(1110, {State::kRunning}, State::kRunning);
  EXPECT_EQ(s.running_since, 1100);
  s = at(1130, {State::kRunning}, State::kStopped);
  EXPECT_EQ(s.running_seconds, 90);
  EXPECT_EQ(s.running_since, 0);
  // A refused transition changes nothing.
  now = 1500;
  EXPECT_FALSE(*store_->transition("sb-00000001", {State::kPaused}, State::kRunning));
  EXPECT_EQ((*store_->get("sb-00000001"))->running_seconds, 90);
  s = at(2000, {State::kStopped}, State::kRunning);
  EXPECT_EQ(s.running_since, 2000);
  // The record survives a restart as it is (nothing accumulates per tick).
  store_.reset();
  auto reopened = Store::open(dir_ + "/km.db");
  ASSERT_TRUE(reopened);
  s = **(*reopened)->get("sb-00000001");
  EXPECT_EQ(s.running_seconds, 90);
  EXPECT_EQ(s.running_since, 2000);
  s = (*reopened)->list()->at(0);
  EXPECT_EQ(s.running_seconds, 90);
  EXPECT_EQ(s.running_since, 2000);
}

TEST_F(StoreTest, UpgradeFromSchemaOneStartsCountingRunningSandboxes) {
  store_.reset();
  std::string path = dir_ + "/old.db";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const char* v1 =
      "CREATE TABLE sandboxes ("
      "  id TEXT PRIMARY KEY, alias TEXT, number INTEGER NOT NULL, slot INTEGER NOT NULL,"
      "  profile_name TEXT NOT NULL, profile_yaml TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',"
      "  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL DEFAULT 0, idle_timeout INTEGER NOT NULL DEFAULT 0,"
      "  max_lifetime INTEGER NOT NULL DEFAULT 0, teardown_policy TEXT NOT NULL DEFAULT 'destroy',"
      "  locked INTEGER NOT NULL DEFAULT 0, last_activity INTEGER NOT NULL DEFAULT 0,"
      "  ttl_warned INTEGER NOT NULL DEFAULT 0, idle_warned INTEGER NOT NULL DEFAULT 0,"
      "  pid INTEGER NOT NULL DEFAULT 0, pid_start INTEGER NOT NULL DEFAULT 0, cloned_from TEXT NOT NULL DEFAULT '');"
      "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, sandbox TEXT NOT NULL, ts INTEGER NOT NULL,"
      "  type TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}');"
      "INSERT INTO sandboxes (id, number, slot, profile_name, profile_yaml, state, created_at) VALUES"
      "  ('sb-00000001', 1, 0, 'p', 'y', 'running', 1), ('sb-00000002', 2, 1, 'p', 'y', 'stopped', 1);"
      "PRAGMA user_version = 1;";
  ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
  int64_t before = static_cast<int64_t>(std::time(nullptr));
  auto s = Store::open(path);
  ASSERT_TRUE(s) << s.error().to_string();
  EXPECT_EQ((*s)->schema_version(), 2);
  Sandbox running = **(*s)->get("sb-00000001");
  EXPECT_GE(running.running_since, before);
  EXPECT_EQ(running.running_seconds, 0);
  EXPECT_EQ((*(*s)->get("sb-00000002"))->running_since, 0);
}

}  // namespace
}  // namespace km::store
