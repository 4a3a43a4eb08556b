#include "km/base/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace km::log {
namespace {

TEST(Log, LineIsOneJsonObjectWithEnvelope) {
  Logger lg("kmd");
  std::string line = lg.format(Level::kWarn, "sandbox paused", {{"reason", "idle"}}, "sb-1a2b3c4d");
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["level"], "warn");
  EXPECT_EQ(j["component"], "kmd");
  EXPECT_EQ(j["sandbox"], "sb-1a2b3c4d");
  EXPECT_EQ(j["msg"], "sandbox paused");
  EXPECT_EQ(j["reason"], "idle");
  std::string ts = j["ts"];
  EXPECT_EQ(ts.size(), 24u);
  EXPECT_EQ(ts.back(), 'Z');
}

TEST(Log, FieldsCannotOverwriteEnvelopeAndBadUtf8IsReplaced) {
  Logger lg("x");
  std::string line = lg.format(Level::kInfo, "bad \xff name\nnext", {{"level", "error"}}, "");
  EXPECT_EQ(line.find('\n'), line.size() - 1);  // embedded newline escaped
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["field.level"], "error");
  EXPECT_FALSE(j.contains("sandbox"));
}

TEST(Log, WritesToFdAndFiltersByLevel) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  {
    Logger lg("t", fds[1]);
    lg.debug("hidden");
    lg.info("shown");
  }
  close(fds[1]);
  char buf[512];
  ssize_t n = read(fds[0], buf, sizeof buf);
  close(fds[0]);
  ASSERT_GT(n, 0);
  std::string out(buf, static_cast<size_t>(n));
  EXPECT_EQ(out.find("hidden"), std::string::npos);
  EXPECT_NE(out.find("shown"), std::string::npos);
}

TEST(Log, ParseLevel) {
  Level l{};
  EXPECT_TRUE(parse_level("error", &l));
  EXPECT_EQ(l, Level::kError);
  EXPECT_FALSE(parse_level("loud", &l));
}

}  // namespace
}  // namespace km::log
