// Fuzz target: DNS messages from untrusted bytes (the sandbox's queries, upstream's answers).
// A message that parses must serialize to bytes that parse back equal, and serializing that
// again must give the same bytes; an error reply to any input must parse, keep the id and hold
// at most one question; the input read as a presentation name must, when encode_name accepts
// it, come back unchanged through the wire form. Any crash, sanitizer report or abort is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "km/proxy/dns_message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace dns = km::proxy::dns;
  std::span<const uint8_t> input(data, size);

  auto reply = dns::make_error_reply(input, dns::Rcode::kFormErr);
  auto parsed_reply = dns::parse(reply);
  if (!parsed_reply) die(("error reply does not parse: " + parsed_reply.error().to_string()).c_str());
  if (parsed_reply->id != (size >= 2 ? (data[0] << 8 | data[1]) : 0)) die("error reply id differs");
  if (parsed_reply->questions.size() > 1) die("error reply holds more than one question");
  if (!parsed_reply->qr || parsed_reply->rcode != dns::Rcode::kFormErr) die("error reply header");

  auto m = dns::parse(input);
  if (m) {
    for (const auto* section : {&m->answers, &m->authority, &m->additional}) {
      for (const auto& r : *section) {
        if (r.type == dns::type::kA && r.rdata.size() != 4) die("A record with data not 4 bytes");
        if (r.type == dns::type::kAAAA && r.rdata.size() != 16) die("AAAA record with data not 16 bytes");
      }
    }
    auto wire = dns::serialize(*m);
    auto again = dns::parse(wire);
    if (!again) die(("serialized message does not parse: " + again.error().to_string()).c_str());
    if (!(*again == *m)) die("serialized message parses back different");
    if (dns::serialize(*again) != wire) die("serialize is not stable");
  }

  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto name = dns::encode_name(text);
  if (name) {
    // Wrap the wire name as a one-question message to read it back.
    std::vector<uint8_t> q = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    q.insert(q.end(), name->begin(), name->end());
    q.insert(q.end(), {0, 1, 0, 1});
    auto back = dns::parse(q);
    if (!back) die(("encoded name does not parse: " + back.error().to_string()).c_str());
    if (back->questions.size() != 1 || back->questions[0].name != text) {
      die("encoded name reads back different");
    }
  }
  return 0;
}
