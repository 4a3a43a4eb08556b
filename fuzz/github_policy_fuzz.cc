// Fuzz target: km/proxy/github_policy.h on untrusted requests and push bodies.
// Input: one byte choosing a policy, then "host \n method \n target \n body".
// Properties checked as it goes:
//   - check_request is a function of its arguments; denials have a reason and a valid JSON 403
//     body; push is set only on allowed requests and agrees with push_body;
//   - an allowed request that names a repository names one the policy allows, in lowercase;
//   - a path with a "." or ".." segment (raw or percent-encoded) is never allowed;
//   - a POST to github.com whose path mentions receive-pack is never allowed without push;
//   - is_github_host agrees with check_request's not-github-host;
//   - the receive-pack scanner gives the same answer (state, consumed bytes, updates, error)
//     fed at once or in random splits, including empty ones; what it accepts passes
//     check_ref_format and uses one object id length; check_push allows only refs a glob allows.
// Any crash, sanitizer report or abort is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_support.h"
#include "km/proxy/github_policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;
using km::fuzz::Rng;

namespace gh = km::proxy::github;

const std::vector<gh::Policy>& policies() {
  static const std::vector<gh::Policy> all = [] {
    std::vector<gh::Policy> out;
    auto add = [&](std::vector<std::string> repos, std::optional<std::vector<std::string>> refs) {
      auto p = gh::Policy::compile(repos, refs);
      if (!p) die("a fixed policy did not compile");
      out.push_back(*p);
    };
    add({"acme/widget", "friends/*"}, std::nullopt);
    add({"acme/widget", "github.com/Acme/Tools.git"},
        std::vector<std::string>{"main", "feature/*", "release/**", "refs/tags/v*"});
    add({"*"}, std::nullopt);
    add({"*"}, std::vector<std::string>{"main"});
    add({}, std::nullopt);
    return out;
  }();
  return all;
}

bool same(const gh::Verdict& a, const gh::Verdict& b) {
  return a.allowed == b.allowed && a.repo == b.repo && a.rule == b.rule && a.reason == b.reason && a.push == b.push &&
         a.push_body == b.push_body;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Does the path of `target` have a segment that is "." or ".." raw or after one decoding?
bool has_dot_segment(std::string_view target) {
  std::string_view path = target.substr(0, target.find('?'));
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    std::string_view raw = path.substr(pos, end - pos);
    pos = end + 1;
    std::string dec;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '%' && i + 2 < raw.size() && hexval(raw[i + 1]) >= 0 && hexval(raw[i + 2]) >= 0) {
        dec += static_cast<char>(hexval(raw[i + 1]) * 16 + hexval(raw[i + 2]));
        i += 2;
      } else {
        dec += raw[i];
      }
    }
    if (raw == "." || raw == ".." || dec == "." || dec == "..") return true;
  }
  return false;
}

void check_verdict(const gh::Policy& p, std::string_view host, std::string_view method, std::string_view target,
                   const gh::Verdict& v) {
  if (v.rule.empty()) die("verdict without a rule");
  if (v.push != (v.push_body != gh::PushBody::kNone)) die("push and push_body disagree");
  if (v.push && !v.allowed) die("push set on a denied request");
  if (!v.allowed) {
    if (v.reason.empty()) die("denial without a reason");
    auto j = nlohmann::json::parse(gh::denial_json(v), nullptr, false);
    if (j.is_discarded() || !j.is_object() || j["error"] != "github_request_denied") die("403 body is not valid JSON");
  }
  if (v.allowed && !v.repo.empty()) {
    if (lower(v.repo) != v.repo) die("repo not lowercase");
    if (p.allowing_repo(v.repo) == nullptr) die("allowed a repository the policy does not list");
  }
  if (v.allowed && has_dot_segment(target)) die("allowed a path with a dot segment");
  std::string low_target = lower(target.substr(0, target.find('?')));
  std::string h = lower(host);
  if (v.allowed && method == "POST" && (h == "github.com" || h == "www.github.com") &&
      low_target.find("receive-pack") != std::string::npos && !v.push) {
    die("a receive-pack POST allowed without push inspection");
  }
  if (gh::is_github_host(host) != (v.rule != "not-github-host")) die("is_github_host disagrees with check_request");
}

struct ScanOutcome {
  gh::ReceivePackScanner::State state;
  size_t consumed;
  std::vector<std::string> refs;
  std::string error;
  bool operator==(const ScanOutcome& o) const {
    return state == o.state && consumed == o.consumed && refs == o.refs && error == o.error;
  }
};

ScanOutcome outcome(const gh::ReceivePackScanner& s) {
  ScanOutcome o{s.state(), s.consumed(), {}, s.error()};
  for (const auto& u : s.updates()) o.refs.push_back(u.ref);
  return o;
}

void check_scanner(const gh::Policy& p, std::string_view repo, std::string_view body, Rng& rng) {
  gh::ReceivePackScanner whole;
  whole.feed(body);
  if (whole.consumed() > body.size()) die("scanner consumed more than it was given");
  using State = gh::ReceivePackScanner::State;
  if (whole.state() == State::kNeedMore && whole.consumed() != body.size()) die("scanner stopped early needing more");
  if (whole.state() == State::kDone) {
    size_t before = whole.consumed();
    if (whole.feed(body) != State::kDone || whole.consumed() != before) die("a finished scanner consumed more");
    if (whole.probe() && (!whole.updates().empty() || whole.consumed() != 4)) die("probe with updates");
    if (!whole.probe() && whole.updates().empty()) die("done without updates and not a probe");
    if (whole.updates().size() > gh::kMaxCommands) die("too many commands accepted");
    if (whole.consumed() > gh::kMaxCommandListBytes) die("command list over the byte limit accepted");
    size_t len = 0;
    for (const auto& u : whole.updates()) {
      if (!gh::check_ref_format(u.ref)) die("scanner accepted an invalid ref");
      if (u.old_oid.size() != u.new_oid.size() || (len && u.old_oid.size() != len)) die("mixed object id lengths");
      len = u.old_oid.size();
      if (len != 40 && len != 64) die("object id of bad length");
      if (u.creation && u.deletion) die("creation and deletion at once");
    }
  }
  if (whole.state() == State::kError && whole.error().empty()) die("error without a message");

  ScanOutcome expect = outcome(whole);
  for (int round = 0; round < 2; ++round) {
    gh::ReceivePackScanner split;
    size_t pos = 0;
    while (pos < body.size() && split.state() == State::kNeedMore) {
      size_t n = std::min(body.size() - pos, rng.below(4) == 0 ? rng.below(512) : rng.below(6));
      split.feed(body.substr(pos, n));
      pos += n;
    }
    if (!(outcome(split) == expect)) die("scanner depends on how the bytes were split");
  }

  gh::Verdict v = gh::check_push(p, repo, whole);
  if (v.allowed && p.allowed_refs && !whole.probe()) {
    for (const auto& u : whole.updates()) {
      if (p.allowing_ref(u.ref) == nullptr) die("check_push allowed a ref no glob allows");
    }
  }
  if (!v.allowed && v.reason.empty()) die("push denial without a reason");
  if (whole.state() != State::kDone && v.allowed) die("an unfinished or failed scan allowed a push");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& all = policies();
  const gh::Policy& p = all[data[0] % all.size()];
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  Rng rng(in);

  std::string_view rest = in;
  std::string_view field[3];
  for (auto& f : field) {
    size_t nl = rest.find('\n');
    f = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
  }
  std::string_view host = field[0], method = field[1], target = field[2], body = rest;

  gh::Verdict v = gh::check_request(p, host, method, target);
  check_verdict(p, host, method, target, v);
  if (!same(v, gh::check_request(p, host, method, target))) die("check_request is not deterministic");

  std::string repo = v.repo.empty() ? "acme/widget" : v.repo;
  check_scanner(p, repo, body, rng);
  check_scanner(p, repo, in, rng);

  auto created = gh::parse_create_ref_body(body);
  if (created) {
    if (!gh::check_ref_format(created->ref)) die("create-ref body with an invalid ref accepted");
    (void)gh::check_push(p, repo, {*created});
  }
  (void)gh::check_ref_format(body);
  (void)gh::is_method_override_header(body);
  return 0;
}
