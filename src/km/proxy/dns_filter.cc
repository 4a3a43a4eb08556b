#include "km/proxy/dns_filter.h"

#include <algorithm>
#include <set>

namespace km::proxy {

namespace {

constexpr uint16_t kOurUdpSize = 1232;  // the DNS flag day 2020 default: no IP fragmentation
constexpr size_t kMaxChain = 16;        // CNAME hops followed in one answer

dns::Record opt_record(uint16_t udp_size) {
  dns::Record r;
  r.name = "";
  r.type = dns::type::kOPT;
  r.klass = udp_size;  // OPT's class is the sender's UDP payload size
  r.ttl = 0;
  return r;
}

dns::Message reply_skeleton(const DnsQueryPlan& plan) {
  dns::Message m;
  m.id = plan.client_id;
  m.qr = true;
  m.rd = plan.client_rd;
  m.ra = true;
  if (!plan.name.empty() || plan.qtype != 0) m.questions.push_back({plan.name, plan.qtype, dns::kClassIN});
  if (plan.client_edns) m.additional.push_back(opt_record(kOurUdpSize));
  return m;
}

// Serialises `m`; when it does not fit in `max_size`, the answer is emptied and TC set, which
// tells the client to ask again over TCP.
std::vector<uint8_t> fit(dns::Message m, size_t max_size) {
  auto wire = dns::serialize(m);
  if (wire.size() <= max_size) return wire;
  m.answers.clear();
  m.authority.clear();
  m.tc = true;
  return dns::serialize(m);
}

DnsQueryPlan reply_now(DnsQueryPlan plan, dns::Rcode rcode) {
  plan.action = DnsQueryPlan::Action::kReply;
  plan.rcode = rcode;
  auto m = reply_skeleton(plan);
  m.rcode = rcode;
  plan.reply = fit(std::move(m), DnsFilter::udp_limit(plan));
  return plan;
}

}  // namespace

size_t DnsFilter::udp_limit(const DnsQueryPlan& plan) {
  if (!plan.client_edns) return 512;
  return std::clamp<size_t>(plan.client_udp_size, 512, kOurUdpSize);
}

std::vector<uint8_t> DnsFilter::servfail(const DnsQueryPlan& plan) {
  auto m = reply_skeleton(plan);
  m.rcode = dns::Rcode::kServFail;
  return dns::serialize(m);
}

DnsQueryPlan DnsFilter::on_query(std::span<const uint8_t> wire) const {
  DnsQueryPlan plan;
  auto parsed = dns::parse(wire);
  if (!parsed) {
    plan.decision = Decision{false, "default deny", "malformed query: " + parsed.error().to_string(), ""};
    plan.rcode = dns::Rcode::kFormErr;
    plan.reply = dns::make_error_reply(wire, dns::Rcode::kFormErr);
    return plan;
  }
  const dns::Message& q = *parsed;
  plan.client_id = q.id;
  plan.client_rd = q.rd;
  for (const auto& r : q.additional) {
    if (r.type == dns::type::kOPT) {
      plan.client_edns = true;
      plan.client_udp_size = r.klass;
    }
  }
  if (q.qr || q.questions.size() != 1) {
    plan.decision = Decision{false, "default deny",
                             q.qr ? "a response, not a query" : "a query must hold exactly one question", ""};
    plan.rcode = dns::Rcode::kFormErr;
    plan.reply = dns::make_error_reply(wire, dns::Rcode::kFormErr);
    return plan;
  }
  const dns::Question& question = q.questions.front();
  plan.name = question.name;
  plan.qtype = question.type;
  if (q.opcode != 0) {
    plan.decision = Decision{false, "default deny", "only standard queries are served", ""};
    return reply_now(std::move(plan), dns::Rcode::kNotImp);
  }
  if (question.klass != dns::kClassIN || question.type == 251 || question.type == 252) {
    plan.decision = Decision{false, "default deny", "class or type not served (IN only, no zone transfers)", ""};
    return reply_now(std::move(plan), dns::Rcode::kRefused);
  }
  if (!dns::is_plain_hostname(question.name)) {
    plan.decision = Decision{false, "default deny", "name holds bytes outside letters, digits, '-' and '_'", ""};
    return reply_now(std::move(plan), dns::Rcode::kNxDomain);
  }
  plan.decision = policy_.check_name(question.name);
  if (!plan.decision.allowed) return reply_now(std::move(plan), dns::Rcode::kNxDomain);
  if (question.type == dns::type::kANY) {
    plan.decision.reason = "ANY queries are not served";
    return reply_now(std::move(plan), dns::Rcode::kNotImp);
  }
  if (question.type == dns::type::kAAAA || question.type == dns::type::kHTTPS || question.type == dns::type::kSVCB) {
    return reply_now(std::move(plan), dns::Rcode::kNoError);  // no data, answered locally
  }
  plan.action = DnsQueryPlan::Action::kForward;
  dns::Message up;
  up.rd = true;
  up.questions.push_back(question);
  up.additional.push_back(opt_record(kOurUdpSize));
  plan.upstream = std::move(up);
  return plan;
}

Result<DnsAnswer> DnsFilter::on_answer(const DnsQueryPlan& plan, std::span<const uint8_t> wire, size_t max_size) const {
  KM_ASSIGN_OR_RETURN(dns::Message up, dns::parse(wire));
  if (!up.qr) return fail(ErrorCode::kInvalidArgument, "upstream sent a query, not a response");
  if (up.questions.size() != 1 || up.questions[0].name != plan.name || up.questions[0].type != plan.qtype ||
      up.questions[0].klass != dns::kClassIN) {
    return fail(ErrorCode::kInvalidArgument, "upstream answered another question");
  }
  DnsAnswer out;
  if (up.tc) {
    out.truncated_upstream = true;
    return out;
  }
  if (up.rcode != dns::Rcode::kNoError && up.rcode != dns::Rcode::kNxDomain) {
    return fail(ErrorCode::kUnavailable, "upstream answered rcode " + std::to_string(static_cast<int>(up.rcode)));
  }

  dns::Message reply = reply_skeleton(plan);
  reply.rcode = up.rcode;
  // Walk the CNAME chain from the question name, keeping only what is on it and allowed.
  std::vector<std::string> chain{plan.name};
  std::set<size_t> kept;
  std::string current = plan.name;
  for (size_t hop = 0; hop <= kMaxChain; ++hop) {
    const dns::Record* cname = nullptr;
    size_t cname_index = 0;
    for (size_t i = 0; i < up.answers.size(); ++i) {
      const auto& r = up.answers[i];
      if (r.name != current || r.klass != dns::kClassIN) continue;
      if (r.type == dns::type::kCNAME) {
        if (!cname) cname = &r, cname_index = i;
      } else if (r.type == plan.qtype) {
        kept.insert(i);
      }
    }
    if (!cname || plan.qtype == dns::type::kCNAME) break;
    const std::string& target = cname->target;
    if (std::find(chain.begin(), chain.end(), target) != chain.end()) break;  // a loop
    if (!dns::is_plain_hostname(target) || !policy_.check_name(target).allowed) {
      out.cut_at = target;
      break;
    }
    kept.insert(cname_index);
    chain.push_back(target);
    current = target;
  }
  uint32_t min_ttl = UINT32_MAX;
  for (size_t i : kept) reply.answers.push_back(up.answers[i]);
  for (const auto& r : reply.answers) min_ttl = std::min(min_ttl, r.ttl);
  for (const auto& r : reply.answers) {
    auto a = dns::a_address(r);
    if (!a) continue;
    auto addr = IpAddress::from_bytes(a->data(), 4);
    out.addresses.push_back(addr.to_string());
    // Every name on the chain may be dialled at this address, for as long as the shortest TTL
    // on the chain (the client may cache no longer than that).
    for (const auto& name : chain) out.bindings.push_back({name, addr, min_ttl});
  }
  for (const auto& r : up.authority) {
    if (r.type == dns::type::kSOA && r.klass == dns::kClassIN && reply.answers.empty()) {
      reply.authority.push_back(r);
      break;
    }
  }
  out.dropped = up.answers.size() + up.authority.size() - reply.answers.size() - reply.authority.size();
  out.rcode = reply.rcode;
  out.reply = fit(std::move(reply), max_size);
  return out;
}

}  // namespace km::proxy
