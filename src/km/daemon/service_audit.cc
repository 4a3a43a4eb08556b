// Service's side of the audit trails (audit_trails.h): km logs, km audit, the redactor's
// secrets and the trail's export at destroy.
#include <sys/stat.h>

#include <algorithm>
#include <functional>

#include "km/audit/redact.h"
#include "km/base/strings.h"
#include "km/daemon/service.h"
#include "km/profile/inherit.h"

namespace km::daemon {

using Json = nlohmann::json;

namespace {

// The profile a sandbox was created from (as in service.cc; built-ins only).
Result<profile::Model> model_of(const store::Sandbox& s) {
  profile::ResolveOptions o;
  o.allow_files = false;
  profile::Checked checked = profile::check_text(s.profile_yaml, s.profile_name, o);
  if (!checked.resolved || checked.findings.has_errors()) {
    return fail(ErrorCode::kInternal, "the stored profile of " + s.id + " no longer validates");
  }
  return profile::decode(checked.resolved->root);
}

// A km audit line: the event's detail with ts, sandbox, kind and seq, as the enforcer and the
// exec audit wrote them before the trail.
Json flat(const Json& ev) {
  const Json& detail = ev.contains("detail") && ev["detail"].is_object() ? ev["detail"] : Json::object();
  Json out{{"ts", ev.value("ts", std::string())},
           {"sandbox", ev.value("sandbox", std::string())},
           {"kind", audit::kind_of(ev.value("type", std::string()), detail)},
           {"seq", ev.value("seq", uint64_t{0})}};
  for (auto it = detail.begin(); it != detail.end(); ++it) {
    if (it.key() != "kind") out[it.key()] = it.value();
  }
  return out;
}

// A reply must fit one socket message, and the kernel allocates a message's data in one piece
// (about 4 MiB at most on common kernels): events beyond this many bytes are left out, the
// oldest for a "newest" query (the client asks again with before_seq), the newest when following
// (the next call gets them).
constexpr size_t kReplyBytes = (3u << 20) / 2;

template <typename T>
size_t fit(std::vector<T>& events, bool keep_newest, const std::function<size_t(const T&)>& size_of) {
  size_t bytes = 0, keep = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    bytes += size_of(events[keep_newest ? events.size() - 1 - i : i]) + 16;
    if (bytes > kReplyBytes && keep > 0) break;
    ++keep;
  }
  size_t cut = events.size() - keep;
  if (keep_newest) events.erase(events.begin(), events.begin() + static_cast<long>(cut));
  else events.resize(keep);
  return cut;
}

}  // namespace

std::vector<std::string> Service::sandbox_secrets(const std::string& id) {
  auto s = store_->get(id);
  if (!s || !*s) return {};
  auto m = model_of(**s);
  if (!m) return {};
  std::vector<std::string> out;
  for (const auto& [name, value] : m->env) {
    if (audit::names_secret(name) && !value.empty()) out.push_back(value);
  }
  return out;
}

std::string Service::trail_archive_dir(const std::string& id) const { return config_.state_dir + "/artifacts/" + id + "/audit"; }

void Service::export_trail(const std::string& id) {
  trails_->detach_enforcer(id);
  ::mkdir((config_.state_dir + "/artifacts").c_str(), 0700);
  ::mkdir((config_.state_dir + "/artifacts/" + id).c_str(), 0700);
  if (Status st = trails_->archive(id, trail_archive_dir(id)); !st) {
    log_.log(log::Level::kError, "cannot keep the audit trail", {{"error", st.error().to_string()}}, id);
  }
}

Json Service::op_audit(const Json& req) {
  auto s = find(req);
  if (!s) return error_reply(s.error());
  store::AuditIndex::Query q;
  q.limit = static_cast<size_t>(std::clamp<int64_t>(req.value("limit", int64_t{100}), 1, 100000));
  q.before_seq = req.value("before_seq", uint64_t{0});
  std::string kind = req.value("kind", std::string());
  // Commands and egress (the kinds km audit has always had) are sub-kinds of the trail's types.
  if (kind.empty()) q.types = {"exec", "dns", "net", "http"};
  else q.kinds = {kind};
  (void)trails_->sync(s->id, 2000);  // what happened before the question is in the answer
  auto events = trails_->query(s->id, q);
  if (!events) return error_reply(events.error());
  size_t cut = fit<Json>(*events, true, [](const Json& e) { return e.dump(-1, ' ', false, Json::error_handler_t::replace).size(); });
  Json out = Json::array();
  for (const Json& e : *events) out.push_back(flat(e));
  return Json{{"ok", true}, {"events", std::move(out)}, {"left_out", cut}};
}

Json Service::op_logs(const Json& req) {
  auto s = find(req);
  if (!s) return error_reply(s.error());
  const std::string& id = s->id;
  if (req.value("verify", false)) {
    (void)trails_->sync(id, 2000);
    auto v = trails_->verify(id);
    if (!v) return error_reply(v.error().wrap("verifying the audit trail of " + id));
    Json out{{"intact", !v->problem}, {"events", v->events}, {"head", v->head}, {"dir", trails_->dir(id)}};
    if (v->problem) {
      out["problem"] = Json{{"seq", v->problem->seq}, {"line", v->problem->line}, {"where", v->problem->where},
                            {"reason", v->problem->reason}};
    }
    return Json{{"ok", true}, {"verify", std::move(out)}, {"counters", trails_->counters(id).to_json()}};
  }
  store::AuditIndex::Query q;
  for (const auto& t : req.value("types", std::vector<std::string>{})) {
    // Types are names: a known one, or a source's own (letters, digits, '-').
    if (t.empty() || t.size() > 32 || t.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos) {
      return error_reply(Error(ErrorCode::kInvalidArgument, "bad event type " + km::quoted(t)));
    }
    q.types.push_back(t);
  }
  q.since_ms = req.value("since_ms", int64_t{0});
  q.limit = static_cast<size_t>(std::clamp<int64_t>(req.value("limit", int64_t{100}), 1, 100000));
  bool follow = req.contains("after_seq");
  if (follow) {
    // Following: the oldest events after the last one the client has, waiting (bounded) for one.
    q.after_seq = req["after_seq"].get<uint64_t>();
    q.newest = false;
    int wait = static_cast<int>(std::clamp<int64_t>(req.value("wait_ms", int64_t{0}), 0, 30000));
    if (wait > 0) trails_->wait_after(id, q.after_seq, wait);
  } else {
    q.before_seq = req.value("before_seq", uint64_t{0});  // the next page of a large answer
    if (q.before_seq == 0) (void)trails_->sync(id, 2000);
  }
  uint64_t head = trails_->head(id);
  // The stored lines travel as they are (canonical JSON strings): kmd parses none of them.
  auto lines = trails_->query_lines(id, q);
  if (!lines) return error_reply(lines.error());
  size_t cut = fit<AuditTrails::Line>(*lines, !follow, [](const AuditTrails::Line& l) { return l.text.size(); });
  // Where the next follow starts: after the last event returned, or after everything the query
  // covered (every event up to `head` was indexed before the head moved).
  uint64_t next = std::max(q.after_seq, head);
  if (!lines->empty()) {
    uint64_t last = lines->back().seq;
    next = follow && (lines->size() == q.limit || cut > 0) ? last : std::max(next, last);
  }
  Json texts = Json::array();
  uint64_t first = lines->empty() ? 0 : lines->front().seq;
  for (auto& l : *lines) texts.push_back(std::move(l.text));
  auto fresh = store_->get(id);
  std::string state = fresh && *fresh ? std::string(store::state_name((*fresh)->state)) : "";
  return Json{{"ok", true}, {"lines", std::move(texts)}, {"first", first}, {"left_out", cut}, {"next", next}, {"head", head},
              {"counters", trails_->counters(id).to_json()}, {"id", id}, {"state", state}};
}

}  // namespace km::daemon
