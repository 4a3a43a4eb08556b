#include "km/proxy/github_policy.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace km::proxy::github {
namespace {

using namespace std::string_literals;

Policy make(std::vector<std::string> repos, std::optional<std::vector<std::string>> refs = std::nullopt) {
  auto p = Policy::compile(repos, refs);
  EXPECT_TRUE(p) << p.error().to_string();
  return p ? *p : Policy{};
}

// --- Policy::compile ---------------------------------------------------------------------------

TEST(GithubPolicy, CompileNormalisesRepoEntries) {
  Policy p = make({"github.com/Acme/Widget.git", "Friends/*", "acme/widget", "acme/.github", "*"});
  EXPECT_EQ(p.allowed_repos, (std::vector<std::string>{"acme/widget", "friends/*", "acme/.github", "*"}));
  EXPECT_FALSE(p.allowed_refs);
  EXPECT_TRUE(p.allows_any_repo());
}

TEST(GithubPolicy, CompileRefusesBadRepoEntries) {
  for (const char* bad : {"", "acme", "acme/", "a/b/c", "-acme/x", "acme/.git", "acme/x y", "*/x", "acme/..",
                          "acme_corp/x", "github.com/", "acme/x%2f", "https://github.com/acme/x"}) {
    auto p = Policy::compile({bad}, std::nullopt);
    ASSERT_FALSE(p) << bad;
    EXPECT_NE(p.error().to_string().find("allowedRepos"), std::string::npos) << p.error().to_string();
  }
}

TEST(GithubPolicy, CompileNormalisesRefGlobs) {
  Policy p = make({"acme/widget"}, std::vector<std::string>{"main", "feature/*", "refs/tags/v*", "release/**", "main"});
  ASSERT_TRUE(p.allowed_refs);
  EXPECT_EQ(*p.allowed_refs, (std::vector<std::string>{"refs/heads/main", "refs/heads/feature/*", "refs/tags/v*",
                                                       "refs/heads/release/**"}));
  for (const char* bad : {"", "a..b", "a b", "x?", "[ab]", "a***", "/main", "main/", "a//b", "x.lock", "refs/", ".hidden",
                          "a:b", "a~1", "a^", "a\\b", "a\tb", "refs/heads/x."}) {
    auto r = Policy::compile({"acme/widget"}, std::vector<std::string>{bad});
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().to_string().find("allowedRefs"), std::string::npos) << r.error().to_string();
  }
}

TEST(GithubPolicy, RepoMatchingIsExactOwnerWildcardOrStar) {
  Policy p = make({"acme/widget", "friends/*"});
  EXPECT_EQ(*p.allowing_repo("acme/widget"), "acme/widget");
  EXPECT_EQ(*p.allowing_repo("friends/anything"), "friends/*");
  EXPECT_EQ(p.allowing_repo("acme/widget2"), nullptr);
  EXPECT_EQ(p.allowing_repo("acme/widge"), nullptr);
  EXPECT_EQ(p.allowing_repo("friendsx/a"), nullptr);
  EXPECT_EQ(p.allowing_repo("friend/a"), nullptr);
  EXPECT_EQ(p.allowing_repo("acme"), nullptr);
  EXPECT_EQ(*make({"*"}).allowing_repo("any/thing"), "*");
}

TEST(GithubPolicy, RefGlobsMatchSegmentsAndAcrossSegments) {
  Policy p = make({"acme/widget"}, std::vector<std::string>{"main", "feature/*", "release/**", "refs/tags/v*", "wip-*-x"});
  struct Case {
    const char* ref;
    const char* pattern;  // nullptr: refused
  } cases[] = {
      {"refs/heads/main", "refs/heads/main"},
      {"refs/heads/Main", nullptr},  // ref names are case-sensitive
      {"refs/heads/main2", nullptr},
      {"refs/heads/feature/a", "refs/heads/feature/*"},
      {"refs/heads/feature/a/b", nullptr},  // * stays inside one segment
      {"refs/heads/feature", nullptr},
      {"refs/heads/release/1", "refs/heads/release/**"},
      {"refs/heads/release/1/2/3", "refs/heads/release/**"},
      {"refs/heads/releases/1", nullptr},
      {"refs/tags/v1.2.3", "refs/tags/v*"},
      {"refs/tags/x1", nullptr},
      {"refs/heads/v1", nullptr},
      {"refs/heads/wip-abc-x", "refs/heads/wip-*-x"},
      {"refs/heads/wip--x", "refs/heads/wip-*-x"},
      {"refs/heads/wip-a/b-x", nullptr},
      {"refs/remotes/origin/main", nullptr},
  };
  for (const auto& c : cases) {
    const std::string* got = p.allowing_ref(c.ref);
    if (c.pattern == nullptr) {
      EXPECT_EQ(got, nullptr) << c.ref << " matched " << *got;
    } else {
      ASSERT_NE(got, nullptr) << c.ref;
      EXPECT_EQ(*got, c.pattern) << c.ref;
    }
  }
  EXPECT_EQ(make({"acme/widget"}).allowing_ref("refs/heads/main"), nullptr);  // no allowedRefs: callers check
  EXPECT_NE(make({"a/b"}, std::vector<std::string>{"refs/**"}).allowing_ref("refs/anything/at/all"), nullptr);
}

// --- Hosts -------------------------------------------------------------------------------------

TEST(GithubPolicy, GithubHostsAreEveryNameUnderGithubDomains) {
  for (const char* h : {"github.com", "www.github.com", "api.github.com", "codeload.github.com", "uploads.github.com",
                        "gist.github.com", "raw.githubusercontent.com", "objects.githubusercontent.com",
                        "release-assets.githubusercontent.com", "gist.githubusercontent.com", "pkg.github.com",
                        "avatars.githubusercontent.com", "GitHub.COM", "github.com.", "api.github.com:443",
                        "githubusercontent.com"}) {
    EXPECT_TRUE(is_github_host(h)) << h;
  }
  for (const char* h : {"", "example.com", "github.com.evil.com", "notgithub.com", "github.io", "evilgithub.com",
                        "githubusercontent.com.evil", "140.82.112.3", "[::1]", "github.com:x", "github.com:"}) {
    EXPECT_FALSE(is_github_host(h)) << h;
  }
}

// --- check_request: one table per policy ---------------------------------------------------------

struct Case {
  const char* host;
  const char* method;
  std::string target;
  bool allowed;
  const char* rule;
  const char* repo = "";
  PushBody push = PushBody::kNone;
};

void run(const Policy& p, const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.host) + " " + c.method + " " + c.target);
    Verdict v = check_request(p, c.host, c.method, c.target);
    EXPECT_EQ(v.allowed, c.allowed) << v.rule << ": " << v.reason;
    EXPECT_EQ(v.rule, c.rule) << v.reason;
    EXPECT_EQ(v.repo, c.repo);
    EXPECT_EQ(v.push_body, c.push);
    EXPECT_EQ(v.push, c.push != PushBody::kNone);
    if (!v.allowed) {
      EXPECT_FALSE(v.reason.empty());
      EXPECT_EQ(v.reason.find("secret"), std::string::npos) << "the query leaked into the reason";
    }
  }
}

constexpr const char* kWidget = "acme/widget";
constexpr const char* kAllowWidget = "allowedRepos: acme/widget";

TEST(GithubPolicy, GithubComRepoPathsAndBypassAttempts) {
  Policy p = make({"acme/widget", "github.com/acme/tools.git", "friends/*"});
  auto rp = PushBody::kReceivePack;
  run(p, {
             {"github.com", "GET", "/acme/widget", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/ACME/Widget", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/widget.git/info/refs?service=git-upload-pack", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/widget.GIT/info/refs?service=git-receive-pack", true, kAllowWidget, kWidget},
             {"github.com", "POST", "/acme/widget.git/git-upload-pack", true, kAllowWidget, kWidget},
             {"github.com", "POST", "/acme/widget.git/git-receive-pack", true, kAllowWidget, kWidget, rp},
             {"github.com", "POST", "/acme/widget/GIT-RECEIVE-PACK", true, kAllowWidget, kWidget, rp},
             {"github.com", "POST", "/acme/widget.git/git-receive-pack/", true, kAllowWidget, kWidget, rp},
             {"github.com", "POST", "//acme//widget.git//git-receive-pack", true, kAllowWidget, kWidget, rp},
             {"github.com", "POST", "/acme/widget.git/git%2Dreceive-pack", true, kAllowWidget, kWidget, rp},
             {"github.com", "POST", "/acme/widget.git/x/git-receive-pack", false, "malformed-path", kWidget},
             {"github.com", "POST", "/acme/widget.git/git-receive-pack;x", false, "malformed-path", kWidget},
             {"github.com", "PUT", "/acme/widget.git/git-receive-pack", false, "malformed-path", kWidget},
             {"github.com", "POST", "/acme/widget.git/info/lfs/objects/batch", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/widget/archive/refs/heads/main.tar.gz", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/widget/releases/download/v1/x.tgz", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/widget/raw/main/README.md", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/widget/blob/main/builtin/receive-pack.c", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/widget/blob/main/dir%2Ffile.c", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/widget?return_to=/evil/repo&secret=1", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/widget/", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/widget//", true, kAllowWidget, kWidget},
             {"github.com", "GET", "/acme/tools.git", true, "allowedRepos: acme/tools", "acme/tools"},
             {"github.com", "GET", "/Friends/Anything/pulls", true, "allowedRepos: friends/*", "friends/anything"},
             {"github.com", "GET", "/%61cme/%57idget", true, kAllowWidget, kWidget},
             // Other repositories, however spelled.
             {"github.com", "GET", "/evil/repo", false, "repo-not-allowed", "evil/repo"},
             {"github.com", "GET", "//evil//repo", false, "repo-not-allowed", "evil/repo"},
             {"github.com", "POST", "/evil/repo.git/git-receive-pack", false, "repo-not-allowed", "evil/repo"},
             {"github.com", "GET", "/friendsx/a", false, "repo-not-allowed", "friendsx/a"},
             {"github.com", "GET", "/acme/widget2", false, "repo-not-allowed", "acme/widget2"},
             {"github.com", "GET", "/acme/widget.wiki.git", false, "repo-not-allowed", "acme/widget.wiki"},
             {"github.com", "GET", "/acme_corp/widget", false, "repo-not-allowed", "acme_corp/widget"},
             // Paths that a server could read as another repository.
             {"github.com", "GET", "/acme/widget/../../evil/repo", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget/./x", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget/%2e%2e/%2E%2E/evil/repo", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget/.%2e/x", false, "malformed-path"},
             {"github.com", "GET", "/acme%2Fwidget/x", false, "malformed-path", kWidget},
             {"github.com", "GET", "/acme/widget%2F..%2F..%2Fevil%2Frepo", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget/tree/a%2F%2Fb", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget/tree/feature%2Fx", false, "malformed-path", kWidget},
             {"github.com", "GET", "/acme%5Cwidget", false, "malformed-path"},
             {"github.com", "GET", "/acme\\widget", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget%00", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget%0a", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget%zz", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget%2", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget/%252e%252e/x", false, "malformed-path"},
             {"github.com", "GET", "/acme/widget#x", false, "malformed-path"},
             {"github.com", "GET", "/acme/wid get", false, "malformed-path"},
             {"github.com", "GET", "/acme/widg\xc3\xa9t", false, "malformed-path"},
             {"github.com", "GET", "/acme/wid@get", false, "malformed-path"},
             {"github.com", "GET", "/acme/.git", false, "malformed-path"},
             {"github.com", "GET", "https://github.com/acme/widget", false, "malformed-path"},
             {"github.com", "GET", "*", false, "malformed-path"},
             {"github.com", "GET", "", false, "malformed-path"},
             // Not repositories.
             {"github.com", "GET", "/", false, "not-repo-scoped"},
             {"github.com", "GET", "/acme", false, "not-repo-scoped"},
             {"github.com", "GET", "/settings/tokens", false, "not-repo-scoped"},
             {"github.com", "GET", "/Settings/tokens", false, "not-repo-scoped"},
             {"github.com", "GET", "/orgs/acme/repositories", false, "not-repo-scoped"},
             {"github.com", "POST", "/new", false, "not-repo-scoped"},
             {"github.com", "GET", "/login", false, "not-repo-scoped"},
             {"github.com", "GET", "/login/device/code", false, "not-repo-scoped"},
             {"github.com", "GET", "/favicon.ico", false, "not-repo-scoped"},
             {"github.com", "POST", "/login/device/code", true, "non-repo-endpoint"},
             {"github.com", "POST", "/login/oauth/access_token", true, "non-repo-endpoint"},
             // Host spellings and methods.
             {"www.github.com", "GET", "/acme/widget", true, kAllowWidget, kWidget},
             {"GitHub.COM.", "GET", "/acme/widget", true, kAllowWidget, kWidget},
             {"github.com:443", "GET", "/evil/repo", false, "repo-not-allowed", "evil/repo"},
             {"github.com", "get", "/acme/widget", false, "method-not-allowed"},
             {"github.com", "CONNECT", "/acme/widget", false, "method-not-allowed"},
             {"github.com", "OPTIONS", "/acme/widget", false, "method-not-allowed"},
             {"github.com", "TRACE", "/acme/widget", false, "method-not-allowed"},
         });
}

TEST(GithubPolicy, ApiRepoScopedRequests) {
  Policy p = make({"acme/widget"});
  auto cr = PushBody::kCreateRef;
  run(p, {
             {"api.github.com", "GET", "/repos/acme/widget", true, kAllowWidget, kWidget},
             {"api.github.com", "GET", "/REPOS/Acme/Widget/pulls?state=open", true, kAllowWidget, kWidget},
             {"api.github.com", "GET", "/repos//acme//widget", true, kAllowWidget, kWidget},
             {"api.github.com", "GET", "/repos/acme/widget.git/issues", true, kAllowWidget, kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/issues", true, kAllowWidget, kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/pulls", true, kAllowWidget, kWidget},
             {"api.github.com", "PUT", "/repos/acme/widget/contents/README.md", true, kAllowWidget, kWidget},
             {"api.github.com", "GET", "/repos/acme/widget/contents/dir%2Ffile", true, kAllowWidget, kWidget},
             {"api.github.com", "GET", "/repos/acme/widget/hooks", true, kAllowWidget, kWidget},
             {"api.github.com", "GET", "/repos/acme/widget/forks", true, kAllowWidget, kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/git/refs", true, kAllowWidget, kWidget, cr},
             {"api.github.com", "POST", "/repos/acme/widget/git/trees", true, kAllowWidget, kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/git/refs/heads/main", true, kAllowWidget, kWidget},
             {"api.github.com", "DELETE", "/repos/acme/widget/git/refs/heads/x.lock", false, "malformed-path", kWidget},
             {"api.github.com", "GET", "/repos/evil/repo", false, "repo-not-allowed", "evil/repo"},
             {"api.github.com", "GET", "/repos/evil/repo/contents/a%2Fb", false, "repo-not-allowed", "evil/repo"},
             {"api.github.com", "GET", "/repos/acme%2Fwidget", false, "malformed-path", kWidget},
             {"api.github.com", "GET", "/repos/acme/widget/../../evil/repo", false, "malformed-path"},
             {"api.github.com", "GET", "/repos/acme/widget/%2e%2e/%2e%2e/evil/repo", false, "malformed-path"},
             {"api.github.com", "GET", "/repos/acme", false, "not-repo-scoped"},
             {"api.github.com", "GET", "/repos;x/evil/repo", false, "not-repo-scoped"},
             // Endpoints that can name or create any repository.
             {"api.github.com", "POST", "/graphql", false, "graphql"},
             {"api.github.com", "GET", "/graphql", false, "graphql"},
             {"api.github.com", "GET", "/repositories/123456", false, "repository-by-id"},
             {"api.github.com", "PATCH", "/repositories/123456/git/refs/heads/main", false, "repository-by-id"},
             {"api.github.com", "GET", "/search/code?q=secret", false, "not-repo-scoped"},
             {"api.github.com", "POST", "/user/repos", false, "not-repo-scoped"},
             {"api.github.com", "POST", "/orgs/acme/repos", false, "not-repo-scoped"},
             {"api.github.com", "GET", "/users/acme/repos", false, "not-repo-scoped"},
             {"api.github.com", "POST", "/gists", false, "not-repo-scoped"},
             {"api.github.com", "POST", "/user/keys", false, "not-repo-scoped"},
             {"api.github.com", "PATCH", "/user", false, "not-repo-scoped"},
             {"api.github.com", "POST", "/zen", false, "not-repo-scoped"},
             {"api.github.com", "POST", "/", false, "not-repo-scoped"},
             {"api.github.com", "GET", "/user/installations", false, "not-repo-scoped"},
             // Harmless reads.
             {"api.github.com", "GET", "/", true, "non-repo-endpoint"},
             {"api.github.com", "GET", "/user", true, "non-repo-endpoint"},
             {"api.github.com", "HEAD", "/rate_limit", true, "non-repo-endpoint"},
             {"api.github.com", "GET", "/meta", true, "non-repo-endpoint"},
             {"api.github.com", "GET", "/zen", true, "non-repo-endpoint"},
             {"api.github.com", "GET", "/octocat", true, "non-repo-endpoint"},
             {"api.github.com", "GET", "/emojis", true, "non-repo-endpoint"},
             {"api.github.com", "GET", "/versions", true, "non-repo-endpoint"},
             // Moving the repository, or access to it, out of the allowlist.
             {"api.github.com", "POST", "/repos/acme/widget/forks", false, "cross-repo", kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/generate", false, "cross-repo", kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/transfer", false, "cross-repo", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget", false, "repo-admin", kWidget},
             {"api.github.com", "DELETE", "/repos/acme/widget", false, "repo-admin", kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/hooks", false, "repo-admin", kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/keys", false, "repo-admin", kWidget},
             {"api.github.com", "PUT", "/repos/acme/widget/collaborators/evil", false, "repo-admin", kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/codespaces", false, "repo-admin", kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/pages", false, "repo-admin", kWidget},
         });
}

TEST(GithubPolicy, DownloadUploadAssetAndOtherHosts) {
  Policy p = make({"acme/widget"});
  run(p, {
             {"codeload.github.com", "GET", "/acme/widget/tar.gz/refs/heads/main", true, kAllowWidget, kWidget},
             {"codeload.github.com", "GET", "/Acme/Widget/zip/main", true, kAllowWidget, kWidget},
             {"codeload.github.com", "GET", "/acme/widget/legacy.tar.gz/main", true, kAllowWidget, kWidget},
             {"codeload.github.com", "GET", "/acme/widget/legacy.zip/feature%2Fx", true, kAllowWidget, kWidget},
             {"codeload.github.com", "GET", "/evil/repo/zip/main", false, "repo-not-allowed", "evil/repo"},
             {"codeload.github.com", "GET", "/acme/widget/other/main", false, "malformed-path", kWidget},
             {"codeload.github.com", "GET", "/acme/widget", false, "malformed-path", kWidget},
             {"codeload.github.com", "POST", "/acme/widget/zip/main", false, "method-not-allowed", kWidget},
             {"codeload.github.com", "GET", "/", false, "not-repo-scoped"},
             {"raw.githubusercontent.com", "GET", "/acme/widget/main/README.md?token=secret", true, kAllowWidget, kWidget},
             {"raw.githubusercontent.com", "GET", "/acme/widget/refs/heads/main/a%2Fb", true, kAllowWidget, kWidget},
             {"raw.githubusercontent.com", "GET", "/Evil/Repo/main/x", false, "repo-not-allowed", "evil/repo"},
             {"raw.githubusercontent.com", "GET", "/acme/widget/main/../../../evil/repo/main/x", false, "malformed-path"},
             {"raw.githubusercontent.com", "PUT", "/acme/widget/main/x", false, "method-not-allowed", kWidget},
             {"raw.githubusercontent.com", "GET", "/acme", false, "not-repo-scoped"},
             {"media.githubusercontent.com", "GET", "/media/acme/widget/main/big.bin", true, kAllowWidget, kWidget},
             {"media.githubusercontent.com", "GET", "/media/evil/repo/main/big.bin", false, "repo-not-allowed", "evil/repo"},
             {"media.githubusercontent.com", "GET", "/acme/widget/main/x", false, "not-repo-scoped"},
             {"uploads.github.com", "POST", "/repos/acme/widget/releases/1/assets?name=x.tgz", true, kAllowWidget, kWidget},
             {"uploads.github.com", "POST", "/repos/evil/repo/releases/1/assets?name=x", false, "repo-not-allowed", "evil/repo"},
             {"uploads.github.com", "GET", "/repos/acme/widget/releases/1/assets", false, "method-not-allowed", kWidget},
             {"uploads.github.com", "POST", "/repos/acme/widget/hooks", false, "malformed-path", kWidget},
             {"uploads.github.com", "POST", "/user/repos", false, "not-repo-scoped"},
             {"objects.githubusercontent.com", "GET",
              "/github-production-release-asset-2e65be/123/abc?X-Amz-Signature=secret", true, "signed-asset"},
             {"release-assets.githubusercontent.com", "GET", "/github-production-release-asset/123/abc?sig=secret", true,
              "signed-asset"},
             {"github-cloud.githubusercontent.com", "HEAD", "/alambic/media/1/ab/cd", true, "signed-asset"},
             {"objects.githubusercontent.com", "PUT", "/x", false, "method-not-allowed"},
             {"objects.githubusercontent.com", "POST", "/x", false, "method-not-allowed"},
             {"objects.githubusercontent.com", "GET", "/a/../b", false, "malformed-path"},
             {"gist.github.com", "GET", "/acme/0123abcd", false, "gist"},
             {"gist.github.com", "POST", "/acme/0123abcd.git/git-receive-pack", false, "gist"},
             {"gist.githubusercontent.com", "GET", "/acme/0123abcd/raw/x", false, "gist"},
             {"avatars.githubusercontent.com", "GET", "/u/1", false, "unknown-host"},
             {"pkg.github.com", "GET", "/acme/widget", false, "unknown-host"},
             {"API.GITHUB.COM.", "GET", "/repos/evil/repo", false, "repo-not-allowed", "evil/repo"},
             {"example.com", "GET", "/acme/widget", false, "not-github-host"},
             {"github.com.evil.com", "GET", "/acme/widget", false, "not-github-host"},
         });
}

TEST(GithubPolicy, EmptyAllowlistDeniesEverything) {
  Policy p = make({});
  run(p, {
             {"github.com", "GET", "/acme/widget", false, "no-repos-allowed"},
             {"api.github.com", "GET", "/zen", false, "no-repos-allowed"},
             {"github.com", "POST", "/login/device/code", false, "no-repos-allowed"},
             {"objects.githubusercontent.com", "GET", "/x", false, "no-repos-allowed"},
         });
}

TEST(GithubPolicy, StarLiftsScopingButNotMalformedOrMethodRules) {
  Policy p = make({"*"});
  auto cr = PushBody::kCreateRef;
  run(p, {
             {"github.com", "GET", "/evil/repo", true, "allowedRepos: *", "evil/repo"},
             {"github.com", "GET", "/settings/tokens", true, "allowedRepos: *"},
             {"api.github.com", "POST", "/graphql", true, "allowedRepos: *"},
             {"api.github.com", "GET", "/repositories/1/contents/x", true, "allowedRepos: *"},
             {"api.github.com", "POST", "/repositories/1/git/refs", true, "allowedRepos: *", "", cr},
             {"api.github.com", "POST", "/user/repos", true, "allowedRepos: *"},
             {"api.github.com", "POST", "/repos/any/thing/forks", true, "allowedRepos: *", "any/thing"},
             {"api.github.com", "POST", "/repos/any/thing/hooks", true, "allowedRepos: *", "any/thing"},
             {"gist.github.com", "POST", "/a/b.git/git-receive-pack", true, "allowedRepos: *"},
             {"avatars.githubusercontent.com", "GET", "/u/1", true, "allowedRepos: *"},
             {"github.com", "GET", "/a/b/../../c/d", false, "malformed-path"},
             // Found by the fuzzer: "*" lifted the rule for a first segment that is no owner
             // before the push rule ran, so this POST was allowed without push inspection.
             {"github.com", "POST", "/..me/widget.git/git-receive-pack", false, "malformed-path"},
             {"github.com", "POST", "/settings/x/git-receive-pack", false, "malformed-path"},
             {"github.com", "POST", "/a/b.git/x/git-receive-pack", false, "malformed-path", "a/b"},
             {"github.com", "POST", "/a/b.git/git-receive-pack", true, "allowedRepos: *", "a/b", PushBody::kReceivePack},
             {"api.github.com", "GET", "/user%2Frepos", false, "malformed-path"},
             {"objects.githubusercontent.com", "PUT", "/x", false, "method-not-allowed"},
             {"raw.githubusercontent.com", "POST", "/a/b/main/x", false, "method-not-allowed", "a/b"},
         });
}

TEST(GithubPolicy, AllowedRefsGovernRefUpdatesThroughTheApiAndWeb) {
  Policy p = make({"acme/widget"}, std::vector<std::string>{"main", "feature/*", "release/**", "refs/tags/v*"});
  auto rp = PushBody::kReceivePack;
  auto cr = PushBody::kCreateRef;
  const char* ni = "ref-write-not-inspected";
  run(p, {
             {"api.github.com", "PATCH", "/repos/acme/widget/git/refs/heads/main", true, "allowedRefs: refs/heads/main", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/git/refs/heads/feature/x", true,
              "allowedRefs: refs/heads/feature/*", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/git/refs/heads%2Ffeature%2Fx", true,
              "allowedRefs: refs/heads/feature/*", kWidget},
             {"api.github.com", "DELETE", "/repos/acme/widget/git/refs/heads/release/1/2", true,
              "allowedRefs: refs/heads/release/**", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/git/refs/tags/v1.0", true, "allowedRefs: refs/tags/v*", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/git/refs/heads/feature/x/y", false, "ref-not-allowed", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/git/refs/heads/other", false, "ref-not-allowed", kWidget},
             {"api.github.com", "DELETE", "/repos/acme/widget/git/refs/heads/other", false, "ref-not-allowed", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/GIT/REFS/heads/other", false, "ref-not-allowed", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/git/refs/refs/heads/main", false, "ref-not-allowed", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/git%2Frefs/heads/other", false, "malformed-path", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/git/refs/heads/main/../other", false, "malformed-path"},
             {"api.github.com", "PATCH", "/repos/acme/widget/git/refs/heads/ma%7Ein", false, "malformed-path", kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/git/refs", true, kAllowWidget, kWidget, cr},
             {"api.github.com", "PUT", "/repos/acme/widget/git/refs", false, ni, kWidget},
             {"api.github.com", "GET", "/repos/acme/widget/git/refs/heads/other", true, kAllowWidget, kWidget},
             {"api.github.com", "PUT", "/repos/acme/widget/contents/README.md", false, ni, kWidget},
             {"api.github.com", "DELETE", "/repos/acme/widget/contents/a/b", false, ni, kWidget},
             {"api.github.com", "PUT", "/repos/acme/widget/contents/a%2Fb", false, ni, kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/branches/feature%2Fx/rename", false, ni, kWidget},
             {"api.github.com", "PUT", "/repos/acme/widget/pulls/1%2Fx/merge", false, "malformed-path", kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/releases/7%2Fx", false, "malformed-path", kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/merges", false, ni, kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/merge-upstream", false, ni, kWidget},
             {"api.github.com", "PUT", "/repos/acme/widget/pulls/1/merge", false, ni, kWidget},
             {"api.github.com", "PUT", "/repos/acme/widget/pulls/1/update-branch", false, ni, kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/branches/main/rename", false, ni, kWidget},
             {"api.github.com", "PUT", "/repos/acme/widget/branches/main/protection", false, ni, kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/releases", false, ni, kWidget},
             {"api.github.com", "PATCH", "/repos/acme/widget/releases/7", false, ni, kWidget},
             {"api.github.com", "POST", "/graphql", false, "graphql"},
             {"api.github.com", "POST", "/repos/acme/widget/pulls", true, kAllowWidget, kWidget},
             {"api.github.com", "PUT", "/repos/acme/widget/pulls/1/reviews/2", true, kAllowWidget, kWidget},
             {"api.github.com", "POST", "/repos/acme/widget/releases/generate-notes", true, kAllowWidget, kWidget},
             {"api.github.com", "GET", "/repos/acme/widget/contents/README.md", true, kAllowWidget, kWidget},
             {"github.com", "POST", "/acme/widget.git/git-receive-pack", true, kAllowWidget, kWidget, rp},
             {"github.com", "POST", "/acme/widget.git/git-upload-pack", true, kAllowWidget, kWidget},
             {"github.com", "POST", "/acme/widget.git/info/lfs/objects/batch", true, kAllowWidget, kWidget},
             {"github.com", "POST", "/acme/widget/branches/x/destroy", false, ni, kWidget},
             {"github.com", "POST", "/acme/widget/pull/1/merge", false, ni, kWidget},
             {"github.com", "DELETE", "/acme/widget/x", false, ni, kWidget},
             {"github.com", "GET", "/acme/widget/branches", true, kAllowWidget, kWidget},
         });
  // "*" lifts the repository rules, never the ref rules.
  Policy star = make({"*"}, std::vector<std::string>{"main"});
  run(star, {
                {"api.github.com", "POST", "/graphql", false, "graphql"},
                {"api.github.com", "PATCH", "/repositories/1/git/refs/heads/x", false, "ref-not-allowed"},
                {"api.github.com", "PATCH", "/repositories/1/git/refs/heads/main", true, "allowedRefs: refs/heads/main"},
                {"api.github.com", "PUT", "/repositories/1/contents/x", false, ni},
                {"api.github.com", "PUT", "/repos/a/b/contents/x", false, ni, "a/b"},
                {"api.github.com", "PATCH", "/repositories/x1/git/refs/heads/x", false, "ref-not-allowed"},
                {"github.com", "POST", "/settings/x", false, ni},
                {"github.com", "POST", "/login/device/code", true, "non-repo-endpoint"},
                {"github.com", "POST", "/a/b.git/git-receive-pack", true, "allowedRepos: *", "a/b", PushBody::kReceivePack},
                {"gist.github.com", "POST", "/a/b.git/git-receive-pack", false, ni},
                {"gist.github.com", "GET", "/a/b", true, "allowedRepos: *"},
                {"avatars.githubusercontent.com", "POST", "/u", false, ni},
            });
}

TEST(GithubPolicy, MethodOverrideHeaders) {
  EXPECT_TRUE(is_method_override_header("X-HTTP-Method-Override"));
  EXPECT_TRUE(is_method_override_header("x-http-method"));
  EXPECT_TRUE(is_method_override_header("X-METHOD-OVERRIDE"));
  EXPECT_FALSE(is_method_override_header("X-HTTP-Method-Overrides"));
  EXPECT_FALSE(is_method_override_header("Content-Type"));
}

// --- Pushes ------------------------------------------------------------------------------------

std::string pkt(std::string_view payload) {
  char len[5];
  std::snprintf(len, sizeof len, "%04zx", payload.size() + 4);
  return std::string(len) + std::string(payload);
}

const std::string kZero40(40, '0');
const std::string kA40(40, 'a');
const std::string kB40(40, 'b');
const std::string kA64(64, 'a');
const std::string kB64(64, 'b');

std::string command(const std::string& old_oid, const std::string& new_oid, const std::string& ref,
                    const std::string& caps = "") {
  std::string line = old_oid + " " + new_oid + " " + ref;
  if (!caps.empty()) line += "\0"s + caps;
  return pkt(line + "\n");
}

ReceivePackScanner scan(std::string_view body) {
  ReceivePackScanner s;
  s.feed(body);
  return s;
}

// The error of scanning `body` whole, "" if it parsed to kDone.
std::string scan_error(std::string_view body) {
  ReceivePackScanner s = scan(body);
  if (s.state() == ReceivePackScanner::State::kNeedMore) return "need more";
  return s.error();
}

const std::string kCaps = " report-status side-band-64k object-format=sha1 agent=git/2.45.0";

TEST(GithubPolicy, ScannerReadsCommandListAndStopsAtFlush) {
  std::string list = command(kA40, kB40, "refs/heads/main", kCaps) + command(kZero40, kA40, "refs/heads/feature/new") +
                     command(kB40, kZero40, "refs/heads/old") + "0000";
  std::string body = list + pkt("push-option=ci.skip\n") + "0000" + "PACK\x00\x00\x00\x02"s;
  ReceivePackScanner s = scan(body);
  ASSERT_EQ(s.state(), ReceivePackScanner::State::kDone) << s.error();
  EXPECT_EQ(s.consumed(), list.size());
  EXPECT_FALSE(s.probe());
  ASSERT_EQ(s.updates().size(), 3u);
  EXPECT_EQ(s.updates()[0].ref, "refs/heads/main");
  EXPECT_EQ(s.updates()[0].old_oid, kA40);
  EXPECT_EQ(s.updates()[0].new_oid, kB40);
  EXPECT_FALSE(s.updates()[0].creation);
  EXPECT_FALSE(s.updates()[0].deletion);
  EXPECT_TRUE(s.updates()[1].creation);
  EXPECT_TRUE(s.updates()[2].deletion);
  // Done: nothing more is consumed.
  EXPECT_EQ(s.feed("0000"), ReceivePackScanner::State::kDone);
  EXPECT_EQ(s.consumed(), list.size());
}

TEST(GithubPolicy, ScannerFedOneByteAtATimeAgreesWithWholeFeed) {
  std::string list = pkt("shallow " + kA40 + "\n") + command(kA40, kB40, "refs/heads/main", kCaps) +
                     command(kZero40, kA40, "refs/tags/v1") + "0000";
  std::string body = list + "PACK....";
  ReceivePackScanner whole = scan(body);
  ReceivePackScanner bytes;
  size_t fed = 0;
  for (char c : body) {
    auto st = bytes.feed(std::string_view(&c, 1));
    ++fed;
    if (fed < list.size()) {
      ASSERT_EQ(st, ReceivePackScanner::State::kNeedMore) << fed;
    } else {
      ASSERT_EQ(st, ReceivePackScanner::State::kDone) << fed;
    }
    bytes.feed("");  // empty feeds change nothing
  }
  EXPECT_EQ(bytes.consumed(), list.size());
  EXPECT_EQ(whole.consumed(), list.size());
  ASSERT_EQ(bytes.updates().size(), whole.updates().size());
  for (size_t i = 0; i < whole.updates().size(); ++i) EXPECT_EQ(bytes.updates()[i].ref, whole.updates()[i].ref);
}

TEST(GithubPolicy, ScannerAcceptsSha256) {
  ReceivePackScanner s = scan(command(kA64, kB64, "refs/heads/main", "report-status object-format=sha256") +
                              command(kZero40 + std::string(24, '0'), kA64, "refs/heads/x") + "0000");
  ASSERT_EQ(s.state(), ReceivePackScanner::State::kDone) << s.error();
  ASSERT_EQ(s.updates().size(), 2u);
  EXPECT_EQ(s.updates()[0].new_oid, kB64);
  EXPECT_TRUE(s.updates()[1].creation);
  // Without object-format the first id sets the length.
  EXPECT_EQ(scan_error(command(kA64, kB64, "refs/heads/main") + "0000"), "");
}

TEST(GithubPolicy, ScannerRefusesMalformedCommandLists) {
  std::string ok = command(kA40, kB40, "refs/heads/main");
  struct BodyCase {
    std::string body;
    const char* error_has;
  } cases[] = {
      {"00zz", "4 hex digits"},
      {"0001", "delim-pkt"},
      {"0002", "response-end"},
      {"0003", "invalid"},
      {"0004", "invalid"},
      {"fff1" + std::string(65517, 'x'), "65520"},
      {ok + "0001", "delim-pkt"},
      {"0000", ""},  // the probe: handled below
      {pkt("shallow " + kA40) + "0000", "no command"},
      {ok + pkt("shallow " + kA40) + "0000", "shallow line after"},
      {pkt("shallow " + kA40.substr(1)) + ok + "0000", "40 or 64"},
      {command(kA40, kB40, "refs/heads/main", "object-format=sha256") + "0000", "object-format"},
      {command(kA40, kB40, "refs/heads/main", "object-format=md5") + "0000", "unknown object-format"},
      {command(kA40, kB40, "refs/heads/main", "object-format=sha1 object-format=sha1") + "0000", "twice"},
      {pkt("shallow " + kA40) + command(kA64, kB64, "refs/heads/main", "object-format=sha256") + "0000", "shallow"},
      {command(kA40, kB64, "refs/heads/main") + "0000", "mixed"},
      {ok + command(kA64, kB64, "refs/heads/x") + "0000", "mixed"},
      {command(std::string(40, 'A'), kB40, "refs/heads/main") + "0000", "lowercase"},
      {command(std::string(40, 'g'), kB40, "refs/heads/main") + "0000", "lowercase hex"},
      {command(kZero40, kZero40, "refs/heads/main") + "0000", "both object ids zero"},
      {pkt(kA40 + " " + kB40) + "0000", "command is not"},
      {pkt(kA40 + "  " + kB40 + " refs/heads/main") + "0000", "40 or 64"},
      {ok + command(kA40, kB40, "refs/heads/x", "report-status") + "0000", "capabilities after"},
      {command(kA40, kB40, "refs/heads/main", "report\x01status") + "0000", "capability"},
      {pkt("push-cert\0report-status\n"s) + "0000", "push-cert"},
      {command(kA40, kB40, "HEAD") + "0000", "full ref name"},
      {command(kA40, kB40, "refs/") + "0000", "full ref name"},
      {command(kA40, kB40, "main") + "0000", "full ref name"},
      {command(kA40, kB40, "refs/heads/a..b") + "0000", ".."},
      {command(kA40, kB40, "refs/heads/a b") + "0000", "does not allow"},
      {command(kA40, kB40, "refs/heads/a~1") + "0000", "does not allow"},
      {command(kA40, kB40, "refs/heads/a^") + "0000", "does not allow"},
      {command(kA40, kB40, "refs/heads/a:b") + "0000", "does not allow"},
      {command(kA40, kB40, "refs/heads/a?") + "0000", "does not allow"},
      {command(kA40, kB40, "refs/heads/a*") + "0000", "does not allow"},
      {command(kA40, kB40, "refs/heads/a[") + "0000", "does not allow"},
      {command(kA40, kB40, "refs/heads/a\\b") + "0000", "does not allow"},
      {command(kA40, kB40, "refs/heads/a\x7f") + "0000", "control"},
      {command(kA40, kB40, "refs/heads/a\rb") + "0000", "control"},
      {command(kA40, kB40, "refs/heads//x") + "0000", "empty path component"},
      {command(kA40, kB40, "refs/heads/x/") + "0000", "empty path component"},
      {command(kA40, kB40, "refs/heads/x.lock") + "0000", ".lock"},
      {command(kA40, kB40, "refs/heads/.x") + "0000", "starting with '.'"},
      {command(kA40, kB40, "refs/heads/x.") + "0000", "ends with '.'"},
      {command(kA40, kB40, "refs/heads/a@{1}") + "0000", "@{"},
      {command(kA40, kB40, "refs/heads/" + std::string(kMaxRefLength, 'x')) + "0000", "longer than"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body.substr(0, 120));
    std::string err = scan_error(c.body);
    if (std::string(c.error_has).empty()) {
      EXPECT_EQ(err, "");
      continue;
    }
    EXPECT_NE(err.find(c.error_has), std::string::npos) << err;
    // After an error, every feed is an error.
    ReceivePackScanner s = scan(c.body);
    EXPECT_EQ(s.feed(ok + "0000"), ReceivePackScanner::State::kError);
  }
  // A command list cut short needs more.
  EXPECT_EQ(scan(ok.substr(0, ok.size() - 1)).state(), ReceivePackScanner::State::kNeedMore);
  EXPECT_EQ(scan(ok).state(), ReceivePackScanner::State::kNeedMore);
  EXPECT_EQ(scan("00").state(), ReceivePackScanner::State::kNeedMore);
}

TEST(GithubPolicy, ScannerLimits) {
  std::string many;
  for (size_t i = 0; i <= kMaxCommands; ++i) many += command(kA40, kB40, "refs/heads/b" + std::to_string(i));
  EXPECT_NE(scan_error(many + "0000").find("more than 10000 commands"), std::string::npos);
  std::string exactly;
  for (size_t i = 0; i < kMaxCommands; ++i) exactly += command(kA40, kB40, "refs/heads/b" + std::to_string(i));
  EXPECT_EQ(scan_error(exactly + "0000"), "");

  std::string big;
  std::string long_ref = "refs/heads/" + std::string(4000, 'x');
  while (big.size() < kMaxCommandListBytes) big += command(kA40, kB40, long_ref);
  EXPECT_NE(scan_error(big + "0000").find("longer than"), std::string::npos);
}

TEST(GithubPolicy, LoneFlushIsGitsAuthProbe) {
  Policy p = make({"acme/widget"}, std::vector<std::string>{"main"});
  ReceivePackScanner s = scan("0000");
  ASSERT_EQ(s.state(), ReceivePackScanner::State::kDone);
  EXPECT_TRUE(s.probe());
  EXPECT_TRUE(s.updates().empty());
  EXPECT_EQ(s.consumed(), 4u);
  Verdict v = check_push(p, kWidget, s);
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.rule, "push-probe");
  EXPECT_EQ(check_push(p, "evil/repo", s).rule, "repo-not-allowed");
  // But no updates in any other form is a malformed push.
  EXPECT_EQ(check_push(p, kWidget, std::vector<RefUpdate>{}).rule, "malformed-push");
}

TEST(GithubPolicy, CheckPushAppliesAllowedRefsToEveryUpdate) {
  Policy p = make({"acme/widget", "friends/*"}, std::vector<std::string>{"main", "feature/*"});
  auto push = [&](std::string_view repo, const std::string& body) { return check_push(p, repo, scan(body)); };

  Verdict v = push(kWidget, command(kA40, kB40, "refs/heads/main", kCaps) + "0000");
  EXPECT_TRUE(v.allowed) << v.reason;
  EXPECT_EQ(v.rule, "allowedRefs: refs/heads/main");
  EXPECT_EQ(v.repo, kWidget);

  v = push(kWidget, command(kA40, kB40, "refs/heads/feature/a", kCaps) + command(kA40, kB40, "refs/heads/main") +
                        command(kZero40, kA40, "refs/heads/feature/b") + "0000");
  EXPECT_TRUE(v.allowed) << v.reason;
  EXPECT_EQ(v.rule, "allowedRefs: refs/heads/feature/*, refs/heads/main");

  v = push("Friends/X", command(kA40, kB40, "refs/heads/feature/a/b", kCaps) + command(kA40, kB40, "refs/heads/other") +
                            "0000");
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.rule, "ref-not-allowed");
  EXPECT_EQ(v.repo, "friends/x");
  EXPECT_NE(v.reason.find("refs/heads/feature/a/b"), std::string::npos) << "names the first refused ref: " << v.reason;

  v = push(kWidget, command(kA40, kZero40, "refs/heads/other", kCaps) + "0000");
  EXPECT_EQ(v.rule, "ref-not-allowed");
  EXPECT_NE(v.reason.find("deleting"), std::string::npos) << v.reason;
  v = push(kWidget, command(kA40, kZero40, "refs/heads/feature/done", kCaps) + "0000");
  EXPECT_TRUE(v.allowed) << "deleting an allowed ref is a push to it";

  v = push(kWidget, command(kA40, kB40, "refs/tags/v1", kCaps) + "0000");
  EXPECT_EQ(v.rule, "ref-not-allowed");

  v = push(kWidget, command(kA64, kB64, "refs/heads/main", "object-format=sha256") + "0000");
  EXPECT_TRUE(v.allowed) << v.reason;

  v = push("evil/repo", command(kA40, kB40, "refs/heads/main", kCaps) + "0000");
  EXPECT_EQ(v.rule, "repo-not-allowed");

  v = push(kWidget, command(kA40, kB40, "refs/heads/main", kCaps));  // body ends inside the list
  EXPECT_EQ(v.rule, "malformed-push");
  v = push(kWidget, command(kA40, kB40, "refs/heads/ma in", kCaps) + "0000");
  EXPECT_EQ(v.rule, "malformed-push");

  // A hand-made update list is checked like a scanned one.
  v = check_push(p, kWidget, {RefUpdate{kA40, kB40, "refs/heads/../main", false, false}});
  EXPECT_EQ(v.rule, "malformed-push");
}

TEST(GithubPolicy, CheckPushWithoutAllowedRefsOrWithAnEmptyList) {
  Policy any_ref = make({"acme/widget"});
  std::string body = command(kA40, kB40, "refs/heads/anything", kCaps) + command(kA40, kZero40, "refs/tags/x") + "0000";
  Verdict v = check_push(any_ref, kWidget, scan(body));
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(v.rule, kAllowWidget);
  Policy no_ref = make({"acme/widget"}, std::vector<std::string>{});
  EXPECT_EQ(check_push(no_ref, kWidget, scan(body)).rule, "ref-not-allowed");
  EXPECT_EQ(check_request(no_ref, "api.github.com", "PATCH", "/repos/acme/widget/git/refs/heads/main").rule,
            "ref-not-allowed");
}

TEST(GithubPolicy, CreateRefBody) {
  auto r = parse_create_ref_body(R"({"ref":"refs/heads/feature/a","sha":")" + std::string(40, 'A') + R"("})");
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->ref, "refs/heads/feature/a");
  EXPECT_EQ(r->new_oid, std::string(40, 'a'));
  EXPECT_TRUE(r->creation);
  EXPECT_FALSE(r->deletion);
  Policy p = make({"acme/widget"}, std::vector<std::string>{"feature/*"});
  EXPECT_TRUE(check_push(p, kWidget, {*r}).allowed);
  auto main = parse_create_ref_body(R"({"sha":")" + kA64 + R"(","ref":"refs/heads/main","extra":{"a":[1]}})");
  ASSERT_TRUE(main) << main.error().to_string();
  EXPECT_EQ(check_push(p, kWidget, {*main}).rule, "ref-not-allowed");

  auto dup = parse_create_ref_body(R"({"ref":"refs/heads/feature/a","sha":")" + kA40 + R"(","ref":"refs/heads/main"})");
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().message().find("twice"), std::string::npos) << dup.error().message();
  EXPECT_TRUE(parse_create_ref_body(R"({"ref":"refs/heads/main","sha":")" + kA40 +
                                    R"(","x":{"ref":1},"y":{"ref":2}})"));  // nested names may repeat
  for (const std::string& bad : std::vector<std::string>{
           R"({"ref":"refs/heads/feature/a","ref":"refs/heads/main","sha":")" + kA40 + R"("})",
           R"({"ref":"refs/heads/main"})",
           R"({"sha":")" + kA40 + R"("})",
           R"({"ref":7,"sha":")" + kA40 + R"("})",
           R"({"ref":"heads/main","sha":")" + kA40 + R"("})",
           R"({"ref":"refs/heads/a..b","sha":")" + kA40 + R"("})",
           R"({"ref":"refs/heads/main","sha":"abc"})",
           R"({"ref":"refs/heads/main","sha":")" + kZero40 + R"("})",
           R"(["refs/heads/main"])",
           R"({"ref":"refs/heads/main","sha":")" + kA40 + R"(")",
           std::string(100, '[') + std::string(100, ']'),
           "",
       }) {
    EXPECT_FALSE(parse_create_ref_body(bad)) << bad;
  }
}

TEST(GithubPolicy, CheckRefFormat) {
  for (const char* good : {"refs/heads/main", "refs/heads/feature/a-b_c.d", "refs/tags/v1.2.3", "refs/x",
                           "refs/heads/caf\xc3\xa9", "refs/heads/a.b/c"}) {
    EXPECT_TRUE(check_ref_format(good)) << good;
  }
  for (const char* bad : {"", "refs", "refs/", "main", "HEAD", "refs/heads/a..b", "refs/heads//a", "refs/heads/a/",
                          "refs/heads/.a", "refs/heads/a.lock", "refs/heads/a.lock/b", "refs/heads/a.", "refs/heads/@{x}",
                          "refs/heads/a b", "refs/heads/a\tb", "Refs/heads/a"}) {
    EXPECT_FALSE(check_ref_format(bad)) << bad;
  }
}

// --- The 403 body ------------------------------------------------------------------------------

TEST(GithubPolicy, DenialJsonIsValidAndHelpful) {
  Policy p = make({"acme/widget"});
  Verdict v = check_request(p, "github.com", "GET", "/evil/repo");
  auto j = nlohmann::json::parse(denial_json(v));
  EXPECT_EQ(j["error"], "github_request_denied");
  EXPECT_EQ(j["rule"], "repo-not-allowed");
  EXPECT_EQ(j["repo"], "evil/repo");
  EXPECT_EQ(j["reason"], v.reason);
  EXPECT_EQ(j["hint"], "add evil/repo to spec.sourceAccess.github.allowedRepos");

  j = nlohmann::json::parse(denial_json(check_request(p, "api.github.com", "POST", "/graphql")));
  EXPECT_EQ(j["rule"], "graphql");
  EXPECT_TRUE(j["repo"].is_null());
  EXPECT_NE(j["hint"].get<std::string>().find("REST"), std::string::npos);

  Policy refs = make({"acme/widget"}, std::vector<std::string>{"main"});
  j = nlohmann::json::parse(
      denial_json(check_request(refs, "api.github.com", "PATCH", "/repos/acme/widget/git/refs/heads/x")));
  EXPECT_NE(j["hint"].get<std::string>().find("allowedRefs"), std::string::npos);

  // Every rule has a hint, and bytes that are not UTF-8 never break the JSON.
  for (const char* rule : {"no-repos-allowed", "repository-by-id", "not-repo-scoped", "gist", "unknown-host",
                           "cross-repo", "repo-admin", "ref-write-not-inspected", "method-not-allowed",
                           "malformed-path", "malformed-push"}) {
    Verdict d;
    d.rule = rule;
    d.reason = "bad \xff\xfe byte";
    auto parsed = nlohmann::json::parse(denial_json(d));
    EXPECT_FALSE(parsed["hint"].get<std::string>().empty()) << rule;
  }
}

}  // namespace
}  // namespace km::proxy::github
