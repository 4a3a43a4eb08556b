#include "km/proxy/github_policy.h"

#include <algorithm>
#include <iterator>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "km/base/strings.h"

namespace km::proxy::github {

namespace {

constexpr std::string_view kReposPath = "spec.sourceAccess.github.allowedRepos";
constexpr std::string_view kRefsPath = "spec.sourceAccess.github.allowedRefs";
constexpr size_t kMaxPktLine = 65520;

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
bool is_ctl(char c) {
  auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}
unsigned hex_value(char c) {
  if (c >= '0' && c <= '9') return static_cast<unsigned>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<unsigned>(c - 'a' + 10);
  return static_cast<unsigned>(c - 'A' + 10);
}
bool starts_with_ic(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && equals_ignore_case(s.substr(0, prefix.size()), prefix);
}
bool ends_with_ic(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && equals_ignore_case(s.substr(s.size() - suffix.size()), suffix);
}
bool one_of_ic(std::string_view s, std::initializer_list<std::string_view> words) {
  return std::any_of(words.begin(), words.end(), [&](std::string_view w) { return equals_ignore_case(s, w); });
}

Unexpected<Error> invalid(std::string message) { return fail(ErrorCode::kInvalidArgument, std::move(message)); }

// --- Repository names ------------------------------------------------------------------------

// An owner as the profile may name it (checks::github_repo): GitHub user and organisation names.
bool valid_owner_entry(std::string_view s) {
  return !s.empty() && s.size() <= 39 && s.front() != '-' &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || c == '-'; });
}
// An owner as a request may name it: also '_' (enterprise managed users), so such a request is
// refused as not allowed rather than as malformed; never '.', so "favicon.ico" is no owner.
bool valid_owner(std::string_view s) {
  return !s.empty() && s.size() <= 100 &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || c == '-' || c == '_'; });
}
bool valid_repo_name(std::string_view s) {
  return !s.empty() && s.size() <= 100 && s != "." && s != ".." &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || c == '-' || c == '_' || c == '.'; });
}
std::string_view strip_dot_git(std::string_view s) {
  if (ends_with_ic(s, ".git")) s.remove_suffix(4);
  return s;
}

// "owner/repo" from two path components, or nullopt if they cannot name a repository.
std::optional<std::string> repo_from(std::string_view owner, std::string_view repo) {
  repo = strip_dot_git(repo);
  if (!valid_owner(owner) || !valid_repo_name(repo)) return std::nullopt;
  return to_lower(owner) + "/" + to_lower(repo);
}

Result<std::string> normalise_repo_entry(std::string_view entry) {
  std::string_view s = entry;
  if (starts_with_ic(s, "github.com/")) s.remove_prefix(11);
  if (s == "*") return std::string("*");
  size_t slash = s.find('/');
  if (slash == std::string_view::npos || s.find('/', slash + 1) != std::string_view::npos) {
    return invalid("repository " + quoted(entry) + " must be owner/repo, owner/* or *");
  }
  std::string_view owner = s.substr(0, slash), repo = s.substr(slash + 1);
  if (!valid_owner_entry(owner)) {
    return invalid("GitHub owner " + quoted(owner) + " may contain only letters, digits and '-' (1-39)");
  }
  if (repo == "*") return to_lower(owner) + "/*";
  repo = strip_dot_git(repo);
  if (!valid_repo_name(repo)) {
    return invalid("GitHub repository name " + quoted(repo) +
                   " may contain only letters, digits, '-', '_' and '.' (or be * for every repository of the owner)");
  }
  return to_lower(owner) + "/" + to_lower(repo);
}

// --- Ref globs -------------------------------------------------------------------------------

Result<std::string> normalise_ref_glob(std::string_view pattern) {
  if (pattern.empty()) return invalid("empty ref pattern");
  for (char c : pattern) {
    if (is_ctl(c) || std::string_view(" ~^:\\").find(c) != std::string_view::npos) {
      return invalid("ref pattern " + quoted(pattern) + " contains characters git does not allow in ref names");
    }
    if (c == '?' || c == '[') {
      return invalid("ref pattern " + quoted(pattern) + ": only * and ** are wildcards ('?' and '[' never match a ref)");
    }
  }
  if (pattern.find("***") != std::string_view::npos) {
    return invalid("ref pattern " + quoted(pattern) + ": use * (one path segment) or ** (any number of segments)");
  }
  if (pattern.front() == '/' || pattern.back() == '/' || pattern.find("//") != std::string_view::npos) {
    return invalid("ref pattern " + quoted(pattern) + " has an empty path segment");
  }
  std::string full = pattern.substr(0, 5) == "refs/" ? std::string(pattern) : "refs/heads/" + std::string(pattern);
  // The pattern must be able to match some valid ref: check it as a ref with the wildcards
  // standing for one ordinary character.
  std::string sample = full;
  std::replace(sample.begin(), sample.end(), '*', 'x');
  if (auto st = check_ref_format(sample); !st) {
    return invalid("ref pattern " + quoted(pattern) + " can never match a valid ref name (" + st.error().message() + ")");
  }
  return full;
}

// `*` matches any run of characters other than '/', `**` any run at all. O(|pattern| * |ref|):
// patterns come from the profile, refs from the sandbox, and neither can make it backtrack.
bool glob_matches(std::string_view pattern, std::string_view ref) {
  // std::string, not std::vector<char>: never a null buffer (GCC -O3 -Wnull-dereference).
  std::string reach(ref.size() + 1, '\0'), next(ref.size() + 1, '\0');
  reach[0] = 1;  // reach[j]: the pattern so far matches ref[0, j)
  size_t i = 0;
  while (i < pattern.size()) {
    if (pattern[i] == '*') {
      bool deep = i + 1 < pattern.size() && pattern[i + 1] == '*';
      i += deep ? 2 : 1;
      bool run = false;
      for (size_t j = 0; j <= ref.size(); ++j) {
        if (j > 0 && !deep && ref[j - 1] == '/') run = false;
        run = run || reach[j];
        next[j] = run;
      }
    } else {
      char c = pattern[i++];
      next[0] = 0;
      for (size_t j = 1; j <= ref.size(); ++j) next[j] = reach[j - 1] && ref[j - 1] == c;
    }
    reach.swap(next);
    if (std::none_of(reach.begin(), reach.end(), [](char r) { return r != 0; })) return false;
  }
  return reach[ref.size()] != 0;
}

// --- Hosts -----------------------------------------------------------------------------------

// Lowercase, without one trailing dot or a ":port"; "" for what cannot be a DNS name.
std::string normalise_host(std::string_view host) {
  if (host.find('[') != std::string_view::npos) return "";
  size_t colon = host.find(':');
  if (colon != std::string_view::npos) {
    std::string_view port = host.substr(colon + 1);
    if (port.empty() || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return "";
    }
    host = host.substr(0, colon);
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  return to_lower(host);
}

bool under(std::string_view host, std::string_view domain) {
  return host == domain ||
         (host.size() > domain.size() && host.substr(host.size() - domain.size()) == domain &&
          host[host.size() - domain.size() - 1] == '.');
}

enum class HostKind { kNotGithub, kWeb, kApi, kCodeload, kUploads, kRaw, kMedia, kSignedAsset, kGist, kUnknown };

HostKind classify_host(std::string_view h) {
  if (!under(h, "github.com") && !under(h, "githubusercontent.com")) return HostKind::kNotGithub;
  if (h == "github.com" || h == "www.github.com") return HostKind::kWeb;
  if (h == "api.github.com") return HostKind::kApi;
  if (h == "codeload.github.com") return HostKind::kCodeload;
  if (h == "uploads.github.com") return HostKind::kUploads;
  if (h == "raw.githubusercontent.com") return HostKind::kRaw;
  if (h == "media.githubusercontent.com") return HostKind::kMedia;
  if (h == "objects.githubusercontent.com" || h == "release-assets.githubusercontent.com" ||
      h == "github-cloud.githubusercontent.com") {
    return HostKind::kSignedAsset;
  }
  if (h == "gist.github.com" || h == "gist.githubusercontent.com") return HostKind::kGist;
  return HostKind::kUnknown;
}

// --- Paths -----------------------------------------------------------------------------------

// One path component after decoding. A segment holding an encoded '/' becomes several
// components, all marked `split`: a server that decodes before routing sees them as separate
// segments, one that routes first sees one; routes may only tolerate that where both readings
// lead to the same decision.
struct Component {
  std::string text;
  bool split = false;
};

// Splits and decodes the path of an origin-form target; "" or the reason it is malformed.
std::string parse_path(std::string_view target, std::vector<Component>& out) {
  if (target.empty() || target.front() != '/') return "the request target is not an origin-form path";
  for (char c : target) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return "the request target contains a control character, a space or a non-ASCII byte";
    if (c == '#') return "the request target contains a fragment";
  }
  std::string_view path = target.substr(0, target.find('?'));
  size_t pos = 0;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view raw = path.substr(pos, end - pos);
    pos = end + 1;
    if (raw.empty()) continue;  // repeated slashes collapse
    if (raw == "." || raw == "..") return "the path has a dot segment";
    std::string decoded;
    bool slash = false;
    for (size_t i = 0; i < raw.size(); ++i) {
      char c = raw[i];
      if (c == '%') {
        if (i + 2 >= raw.size() || !is_hex(raw[i + 1]) || !is_hex(raw[i + 2])) {
          return "the path has an invalid percent-encoding";
        }
        c = static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
        i += 2;
        if (c == '/') slash = true;
        if (c == '\0' || is_ctl(c)) return "the path has an encoded control character";
      }
      if (c == '\\') return "the path has a backslash";
      decoded += c;
    }
    if (decoded == "." || decoded == "..") return "the path has an encoded dot segment";
    std::string low = to_lower(decoded);
    for (std::string_view twice : {"%2e", "%2f", "%5c"}) {
      if (low.find(twice) != std::string::npos) return "the path has a double percent-encoding of '.', '/' or '\\'";
    }
    if (!slash) {
      out.push_back({std::move(decoded), false});
      continue;
    }
    for (const std::string& part : split(decoded, '/')) {
      if (part.empty() || part == "." || part == "..") {
        return "the path has an encoded '/' next to an empty or dot segment";
      }
      out.push_back({part, true});
    }
  }
  return "";
}

// --- Verdicts --------------------------------------------------------------------------------

Verdict allow(std::string rule, std::string repo = "") {
  Verdict v;
  v.allowed = true;
  v.rule = std::move(rule);
  v.repo = std::move(repo);
  return v;
}

Verdict deny(std::string rule, std::string reason, std::string repo = "") {
  Verdict v;
  v.rule = std::move(rule);
  v.reason = std::move(reason);
  v.repo = std::move(repo);
  return v;
}

bool is_read(std::string_view m) { return m == "GET" || m == "HEAD"; }

std::string cut(std::string_view s) { return quoted(s, 40); }

// Request facts every route needs.
struct Request {
  const Policy& p;
  std::string_view host;
  std::string_view method;
  const std::vector<Component>& parts;
  bool any = false;      // allowedRepos has "*"
  size_t free_from = 0;  // components from here on may come from an encoded '/'

  bool is(size_t i, std::string_view word) const { return i < parts.size() && equals_ignore_case(parts[i].text, word); }
  // A denial that only keeps the request inside the listed repositories: "*" lifts it.
  Verdict scoped(std::string rule, std::string reason, std::string repo = "") const {
    if (any) return allow("allowedRepos: *", std::move(repo));
    return deny(std::move(rule), std::move(reason), std::move(repo));
  }
};

Verdict check_repo(const Policy& p, const std::string& repo) {
  if (const std::string* entry = p.allowing_repo(repo)) return allow("allowedRepos: " + *entry, repo);
  return deny("repo-not-allowed", "repository " + repo + " is not in " + std::string(kReposPath), repo);
}

Verdict not_a_repo(std::string_view what) {
  return deny("malformed-path", std::string(what) + " is not a valid GitHub owner/repository name");
}

Verdict ref_write_not_inspected(const Verdict& v) {
  return deny("ref-write-not-inspected",
              "this request can update a ref named in a body the proxy does not inspect, and allowedRefs is set",
              v.repo);
}

// github.com, www.github.com.
constexpr std::string_view kReservedFirstSegments[] = {
    "about", "account", "api", "apps", "assets", "auth", "blog", "business", "codespaces", "collections",
    "contact", "copilot", "customer-stories", "dashboard", "discussions", "education", "enterprise",
    "enterprises", "events", "explore", "features", "gist", "github-copilot", "home", "issues", "join",
    "login", "logout", "marketplace", "new", "nonprofit", "notifications", "oauth", "open-source", "orgs",
    "organizations", "password_reset", "pricing", "pulls", "readme", "repositories", "resources", "search",
    "security", "sessions", "settings", "signup", "site", "solutions", "sponsors", "stars", "team", "teams",
    "topics", "trending", "users", "watching", "why-github"};

bool reserved_first_segment(std::string_view s) {
  return std::any_of(std::begin(kReservedFirstSegments), std::end(kReservedFirstSegments),
                     [&](std::string_view w) { return equals_ignore_case(s, w); });
}

// Which repository, if any, a github.com path names; the push and ref rules come after, in
// route_web, so that no lifted rule ("*") can skip them.
Verdict route_web_path(Request& r) {
  const auto& s = r.parts;
  if (s.empty()) return r.scoped("not-repo-scoped", "the github.com home page is not scoped to a repository");
  if (reserved_first_segment(s[0].text) || !valid_owner(s[0].text)) {
    if (r.method == "POST" && s.size() == 3 && r.is(0, "login") &&
        ((r.is(1, "device") && r.is(2, "code")) || (r.is(1, "oauth") && r.is(2, "access_token")))) {
      return allow("non-repo-endpoint");
    }
    return r.scoped("not-repo-scoped", "github.com/" + cut(s[0].text) +
                                           " is not a repository (only the OAuth device flow is allowed outside one)");
  }
  if (s.size() == 1) return r.scoped("not-repo-scoped", "a user or organisation page is not scoped to a repository");
  auto repo = repo_from(s[0].text, s[1].text);
  if (!repo) return not_a_repo("the second path segment");
  r.free_from = 4;  // owner, repo, route and its first sub-route read the same either way
  return check_repo(r.p, *repo);
}

Verdict route_web(Request& r) {
  const auto& s = r.parts;
  bool read = is_read(r.method);
  bool post = r.method == "POST";
  bool push = post && s.size() == 3 && r.is(2, "git-receive-pack");
  Verdict v = route_web_path(r);
  if (!read && !push) {
    // A push in any other spelling could reach receive-pack without being inspected.
    for (const Component& c : s) {
      if (to_lower(c.text).find("receive-pack") != std::string::npos) {
        return deny("malformed-path", "git-receive-pack is reached only by POST /OWNER/REPO[.git]/git-receive-pack",
                    v.repo);
      }
    }
  }
  if (!v.allowed) return v;
  if (push) {
    if (v.repo.empty()) {
      return deny("malformed-path", "a push must name a repository: POST /OWNER/REPO[.git]/git-receive-pack");
    }
    v.push = true;
    v.push_body = PushBody::kReceivePack;
    return v;
  }
  if (r.p.allowed_refs && !read && v.rule != "non-repo-endpoint") {
    // Web forms (edit a file, merge, delete a branch) update refs the proxy cannot see.
    bool git = post && !v.repo.empty() &&
               ((s.size() == 3 && r.is(2, "git-upload-pack")) || (s.size() >= 4 && r.is(2, "info") && r.is(3, "lfs")));
    if (!git) return ref_write_not_inspected(v);
  }
  return v;
}

// What follows /repos/{o}/{r} (or /repositories/{id} under "*"): `k` is the index of the first
// component after the repository.
Verdict route_api_repo(Request& r, size_t k, Verdict v) {
  const auto& s = r.parts;
  size_t n = s.size() - k;  // components after the repository
  std::string_view m = r.method;
  bool read = is_read(m);
  // The route keyword and its sub-route (git/refs, pulls/{n}) must read the same both ways;
  // after keywords whose next component is already a free ref or file path, and whose
  // decisions below depend only on the keyword, the path may carry an encoded '/'.
  bool path_follows = n >= 1 && one_of_ic(s[k].text, {"contents", "branches", "commits", "compare", "tarball",
                                                       "zipball", "readme"});
  r.free_from = k + (path_follows ? 1 : 2);

  if (!r.any && !read) {
    if (n == 0 && (m == "PATCH" || m == "DELETE")) {
      return deny("repo-admin", "changing or deleting the repository itself (visibility, name, owner) is not allowed",
                  v.repo);
    }
    if (n == 1 && m == "POST" && one_of_ic(s[k].text, {"forks", "generate", "transfer"})) {
      return deny("cross-repo", "forking, generating from a template or transferring would put the repository's "
                                "contents in a repository outside allowedRepos", v.repo);
    }
    if (n >= 1 && one_of_ic(s[k].text, {"hooks", "keys", "collaborators", "invitations", "pages", "codespaces"})) {
      return deny("repo-admin", "changing webhooks, deploy keys, collaborators, Pages or codespaces opens the "
                                "repository, or compute, outside the sandbox", v.repo);
    }
  }

  if (!read && n >= 2 && r.is(k, "git") && r.is(k + 1, "refs")) {
    if (n == 2 && m == "POST") {  // the ref is in the JSON body
      v.push = true;
      v.push_body = PushBody::kCreateRef;
      return v;
    }
    if (n > 2 && (m == "PATCH" || m == "DELETE")) {
      std::string ref = "refs";
      for (size_t i = k + 2; i < s.size(); ++i) ref += "/" + s[i].text;
      if (auto st = check_ref_format(ref); !st) return deny("malformed-path", st.error().message(), v.repo);
      if (!r.p.allowed_refs) return v;
      if (const std::string* pat = r.p.allowing_ref(ref)) return allow("allowedRefs: " + *pat, v.repo);
      return deny("ref-not-allowed",
                  std::string(m == "DELETE" ? "deleting " : "updating ") + quoted(ref, 80) + " is not allowed by allowedRefs",
                  v.repo);
    }
    if (r.p.allowed_refs) return ref_write_not_inspected(v);
    return v;
  }

  if (r.p.allowed_refs && !read && n >= 1) {
    std::string_view kw = s[k].text;
    bool writes_ref =
        (equals_ignore_case(kw, "contents") && (m == "PUT" || m == "DELETE")) ||
        (one_of_ic(kw, {"merges", "merge-upstream"}) && m == "POST") ||
        equals_ignore_case(kw, "branches") ||
        (equals_ignore_case(kw, "releases") && ((m == "POST" && n == 1) || (m == "PATCH" && n == 2))) ||
        (equals_ignore_case(kw, "pulls") && m == "PUT" && n >= 3 &&
         one_of_ic(s.back().text, {"merge", "update-branch"}));
    if (writes_ref) return ref_write_not_inspected(v);
  }
  return v;
}

Verdict route_api(Request& r) {
  const auto& s = r.parts;
  bool read = is_read(r.method);
  if (s.empty()) {
    if (read) return allow("non-repo-endpoint");
    return r.scoped("not-repo-scoped", "api.github.com/ accepts only GET");
  }
  if (s.size() == 1 && read && one_of_ic(s[0].text, {"user", "rate_limit", "meta", "zen", "octocat", "emojis", "versions"})) {
    return allow("non-repo-endpoint");
  }
  if (r.is(0, "graphql")) {
    if (r.any && !r.p.allowed_refs) return allow("allowedRepos: *");
    return deny("graphql", r.any ? "GraphQL mutations can update any ref, and allowedRefs is set"
                                 : "a GraphQL query can name any repository, so it cannot be checked against allowedRepos");
  }
  if (r.is(0, "repositories")) {
    if (!r.any) {
      return deny("repository-by-id", "a repository named by numeric id cannot be checked against allowedRepos");
    }
    if (s.size() < 2) return allow("allowedRepos: *");
    return route_api_repo(r, 2, allow("allowedRepos: *"));
  }
  if (r.is(0, "repos")) {
    if (s.size() < 3) return r.scoped("not-repo-scoped", "/repos needs /OWNER/REPO");
    auto repo = repo_from(s[1].text, s[2].text);
    if (!repo) return not_a_repo("/repos/OWNER/REPO");
    Verdict v = check_repo(r.p, *repo);
    if (!v.allowed) {
      r.free_from = 3;
      return v;
    }
    return route_api_repo(r, 3, std::move(v));
  }
  return r.scoped("not-repo-scoped", "api.github.com/" + cut(s[0].text) + " is not scoped to one repository");
}

// Hosts whose paths start with /{owner}/{repo} (after `skip` fixed components), read-only.
Verdict route_download(Request& r, size_t skip, std::string_view shape) {
  const auto& s = r.parts;
  if (s.size() < skip + 2) return r.scoped("not-repo-scoped", std::string(r.host) + " serves " + std::string(shape) + " only");
  auto repo = repo_from(s[skip].text, s[skip + 1].text);
  if (!repo) return not_a_repo("the path");
  r.free_from = skip + 2;
  Verdict v = check_repo(r.p, *repo);
  if (!v.allowed) return v;
  if (!is_read(r.method)) return deny("method-not-allowed", std::string(r.host) + " serves downloads only (GET)", v.repo);
  return v;
}

Verdict route_codeload(Request& r) {
  Verdict v = route_download(r, 0, "/OWNER/REPO/{tar.gz|zip|legacy.tar.gz|legacy.zip}/REF");
  if (!v.allowed || r.parts.size() < 2) return v;
  r.free_from = 3;
  if (r.parts.size() < 3 || !one_of_ic(r.parts[2].text, {"tar.gz", "zip", "legacy.tar.gz", "legacy.zip"})) {
    return deny("malformed-path", "codeload.github.com serves /OWNER/REPO/{tar.gz|zip|legacy.tar.gz|legacy.zip}/REF",
                v.repo);
  }
  return v;
}

Verdict route_uploads(Request& r) {
  const auto& s = r.parts;
  if (!r.is(0, "repos") || s.size() < 4) {
    return r.scoped("not-repo-scoped", "uploads.github.com serves /repos/OWNER/REPO/releases/... only");
  }
  auto repo = repo_from(s[1].text, s[2].text);
  if (!repo) return not_a_repo("/repos/OWNER/REPO");
  r.free_from = 4;
  Verdict v = check_repo(r.p, *repo);
  if (!v.allowed) return v;
  if (!r.is(3, "releases")) return deny("malformed-path", "uploads.github.com serves /repos/OWNER/REPO/releases/... only", v.repo);
  if (r.method != "POST") return deny("method-not-allowed", "uploads.github.com accepts release asset uploads (POST) only", v.repo);
  return v;
}

}  // namespace

// --- Policy ----------------------------------------------------------------------------------

Result<Policy> Policy::compile(const std::vector<std::string>& repos,
                               const std::optional<std::vector<std::string>>& refs) {
  Policy p;
  for (const std::string& e : repos) {
    auto n = normalise_repo_entry(e);
    if (!n) return fail(std::move(n).error().wrap(kReposPath));
    if (std::find(p.allowed_repos.begin(), p.allowed_repos.end(), *n) == p.allowed_repos.end()) {
      p.allowed_repos.push_back(std::move(*n));
    }
  }
  if (refs) {
    p.allowed_refs.emplace();
    for (const std::string& e : *refs) {
      auto n = normalise_ref_glob(e);
      if (!n) return fail(std::move(n).error().wrap(kRefsPath));
      if (std::find(p.allowed_refs->begin(), p.allowed_refs->end(), *n) == p.allowed_refs->end()) {
        p.allowed_refs->push_back(std::move(*n));
      }
    }
  }
  return p;
}

bool Policy::allows_any_repo() const {
  return std::find(allowed_repos.begin(), allowed_repos.end(), "*") != allowed_repos.end();
}

const std::string* Policy::allowing_repo(std::string_view repo) const {
  size_t slash = repo.find('/');
  if (slash == std::string_view::npos) return nullptr;
  std::string_view owner = repo.substr(0, slash);
  for (const std::string& e : allowed_repos) {
    if (e == "*" || e == repo) return &e;
    if (e.size() == owner.size() + 2 && e.compare(0, owner.size(), owner) == 0 && e.substr(owner.size()) == "/*") {
      return &e;
    }
  }
  return nullptr;
}

const std::string* Policy::allowing_ref(std::string_view ref) const {
  if (!allowed_refs) return nullptr;
  for (const std::string& pat : *allowed_refs) {
    if (glob_matches(pat, ref)) return &pat;
  }
  return nullptr;
}

// --- Requests --------------------------------------------------------------------------------

bool is_github_host(std::string_view host) {
  return classify_host(normalise_host(host)) != HostKind::kNotGithub;
}

Verdict check_request(const Policy& p, std::string_view host, std::string_view method, std::string_view target) {
  std::string h = normalise_host(host);
  HostKind kind = classify_host(h);
  if (kind == HostKind::kNotGithub) return deny("not-github-host", "the host is not a GitHub host");
  if (p.allowed_repos.empty()) {
    return deny("no-repos-allowed", std::string(kReposPath) + " is empty: the sandbox has no GitHub access");
  }
  if (!(method == "GET" || method == "HEAD" || method == "POST" || method == "PUT" || method == "PATCH" ||
        method == "DELETE")) {
    return deny("method-not-allowed", "method " + cut(method) + " is not allowed on GitHub hosts");
  }
  std::vector<Component> parts;
  if (std::string bad = parse_path(target, parts); !bad.empty()) return deny("malformed-path", bad);

  Request r{p, h, method, parts, p.allows_any_repo(), parts.size()};
  Verdict v;
  switch (kind) {
    case HostKind::kWeb: v = route_web(r); break;
    case HostKind::kApi: v = route_api(r); break;
    case HostKind::kCodeload: v = route_codeload(r); break;
    case HostKind::kUploads: v = route_uploads(r); break;
    case HostKind::kRaw: v = route_download(r, 0, "/OWNER/REPO/REF/PATH"); break;
    case HostKind::kMedia:
      if (!r.is(0, "media")) {
        v = r.scoped("not-repo-scoped", "media.githubusercontent.com serves /media/OWNER/REPO/REF/PATH only");
      } else {
        v = route_download(r, 1, "/media/OWNER/REPO/REF/PATH");
      }
      break;
    case HostKind::kSignedAsset:
      v = is_read(method) ? allow("signed-asset")
                          : deny("method-not-allowed", h + " serves signed downloads only (GET)");
      break;
    case HostKind::kGist:
    case HostKind::kUnknown:
      v = kind == HostKind::kGist
              ? r.scoped("gist", "gists are not repositories of allowedRepos")
              : r.scoped("unknown-host", quoted(h, 80) + " is not a GitHub host the proxy knows how to check");
      // Only "*" gets here allowed; a write could still update refs the proxy cannot see.
      if (v.allowed && p.allowed_refs && !is_read(method)) v = ref_write_not_inspected(v);
      break;
    case HostKind::kNotGithub: break;
  }
  for (size_t i = 0; i < std::min(r.free_from, parts.size()); ++i) {
    if (parts[i].split) {
      return deny("malformed-path", "an encoded '/' in the repository or route part of the path could be read two ways",
                  v.repo);
    }
  }
  return v;
}

// --- Pushes ----------------------------------------------------------------------------------

ReceivePackScanner::State ReceivePackScanner::fail(std::string message) {
  state_ = State::kError;
  error_ = std::move(message);
  buf_.clear();
  return state_;
}

bool ReceivePackScanner::take_oid(std::string_view oid, const char* what) {
  if (oid.size() != 40 && oid.size() != 64) {
    fail(std::string(what) + " object id is not 40 or 64 hex digits");
    return false;
  }
  if (!std::all_of(oid.begin(), oid.end(), is_lower_hex)) {
    fail(std::string(what) + " object id is not lowercase hex");
    return false;
  }
  if (oid_len_ == 0) {
    oid_len_ = oid.size();
  } else if (oid.size() != oid_len_) {
    fail(format_named_ ? std::string(what) + " object id does not match the object-format capability"
                       : "object ids of different lengths (sha1 and sha256 mixed)");
    return false;
  }
  return true;
}

void ReceivePackScanner::take_line(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (line.substr(0, 8) == "shallow ") {
    if (!updates_.empty()) {
      fail("a shallow line after a command");
      return;
    }
    take_oid(line.substr(8), "shallow");
    return;
  }
  if (line.substr(0, 9) == "push-cert") {
    fail("signed pushes (push-cert) are not supported");
    return;
  }
  size_t nul = line.find('\0');
  std::string_view cmd = line.substr(0, nul);
  if (nul != std::string_view::npos) {
    if (!updates_.empty()) {
      fail("capabilities after the first command");
      return;
    }
    for (const std::string& cap : split(line.substr(nul + 1), ' ')) {
      if (cap.empty()) continue;
      if (!std::all_of(cap.begin(), cap.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
        fail("a capability contains a control character or a non-ASCII byte");
        return;
      }
      if (cap.substr(0, 14) != "object-format=") continue;
      std::string_view name = std::string_view(cap).substr(14);
      size_t len = name == "sha1" ? 40 : name == "sha256" ? 64 : 0;
      if (len == 0) {
        fail("unknown object-format " + quoted(name, 20));
        return;
      }
      if (format_named_) {
        fail("object-format given twice");
        return;
      }
      if (oid_len_ != 0 && oid_len_ != len) {
        fail("shallow object ids do not match the object-format capability");
        return;
      }
      oid_len_ = len;
      format_named_ = true;
    }
  }
  size_t sp1 = cmd.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : cmd.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) {
    fail("a command is not \"<old-oid> SP <new-oid> SP <ref>\"");
    return;
  }
  std::string_view old_oid = cmd.substr(0, sp1), new_oid = cmd.substr(sp1 + 1, sp2 - sp1 - 1), ref = cmd.substr(sp2 + 1);
  if (!take_oid(old_oid, "old") || !take_oid(new_oid, "new")) return;
  if (auto st = check_ref_format(ref); !st) {
    fail(st.error().message());
    return;
  }
  if (updates_.size() >= kMaxCommands) {
    fail("more than " + std::to_string(kMaxCommands) + " commands in one push");
    return;
  }
  auto zero = [](std::string_view oid) { return std::all_of(oid.begin(), oid.end(), [](char c) { return c == '0'; }); };
  RefUpdate u{std::string(old_oid), std::string(new_oid), std::string(ref), zero(new_oid), zero(old_oid)};
  if (u.creation && u.deletion) {
    fail("a command with both object ids zero");
    return;
  }
  updates_.push_back(std::move(u));
}

ReceivePackScanner::State ReceivePackScanner::feed(std::string_view data) {
  size_t i = 0;
  while (state_ == State::kNeedMore && i < data.size()) {
    if (payload_len_ == 0) {  // the 4 length digits
      size_t n = std::min(4 - buf_.size(), data.size() - i);
      buf_.append(data.substr(i, n));
      i += n;
      consumed_ += n;
      if (buf_.size() < 4) break;
      size_t len = 0;
      for (char c : buf_) {
        if (!is_hex(c)) return fail("a pkt-line length is not 4 hex digits");
        len = len * 16 + hex_value(c);
      }
      buf_.clear();
      if (len == 0) {  // flush-pkt: the command list ends
        if (updates_.empty() && seen_pkt_) return fail("a command list with shallow lines but no command");
        probe_ = !seen_pkt_;
        state_ = State::kDone;
        break;
      }
      if (len == 1) return fail("a delim-pkt (0001) in a push command list");
      if (len == 2) return fail("a response-end-pkt (0002) in a push command list");
      if (len <= 4) return fail("pkt-line length " + std::to_string(len) + " is invalid");
      if (len > kMaxPktLine) return fail("a pkt-line longer than 65520 bytes");
      if (consumed_ + (len - 4) + 4 > kMaxCommandListBytes) {
        return fail("a push command list longer than " + std::to_string(kMaxCommandListBytes) + " bytes");
      }
      payload_len_ = len - 4;
      seen_pkt_ = true;
    } else {
      size_t n = std::min(payload_len_ - buf_.size(), data.size() - i);
      buf_.append(data.substr(i, n));
      i += n;
      consumed_ += n;
      if (buf_.size() < payload_len_) break;
      std::string line = std::move(buf_);
      buf_.clear();
      payload_len_ = 0;
      take_line(line);
    }
  }
  return state_;
}

Verdict check_push(const Policy& p, std::string_view repo_in, const std::vector<RefUpdate>& updates) {
  std::string repo = to_lower(repo_in);
  if (updates.empty()) return deny("malformed-push", "the push updates no ref", repo);
  const std::string* entry = p.allowing_repo(repo);
  if (!entry) return deny("repo-not-allowed", "repository " + cut(repo) + " is not in " + std::string(kReposPath), repo);
  for (const RefUpdate& u : updates) {
    if (auto st = check_ref_format(u.ref); !st) return deny("malformed-push", st.error().message(), repo);
  }
  if (!p.allowed_refs) return allow("allowedRepos: " + *entry, repo);
  std::vector<std::string> used;
  for (const RefUpdate& u : updates) {
    const std::string* pat = p.allowing_ref(u.ref);
    if (!pat) {
      return deny("ref-not-allowed",
                  std::string(u.deletion ? "deleting " : "pushing to ") + quoted(u.ref, 80) + " is not allowed by allowedRefs",
                  repo);
    }
    if (std::find(used.begin(), used.end(), *pat) == used.end()) used.push_back(*pat);
  }
  std::string rule = "allowedRefs: ";
  for (size_t i = 0; i < used.size(); ++i) rule += (i ? ", " : "") + used[i];
  return allow(std::move(rule), repo);
}

Verdict check_push(const Policy& p, std::string_view repo, const ReceivePackScanner& scanner) {
  switch (scanner.state()) {
    case ReceivePackScanner::State::kNeedMore:
      return deny("malformed-push", "the push body ended inside its command list", to_lower(repo));
    case ReceivePackScanner::State::kError:
      return deny("malformed-push", "the push command list is malformed: " + scanner.error(), to_lower(repo));
    case ReceivePackScanner::State::kDone:
      break;
  }
  if (scanner.probe()) {
    if (!p.allowing_repo(to_lower(repo))) {
      return deny("repo-not-allowed", "repository " + cut(repo) + " is not in " + std::string(kReposPath), to_lower(repo));
    }
    return allow("push-probe", to_lower(repo));
  }
  return check_push(p, repo, scanner.updates());
}

Result<RefUpdate> parse_create_ref_body(std::string_view text) {
  using json = nlohmann::json;
  // Nesting is bounded before parsing so no input can exhaust the stack of a recursive reader.
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > 16) return invalid("the create-ref body nests more than 16 levels");
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  std::set<std::string> keys;
  bool duplicate = false;
  json::parser_callback_t cb = [&](int d, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && d == 1 && parsed.is_string() &&
        !keys.insert(parsed.get<std::string>()).second) {
      duplicate = true;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
  } catch (const std::exception&) {
    return invalid("the create-ref body is not valid JSON");
  }
  if (j.is_discarded()) return invalid("the create-ref body is not valid JSON");
  if (!j.is_object()) return invalid("the create-ref body is not a JSON object");
  if (duplicate) return invalid("the create-ref body has a member twice");
  auto ref_it = j.find("ref");
  auto sha_it = j.find("sha");
  if (ref_it == j.end() || !ref_it->is_string()) return invalid("the create-ref body has no string \"ref\"");
  if (sha_it == j.end() || !sha_it->is_string()) return invalid("the create-ref body has no string \"sha\"");
  std::string ref = ref_it->get<std::string>();
  std::string sha = to_lower(sha_it->get<std::string>());
  KM_TRY(check_ref_format(ref));
  if ((sha.size() != 40 && sha.size() != 64) || !std::all_of(sha.begin(), sha.end(), is_lower_hex)) {
    return invalid("the create-ref \"sha\" is not 40 or 64 hex digits");
  }
  if (std::all_of(sha.begin(), sha.end(), [](char c) { return c == '0'; })) {
    return invalid("the create-ref \"sha\" is all zeros");
  }
  return RefUpdate{std::string(sha.size(), '0'), sha, ref, false, true};
}

Status check_ref_format(std::string_view ref) {
  auto bad = [&](std::string why) { return invalid("ref " + quoted(ref, 80) + " " + why); };
  if (ref.size() > kMaxRefLength) return invalid("a ref name longer than " + std::to_string(kMaxRefLength) + " bytes");
  if (ref.substr(0, 5) != "refs/" || ref.size() == 5) return bad("is not a full ref name (refs/...)");
  for (char c : ref) {
    if (is_ctl(c)) return bad("contains a control character");
    if (std::string_view(" ~^:?*[\\").find(c) != std::string_view::npos) {
      return bad("contains a character git does not allow in ref names");
    }
  }
  if (ref.find("..") != std::string_view::npos) return bad("contains \"..\"");
  if (ref.find("@{") != std::string_view::npos) return bad("contains \"@{\"");
  if (ref.back() == '.') return bad("ends with '.'");
  size_t pos = 0;
  while (pos <= ref.size()) {
    size_t end = ref.find('/', pos);
    if (end == std::string_view::npos) end = ref.size();
    std::string_view part = ref.substr(pos, end - pos);
    if (part.empty()) return bad("has an empty path component");
    if (part.front() == '.') return bad("has a component starting with '.'");
    if (part.size() >= 5 && part.substr(part.size() - 5) == ".lock") return bad("has a component ending in \".lock\"");
    pos = end + 1;
  }
  return ok();
}

bool is_method_override_header(std::string_view name) {
  return one_of_ic(name, {"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"});
}

std::string denial_hint(const Verdict& v) {
  const std::string& r = v.rule;
  if (r == "repo-not-allowed") {
    return "add " + (v.repo.empty() ? std::string("OWNER/REPO") : v.repo) + " to " + std::string(kReposPath);
  }
  if (r == "no-repos-allowed") return "list the repositories the sandbox needs in " + std::string(kReposPath);
  if (r == "ref-not-allowed") return "add the branch, or a glob that matches it, to " + std::string(kRefsPath);
  if (r == "ref-write-not-inspected") {
    return "update refs with git push or the git refs API (/repos/OWNER/REPO/git/refs), or remove " + std::string(kRefsPath);
  }
  if (r == "graphql") {
    return "use git or the REST API (gh api repos/OWNER/REPO/...); GraphQL is allowed only with allowedRepos [\"*\"] "
           "and no allowedRefs";
  }
  if (r == "repository-by-id") {
    return "address the repository by name (/repos/OWNER/REPO/...); if it was renamed, list its new name";
  }
  if (r == "not-repo-scoped" || r == "gist" || r == "unknown-host") {
    return "only requests about a listed repository are allowed; allowedRepos [\"*\"] lifts this rule";
  }
  if (r == "cross-repo" || r == "repo-admin") return "make this change outside the sandbox";
  if (r == "malformed-path") return "send the path without dot segments, backslashes or encoded separators";
  if (r == "malformed-push") return "push with a standard git client; compressed push bodies are not inspected";
  if (r == "method-not-allowed") return "this host does not accept this method through the proxy";
  return "";
}

std::string denial_json(const Verdict& v) {
  nlohmann::ordered_json j;
  j["error"] = "github_request_denied";
  j["rule"] = v.rule;
  j["repo"] = v.repo.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(v.repo);
  j["reason"] = v.reason;
  j["hint"] = denial_hint(v);
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace km::proxy::github
