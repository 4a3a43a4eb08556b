#include "km/store/trail.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "km/base/file.h"

namespace km::store {
namespace {

using Json = nlohmann::json;

class Trail : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/km-trail-test-XXXXXX";
    root_ = ::mkdtemp(tmpl);
    dir_ = root_ + "/sandboxes/sb-1/audit";
  }
  void TearDown() override { std::system(("rm -rf '" + root_ + "'").c_str()); }

  static audit::Event event(int i, size_t pad = 0) {
    return audit::Event{1795500000000 + i, "kernel", "exec", Json{{"n", i}, {"pad", std::string(pad, 'p')}}};
  }
  std::vector<std::string> lines() {
    std::vector<std::string> out;
    EXPECT_TRUE(scan_trail(dir_, [&](const TrailFile&, uint64_t, std::string_view l) {
      out.emplace_back(l);
      return true;
    }));
    return out;
  }
  std::string verify() {
    audit::ChainVerifier v("sb-1");
    for (const auto& l : lines()) v.feed(l, "x");
    return v.problem() ? v.problem()->reason : "intact " + std::to_string(v.events());
  }

  std::string root_, dir_;
};

TEST_F(Trail, AppendsSealedEventsAndReopensAtItsHead) {
  {
    auto w = TrailWriter::open(dir_, "sb-1");
    ASSERT_TRUE(w) << w.error().to_string();
    auto a = (*w)->append({event(1), event(2)});
    ASSERT_TRUE(a);
    EXPECT_EQ((*a)[0].seq, 1u);
    EXPECT_EQ((*a)[1].seq, 2u);
    EXPECT_EQ((*a)[0].at.offset, 0u);
    EXPECT_EQ((*a)[1].at.offset, (*a)[0].at.length + 1u);
  }
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/events-1.jsonl").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto w = TrailWriter::open(dir_, "sb-1");
  ASSERT_TRUE(w);
  EXPECT_EQ((*w)->chain().last_seq(), 2u);
  EXPECT_TRUE((*w)->recovery().empty());
  ASSERT_TRUE((*w)->append({event(3)}));
  EXPECT_EQ(verify(), "intact 3");
}

TEST_F(Trail, RotatesAtTheSizeAndCompressedFilesReadTheSame) {
  auto w = TrailWriter::open(dir_, "sb-1", TrailWriter::Options{4096});
  ASSERT_TRUE(w);
  std::vector<TrailWriter::Appended> all;
  for (int i = 0; i < 40; ++i) {
    auto a = (*w)->append({event(i, 300)});
    ASSERT_TRUE(a);
    all.push_back((*a)[0]);
  }
  EXPECT_GT((*w)->file_number(), 2u);
  auto rotated = (*w)->take_rotated();
  ASSERT_EQ(rotated.size(), (*w)->file_number() - 1);
  EXPECT_TRUE((*w)->take_rotated().empty());
  // Positions read back the same lines before and after compression.
  std::vector<TrailPosition> at;
  for (const auto& a : all) at.push_back(a.at);
  auto before = read_trail_lines(dir_, at);
  ASSERT_TRUE(before) << before.error().to_string();
  for (const auto& path : rotated) ASSERT_TRUE(compress_trail_file(path));
  for (const auto& path : rotated) {
    EXPECT_NE(::access(path.c_str(), F_OK), 0);
    EXPECT_EQ(::access((path + ".gz").c_str(), F_OK), 0);
  }
  auto after = read_trail_lines(dir_, at);
  ASSERT_TRUE(after) << after.error().to_string();
  EXPECT_EQ(*before, *after);
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(Json::parse((*after)[i])["seq"], all[i].seq);
  EXPECT_EQ(verify(), "intact 40");
  // The compressed files are real gzip.
  gzFile gz = gzopen((rotated[0] + ".gz").c_str(), "rb");
  ASSERT_NE(gz, nullptr);
  EXPECT_TRUE(gzdirect(gz) == 0);
  gzclose(gz);
  // Reopened after rotation, it goes on where it was.
  w->reset();
  auto again = TrailWriter::open(dir_, "sb-1", TrailWriter::Options{4096});
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)->chain().last_seq(), 40u);
  EXPECT_TRUE((*again)->take_rotated().empty());
}

TEST_F(Trail, AFileLeftPlainByACrashIsCompressedLaterAndHalfMadeGzipsGo) {
  {
    auto w = TrailWriter::open(dir_, "sb-1", TrailWriter::Options{1024});
    ASSERT_TRUE(w);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE((*w)->append({event(i, 200)}));
  }
  std::ofstream(dir_ + "/events-1.jsonl.gz.tmp") << "half";
  auto w = TrailWriter::open(dir_, "sb-1", TrailWriter::Options{1024});
  ASSERT_TRUE(w);
  EXPECT_NE(::access((dir_ + "/events-1.jsonl.gz.tmp").c_str(), F_OK), 0);
  auto rotated = (*w)->take_rotated();
  EXPECT_FALSE(rotated.empty());
  EXPECT_EQ(rotated[0], dir_ + "/events-1.jsonl");
}

TEST_F(Trail, ATornLastLineIsCutOffAndSaid) {
  {
    auto w = TrailWriter::open(dir_, "sb-1");
    ASSERT_TRUE(w);
    ASSERT_TRUE((*w)->append({event(1), event(2)}));
  }
  {
    std::ofstream f(dir_ + "/events-1.jsonl", std::ios::app);
    f << "{\"detail\":{\"n\":3},\"hash\":\"ab";  // a crash in the middle of a write
  }
  auto w = TrailWriter::open(dir_, "sb-1");
  ASSERT_TRUE(w);
  EXPECT_EQ((*w)->chain().last_seq(), 2u);
  EXPECT_NE((*w)->recovery().find("torn last line of 28 bytes"), std::string::npos) << (*w)->recovery();
  ASSERT_TRUE((*w)->append({event(3)}));
  EXPECT_EQ(verify(), "intact 3");
}

TEST_F(Trail, AFailedWriteLeavesNothingAndTheChainUnchanged) {
  auto w = TrailWriter::open(dir_, "sb-1");
  ASSERT_TRUE(w);
  ASSERT_TRUE((*w)->append({event(1)}));
  uint64_t size = (*w)->file_size();
  // A disk that takes only part of a batch: a file size limit 100 bytes further on (the
  // write fails with EFBIG once part of it went in).
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit tight{static_cast<rlim_t>(size + 100), saved.rlim_max};
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &tight), 0);
  auto a = (*w)->append({event(2, 500), event(3, 500)});
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_FALSE(a);
  EXPECT_EQ((*w)->chain().last_seq(), 1u);
  EXPECT_EQ((*w)->file_size(), size);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ + "/events-1.jsonl").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), size);  // cut back: no half line
  ASSERT_TRUE((*w)->append({event(2)}));
  EXPECT_EQ(verify(), "intact 2");
}

TEST_F(Trail, MovesWithItsFilesAndGoesOnThere) {
  auto w = TrailWriter::open(dir_, "sb-1", TrailWriter::Options{1024});
  ASSERT_TRUE(w);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*w)->append({event(i, 200)}));
  std::string to = root_ + "/artifacts/sb-1/audit";
  ASSERT_TRUE((*w)->move_to(to));
  EXPECT_TRUE(trail_files(dir_).empty());
  ASSERT_TRUE((*w)->append({event(10)}));
  for (const auto& r : (*w)->take_rotated()) EXPECT_EQ(r.rfind(to, 0), 0u) << r;
  dir_ = to;
  EXPECT_EQ(verify(), "intact 11");
}

TEST_F(Trail, AMoveThatFailsLeavesTheTrailWholeAndWritableWhereItWas) {
  auto w = TrailWriter::open(dir_, "sb-1", TrailWriter::Options{1024});
  ASSERT_TRUE(w);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*w)->append({event(i, 200)}));
  size_t files = trail_files(dir_).size();
  ASSERT_GE(files, 3u);
  std::string to = root_ + "/artifacts/sb-1/audit";
  // A directory where the third file would go: its rename fails after two have moved.
  ASSERT_EQ(::system(("mkdir -p '" + to + "/events-3.jsonl'").c_str()), 0);
  EXPECT_FALSE((*w)->move_to(to));
  EXPECT_EQ(trail_files(dir_).size(), files);
  auto left = trail_files(to);  // only the directory that stopped the move
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].number, 3u);
  EXPECT_EQ((*w)->dir(), dir_);
  ASSERT_TRUE((*w)->append({event(10)}));
  EXPECT_EQ(verify(), "intact 11");
}

TEST_F(Trail, FileNamesAreStrict) {
  ASSERT_EQ(::system(("mkdir -p '" + dir_ + "'").c_str()), 0);
  for (const char* name : {"events-1.jsonl", "events-2.jsonl.gz", "events-2.jsonl", "events-01.jsonl", "events-x.jsonl",
                           "events-3.jsonl.gz.tmp", "exec.jsonl", "events-4.json"}) {
    std::ofstream(dir_ + "/" + name) << "";
  }
  auto files = trail_files(dir_);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].number, 1u);
  EXPECT_EQ(files[1].number, 2u);
  EXPECT_FALSE(files[1].compressed);  // both forms: the plain one (compression under way)
}

}  // namespace
}  // namespace km::store
