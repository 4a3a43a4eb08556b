#include "km/store/store.h"

#include <gtest/gtest.h>
#include <unistd.h>

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
  EXPECT_EQ((*s)->schema_version(), 1);
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

}  // namespace
}  // namespace km::store
