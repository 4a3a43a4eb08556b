#include "km/profile/checks.h"

#include <gtest/gtest.h>

namespace km::profile::checks {
namespace {

TEST(Checks, ByteSizes) {
  EXPECT_EQ(parse_byte_size("512Mi").value(), 512ull << 20);
  EXPECT_EQ(parse_byte_size("4Gi").value(), 4ull << 30);
  EXPECT_EQ(parse_byte_size("1G").value(), 1000000000ull);
  EXPECT_EQ(parse_byte_size("1048576").value(), 1048576ull);
  for (const char* bad : {"", "Gi", "1GB", "1.5Gi", "-1Mi", "99999999999999999999Ti", "1 Gi"}) {
    EXPECT_FALSE(parse_byte_size(bad)) << bad;
  }
}

TEST(Checks, Prefix) {
  EXPECT_FALSE(id_prefix("sb"));
  EXPECT_FALSE(id_prefix("abcdefghijkl"));
  EXPECT_TRUE(id_prefix("abcdefghijklm"));
  EXPECT_TRUE(id_prefix("1a"));
  EXPECT_TRUE(id_prefix("a-b"));
  EXPECT_TRUE(id_prefix(""));
}

TEST(Checks, Senders) {
  for (const char* ok : {"self", "*", "sb-1a2b3c4d", "team.bot", "build.*"}) EXPECT_FALSE(email_sender(ok)) << ok;
  for (const char* bad : {"sb-1A2B3C4D", "sb-1a2b3c4", "team", "Team.bot", "a.b.c", "*.bot"}) EXPECT_TRUE(email_sender(bad)) << bad;
}

TEST(Checks, Regions) {
  for (const char* ok : {"us-east-1", "ap-southeast-2", "us-gov-west-1", "ca-central-1"}) EXPECT_FALSE(aws_region(ok)) << ok;
  for (const char* bad : {"us-east", "US-EAST-1", "useast1", "us--1"}) EXPECT_TRUE(aws_region(bad)) << bad;
  EXPECT_FALSE(aws_az("us-east-1a"));
  EXPECT_TRUE(aws_az("us-east-1"));
}

TEST(Checks, ReposAndRefs) {
  for (const char* ok : {"a/b", "a/*", "*", "github.com/a/b", "my-org/repo.name_x"}) EXPECT_FALSE(github_repo(ok)) << ok;
  for (const char* bad : {"a", "/b", "a/", "a/b/c", "-a/b", "a/..", "a b/c"}) EXPECT_TRUE(github_repo(bad)) << bad;
  for (const char* ok : {"main", "feature/*", "release-[0-9]*"}) EXPECT_FALSE(git_ref_glob(ok)) << ok;
  for (const char* bad : {"", "a b", "a..b", "a~1", "a^", "a:b", "a@{1}"}) EXPECT_TRUE(git_ref_glob(bad)) << bad;
}

TEST(Checks, Paths) {
  EXPECT_FALSE(sandbox_path("~"));
  EXPECT_FALSE(sandbox_path("~/x"));
  EXPECT_FALSE(sandbox_path("/x/y"));
  EXPECT_TRUE(sandbox_path("~x"));
  EXPECT_TRUE(sandbox_path("x"));
  EXPECT_TRUE(sandbox_path("/a/../b"));
  EXPECT_TRUE(sandbox_path("/a/*"));
  EXPECT_FALSE(sandbox_path_glob("/a/**/b"));
  EXPECT_TRUE(config_file_path("~"));
  EXPECT_TRUE(config_file_path("/etc/"));
}

TEST(Checks, Misc) {
  EXPECT_FALSE(ami("ami-0123456789abcdef0"));
  EXPECT_TRUE(ami("ami-xyz"));
  EXPECT_FALSE(snapshot_id("snap-0123456789abcdef0"));
  EXPECT_FALSE(ebs_device("/dev/sdp"));
  EXPECT_TRUE(ebs_device("/dev/sdq"));
  EXPECT_FALSE(slack_channel_id("C0123ABCD"));
  EXPECT_TRUE(slack_channel_id("c0123"));
  EXPECT_FALSE(geometry("1600x900"));
  EXPECT_TRUE(geometry("1600x"));
  EXPECT_FALSE(url("https://x"));
  EXPECT_TRUE(url("ftp://x"));
  EXPECT_FALSE(image("host"));
  EXPECT_FALSE(image("/srv/rootfs"));
  EXPECT_TRUE(image("ubuntu:24.04"));
  EXPECT_FALSE(email_address("a@b.io"));
  EXPECT_TRUE(email_address("a@b"));
  EXPECT_FALSE(user_name("sandbox"));
  EXPECT_TRUE(user_name("root"));
  EXPECT_TRUE(user_name("Bob"));
  EXPECT_FALSE(profile_name("base/os/debian"));
  EXPECT_TRUE(profile_name("has space"));
}

}  // namespace
}  // namespace km::profile::checks
