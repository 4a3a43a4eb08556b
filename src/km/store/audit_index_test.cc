#include "km/store/audit_index.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

#include "km/store/store.h"

namespace km::store {
namespace {

class Index : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/km-index-test-XXXXXX";
    root_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { std::system(("rm -rf '" + root_ + "'").c_str()); }
  std::string root_;
};

TEST_F(Index, LivesInTheStoreBesideItsTablesAndFindsByTypeKindAndTime) {
  // The Store and the index share km.db, each with its own tables.
  auto store = Store::open(root_ + "/km.db");
  ASSERT_TRUE(store);
  auto x = AuditIndex::open(root_ + "/km.db");
  ASSERT_TRUE(x) << x.error().to_string();
  std::vector<AuditIndex::Row> rows;
  for (uint64_t i = 1; i <= 100; ++i) {
    std::string type = i % 3 == 0 ? "dns" : i % 3 == 1 ? "exec" : "net";
    std::string kind = type == "net" ? (i % 2 ? "connect" : "packet") : type;
    rows.push_back({i, static_cast<int64_t>(1000 * i), type, kind, TrailPosition{1, i * 100, 99}});
  }
  ASSERT_TRUE((*x)->add("sb-1", rows, {"/d", 100, "h100", R"({"events":100})"}));
  ASSERT_TRUE((*x)->add("sb-2", {rows[0]}, {"/e", 1, "h1", ""}));
  // Adding rows again is harmless (the index catching up after a crash).
  ASSERT_TRUE((*x)->add("sb-1", {rows[5]}, {"/d", 100, "h100", ""}));
  EXPECT_EQ(*(*x)->count("sb-1"), 100u);
  EXPECT_EQ(*(*x)->last_seq("sb-1"), 100u);
  EXPECT_EQ(*(*x)->last_seq("sb-3"), 0u);

  AuditIndex::Query q;
  q.types = {"dns"};
  q.limit = 5;
  auto newest = (*x)->find("sb-1", q);
  ASSERT_TRUE(newest);
  ASSERT_EQ(newest->size(), 5u);
  EXPECT_EQ(newest->front().seq, 87u);  // the newest five, oldest first
  EXPECT_EQ(newest->back().seq, 99u);
  q.since_ms = 90000;
  q.limit = 100;
  EXPECT_EQ((*x)->find("sb-1", q)->size(), 4u);  // 90, 93, 96, 99
  q = {};
  q.kinds = {"connect"};
  q.after_seq = 90;
  q.newest = false;
  auto after = (*x)->find("sb-1", q);
  ASSERT_TRUE(after);
  for (const auto& r : *after) {
    EXPECT_GT(r.seq, 90u);
    EXPECT_EQ(r.kind, "connect");
    EXPECT_EQ(r.at.offset, r.seq * 100);
  }
  q = {};
  q.types = {"exec", "dns"};
  q.limit = 1000;
  EXPECT_EQ((*x)->find("sb-1", q)->size(), 67u);
  auto t = (*x)->trail("sb-1");
  ASSERT_TRUE(t && *t);
  EXPECT_EQ((*t)->dir, "/d");
  EXPECT_EQ((*t)->seq, 100u);
  EXPECT_EQ((*t)->hash, "h100");
  ASSERT_TRUE((*x)->forget("sb-1"));
  EXPECT_EQ(*(*x)->count("sb-1"), 0u);
  EXPECT_FALSE(*(*x)->trail("sb-1"));
  EXPECT_EQ(*(*x)->count("sb-2"), 1u);
}

}  // namespace
}  // namespace km::store
