// GitHub access rules of one sandbox (spec.sourceAccess.github) and the decisions the egress
// proxy takes with them for each HTTP request it sees inside a TLS connection to a GitHub host
// it terminates. Pure code: no I/O, no clock, no exceptions escape.
//
// What the caller does (the enforcer): when sourceAccess.github is set, every connection to a
// name for which is_github_host() is true is terminated with the sandbox's CA, never tunnelled;
// each request head goes to check_request() with the host the connection was made to (the
// CONNECT authority or SNI, which the caller has already required to equal the Host header),
// the method, and the origin-form target. A denied request gets a 403 with denial_json().
// An allowed request with push=true has a body the caller must inspect before forwarding:
//   PushBody::kReceivePack   feed the de-chunked body to a ReceivePackScanner until it is not
//                            kNeedMore, then check_push(policy, verdict.repo, scanner); only the
//                            command list is held back, the rest (push options, pack) follows.
//   PushBody::kCreateRef     buffer the JSON body (at most kMaxCommandListBytes), then
//                            parse_create_ref_body() and check_push() with its one update.
// A request whose body carries a Content-Encoding cannot be inspected: the caller denies it
// (git never compresses a push). A request carrying a method-override header
// (is_method_override_header) is denied too: the method decided here must be the one served.
//
// Fail closed: on an inspected host, anything not recognised (an unknown host under github.com
// or githubusercontent.com, an unknown API path, a path that could be read two ways) is denied
// with a rule and a reason. `*` in allowedRepos lifts the rules that keep requests inside the
// listed repositories (repo-not-allowed, not-repo-scoped, graphql, repository-by-id, gist,
// unknown-host, cross-repo, repo-admin); it never lifts malformed-path, method-not-allowed or
// the allowedRefs rules. docs/github.md describes the rules for operators.
//
// Paths are normalised before any decision: repeated slashes collapse, segments are
// percent-decoded once, owner and repository compare case-insensitively and lose a trailing
// ".git", and the query is ignored. Refused as malformed-path: `.` or `..` segments (raw or
// encoded), backslashes, control characters, invalid %-encoding, a double encoding of '.', '/'
// or '\', and an encoded '/' anywhere except in the trailing ref or file path of an API route,
// where it cannot change which repository or route the request reaches.
//
// Reasons and errors never quote the query (it may carry a token); ref names are quoted and cut.
// Thread-safety: Policy is immutable after compile(); ReceivePackScanner is a single-owner state
// machine; everything else is a function of its arguments.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"

namespace km::proxy::github {

// Limits of a push's command list (the pkt-lines before the first flush).
inline constexpr size_t kMaxCommands = 10'000;
inline constexpr size_t kMaxCommandListBytes = 1024 * 1024;
inline constexpr size_t kMaxRefLength = 4096;

struct Policy {
  // Normalised entries: "owner/repo" (lowercase, no ".git"), "owner/*" or "*". Build with
  // compile(): the check functions assume normalised entries.
  std::vector<std::string> allowed_repos;
  // Full ref-name globs ("refs/heads/main", "refs/heads/feature/*", "refs/tags/**"); nullopt:
  // any ref of an allowed repository may be updated. An empty list allows no ref update.
  std::optional<std::vector<std::string>> allowed_refs;

  // Entries as in the profile: repos `owner/repo`, `owner/*`, `*`, with an optional leading
  // `github.com/` and `.git`; refs are globs where `*` matches within one path segment and `**`
  // across segments, and a pattern not starting with `refs/` names branches (`refs/heads/<p>`).
  // Errors (kInvalidArgument) name the entry: a repo that is not owner/repo, owner/* or *, an
  // owner or name with characters GitHub does not allow, a ref glob with characters git does
  // not allow in ref names (`?` and `[` are refused rather than silently never matching),
  // empty segments, `***`, or a leading or trailing '/'.
  static Result<Policy> compile(const std::vector<std::string>& repos,
                                const std::optional<std::vector<std::string>>& refs);

  bool allows_any_repo() const;
  // The entry that allows `repo` (normalised owner/repo), or nullptr.
  const std::string* allowing_repo(std::string_view repo) const;
  // The glob that allows updating `ref` (a full ref name), or nullptr; nullptr also when
  // allowed_refs is nullopt (callers check that first).
  const std::string* allowing_ref(std::string_view ref) const;
};

// True for the names whose requests the GitHub rules decide: github.com, githubusercontent.com
// and every name under them. Known ones get their own rules (below); the rest (pkg.github.com,
// avatars.githubusercontent.com, ...) are denied as unknown-host unless allowedRepos has `*`,
// so a new GitHub service is closed until someone decides what it may do. Any case, one
// trailing dot and a ":port" suffix are accepted; IP literals are not GitHub hosts (they are
// left to allowedCIDRs, which should not name GitHub's ranges).
bool is_github_host(std::string_view host);

// Which body an allowed request carries that the caller must inspect (see the file comment).
enum class PushBody { kNone, kReceivePack, kCreateRef };

struct Verdict {
  bool allowed = false;
  std::string repo;    // normalised owner/repo the request names, "" if none
  // Allowed: "allowedRepos: owner/*", "allowedRefs: refs/heads/main", "non-repo-endpoint",
  // "signed-asset", "push-probe". Denied: "repo-not-allowed", "no-repos-allowed", "graphql",
  // "repository-by-id", "not-repo-scoped", "gist", "unknown-host", "not-github-host",
  // "cross-repo", "repo-admin", "ref-not-allowed", "ref-write-not-inspected",
  // "method-not-allowed", "malformed-path", "malformed-push".
  std::string rule;
  std::string reason;  // one sentence for the 403 body and the audit record
  bool push = false;   // the body updates refs: inspect it as push_body says, then check_push
  PushBody push_body = PushBody::kNone;  // kNone exactly when push is false
};

// Decides one request. `host` as for is_github_host; `method` as sent (methods are
// case-sensitive: "get" is not GET); `target` in origin-form ("/path?query"). Per host:
//   github.com, www.github.com   /{owner}/{repo}[.git][/...] is checked against allowedRepos,
//       git smart HTTP included; POST .../git-receive-pack is a push (kReceivePack). Reserved
//       first segments (login, settings, orgs, ...) are not repositories: only POST
//       /login/device/code and /login/oauth/access_token (device flow) are allowed.
//   api.github.com   /repos/{owner}/{repo}[/...] is checked; /graphql, /repositories/{id} and
//       everything not scoped to one repository are denied, except GET /, /user, /rate_limit,
//       /meta, /zen, /octocat, /emojis, /versions. Forks, templates, transfers (cross-repo) and
//       changes to the repository itself, its hooks, deploy keys, collaborators, invitations,
//       Pages and codespaces (repo-admin) are denied.
//   codeload.github.com  /{o}/{r}/{tar.gz|zip|legacy.tar.gz|legacy.zip}/...   GET
//   raw.githubusercontent.com  /{o}/{r}/...   media.githubusercontent.com  /media/{o}/{r}/...   GET
//   uploads.github.com  POST /repos/{o}/{r}/releases/...
//   objects, release-assets and github-cloud .githubusercontent.com  GET only (signed-asset):
//       short-lived signed URLs reached by a redirect from a checked request; they name the
//       repository by numeric id only, so they cannot be checked, and they cannot carry data
//       out (GET, no body, GitHub's storage is the only reader).
//   gist.github.com, gist.githubusercontent.com  denied unless `*` (gists are not repositories).
// With allowedRefs set, a request that can update a ref is allowed only where the ref can be
// checked: git-receive-pack (push body), POST /repos/{o}/{r}/git/refs (JSON body), PATCH and
// DELETE /repos/{o}/{r}/git/refs/{ref} (ref from the path). Known API calls that move a ref
// named in a body the proxy does not read (contents PUT/DELETE, merges, merge-upstream,
// pull merge and update-branch, branches/*, release create/edit) and POSTs on github.com other
// than git and Git LFS (web forms) are denied as ref-write-not-inspected, and so is GraphQL.
Verdict check_request(const Policy& p, std::string_view host, std::string_view method,
                      std::string_view target);

// One command of a push: old and new object ids in lowercase hex, the full ref name.
struct RefUpdate {
  std::string old_oid, new_oid, ref;
  bool deletion = false;  // new_oid is all zeros
  bool creation = false;  // old_oid is all zeros
};

// Reads the command list at the start of a git-receive-pack request body
// (gitprotocol-pack: *shallow command-list), as bytes arrive. Strict:
//   - pkt-lines with 4 hex digit lengths up to 65520; 0000 (flush) ends the list; 0001, 0002,
//     lengths 1-4 and lengths over 65520 are errors;
//   - optional "shallow <oid>" lines, then commands "<old> SP <new> SP <ref>", the first one
//     optionally followed by NUL and capabilities, each optionally ending in LF;
//   - object ids are 40 (sha1) or 64 (sha256) lowercase hex digits, one length for the whole
//     list, the one object-format=... names if given; both ids zero is an error;
//   - refs pass check_ref_format(); signed pushes (push-cert) are refused;
//   - at most kMaxCommands commands and kMaxCommandListBytes bytes.
// A flush after shallow lines but before any command is an error. A lone flush as the whole
// command list is git's authentication probe (remote-curl sends "0000" before a push larger
// than http.postBuffer): state kDone, no updates, probe() true; it updates nothing, and the
// caller should require the body to end there.
// feed() consumes only the command list: once kDone it takes no more bytes, and consumed()
// says where the rest of the body (push options, pack) starts. After kError every feed()
// returns kError and error() says why (never quoting more than a cut ref name).
class ReceivePackScanner {
 public:
  enum class State { kNeedMore, kDone, kError };
  State feed(std::string_view data);
  State state() const { return state_; }
  const std::vector<RefUpdate>& updates() const { return updates_; }
  const std::string& error() const { return error_; }
  size_t consumed() const { return consumed_; }  // bytes of the body taken so far, in total
  bool probe() const { return probe_; }

 private:
  State fail(std::string message);
  void take_line(std::string_view payload);
  bool take_oid(std::string_view oid, const char* what);

  State state_ = State::kNeedMore;
  std::string buf_;          // the pkt-line being read: its 4 length digits, then its payload
  size_t payload_len_ = 0;   // 0 while reading the length
  size_t consumed_ = 0;
  size_t oid_len_ = 0;       // 40 or 64 once known
  bool format_named_ = false;  // object-format=... was given
  bool seen_pkt_ = false;
  bool probe_ = false;
  std::vector<RefUpdate> updates_;
  std::string error_;
};

// May these updates of `repo` happen? The repository must be allowed; with allowedRefs set
// every updated ref (deletions included) must match a glob, else the whole push is denied
// naming the first refused ref. No updates, or an update whose ref fails check_ref_format, is
// malformed-push.
Verdict check_push(const Policy& p, std::string_view repo, const std::vector<RefUpdate>& updates);
// The same for a scanner that has stopped: kNeedMore (the body ended inside the command list)
// and kError are malformed-push, a probe is allowed as push-probe.
Verdict check_push(const Policy& p, std::string_view repo, const ReceivePackScanner& scanner);

// The body of POST /repos/{o}/{r}/git/refs: a JSON object with string members "ref" (a full
// ref name, checked with check_ref_format) and "sha" (40 or 64 hex digits). A duplicate
// member is an error (the proxy and GitHub must read the same ref). Errors: kInvalidArgument.
Result<RefUpdate> parse_create_ref_body(std::string_view json);

// The basic rules of `git check-ref-format` for a full ref name: starts with "refs/" and has
// a name after it; no empty component (`//`, trailing `/`), no component starting with '.' or
// ending in ".lock"; no "..", "@{", control characters, SP, or any of ~^:?*[\ ; not ending in
// '.'; at most kMaxRefLength bytes.
Status check_ref_format(std::string_view ref);

// X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override (any case): a request carrying one
// is denied by the caller, since the method decided would not be the method served.
bool is_method_override_header(std::string_view name);

// The hint shown with a denial: what to change in the profile, or how to do it another way.
std::string denial_hint(const Verdict& v);
// The 403 body: {"error":"github_request_denied","rule":..,"repo":..|null,"reason":..,"hint":..}.
std::string denial_json(const Verdict& v);

}  // namespace km::proxy::github
