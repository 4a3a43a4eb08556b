// DNS messages on the wire (RFC 1035), for the enforcing DNS filter: queries arrive from the
// sandbox (hostile) and answers from upstream (hostile-ish), so parsing is strict and bounded.
//
// Names are held in one presentation form so that the filter can compare them as strings:
//   labels joined with '.', no trailing dot, the root is "";
//   ASCII letters lowercased (DNS is case-insensitive);
//   every byte other than [a-z0-9-_] (after lowercasing) written as \DDD (three decimal
//   digits), including '.', '\\', '*', space, controls and bytes >= 0x80.
// So "a.b" is always two labels, and a name whose label holds a dot reads "a\046b". The form is
// canonical: encode_name() accepts exactly the strings the parser produces (no uppercase, no
// escape of a byte that is written plainly), so parse and serialize invert each other.
//
// parse() refuses (ErrorCode::kInvalidArgument, a short message, context naming the section
// and record): a short header; more than 64 questions or 1024 records; counts that cannot fit
// in the message; a truncated question or record; RDATA past the end; bytes after the last
// record; compression pointers that do not point strictly backwards (each jump lands before the
// label run that holds the pointer, so loops are impossible), that point into the header, or
// that chain more than 128 times; label types 0x40/0x80; names over 255 bytes; A/AAAA data
// that is not 4/16 bytes (in any class); malformed data of the types listed at Record.
//
// Pure functions on values; no I/O, no exceptions, no shared state.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"

namespace km::proxy::dns {

// The header's 4-bit RCODE. Values 6..15 are carried through as they are.
enum class Rcode : uint8_t {
  kNoError = 0,
  kFormErr = 1,
  kServFail = 2,
  kNxDomain = 3,
  kNotImp = 4,
  kRefused = 5,
};

namespace type {
inline constexpr uint16_t kA = 1, kNS = 2, kCNAME = 5, kSOA = 6, kPTR = 12, kMX = 15, kTXT = 16,
                          kAAAA = 28, kSRV = 33, kDNAME = 39, kOPT = 41, kSVCB = 64, kHTTPS = 65,
                          kANY = 255;
}  // namespace type

inline constexpr uint16_t kClassIN = 1;

inline constexpr size_t kMaxQuestions = 64;
inline constexpr size_t kMaxRecords = 1024;      // answer + authority + additional
inline constexpr size_t kMaxCompressionJumps = 128;

struct Question {
  std::string name;  // presentation form
  uint16_t type = 0;
  uint16_t klass = kClassIN;
  friend bool operator==(const Question&, const Question&) = default;
};

struct Record {
  std::string name;  // owner name, presentation form
  uint16_t type = 0;
  uint16_t klass = kClassIN;
  uint32_t ttl = 0;
  // RDATA as on the wire, except that domain names inside it are decompressed and in canonical
  // (lowercase) wire form, so rdata never depends on its position in a message. Names are
  // decompressed in NS, CNAME, PTR, DNAME, MX, SOA, SRV and the rarer RFC 1035/3597 types
  // (MD, MF, MB, MG, MR, MINFO, RP, AFSDB, RT, PX); the data of those types must hold exactly
  // their fields. A is 4 bytes, AAAA 16. Every other type (TXT, OPT, HTTPS, ...) is raw.
  std::vector<uint8_t> rdata;
  // For types whose data holds exactly one name (CNAME, DNAME, NS, PTR, MX exchange, SRV
  // target, ...): that name in presentation form. Empty otherwise. Filled by parse() as a view
  // of rdata; serialize() writes rdata and ignores this field.
  std::string target;
  friend bool operator==(const Record&, const Record&) = default;
};

struct Message {
  uint16_t id = 0;
  bool qr = false;
  uint8_t opcode = 0;  // 4 bits
  bool aa = false, tc = false, rd = false, ra = false, ad = false, cd = false;
  Rcode rcode = Rcode::kNoError;  // 4 bits (EDNS extended rcodes stay in the OPT record)
  std::vector<Question> questions;
  std::vector<Record> answers, authority, additional;
  friend bool operator==(const Message&, const Message&) = default;
};

Result<Message> parse(std::span<const uint8_t> wire);

// The message on the wire. Owner and question names, and names inside NS, CNAME, PTR, MX, SOA
// data (where RFC 1035 allows it), are compressed; other data is written as held in rdata.
// The result can be larger than the parsed input, even over 65535 bytes: names in SRV, DNAME
// and the like were decompressed and may not be compressed again (RFC 3597). Check it against
// the transport's limit. Preconditions (KM_CHECK): names in presentation form (as
// parse() produces or encode_name() accepts), opcode and rcode fit 4 bits, at most 65535
// entries per section and 65535 bytes of rdata per record.
std::vector<uint8_t> serialize(const Message& m);

// A reply to `query` with `rcode`: same id, opcode, RD copied, QR=1, RA=1, and the first
// question echoed byte for byte (its case preserved) when the header and first question parse;
// otherwise no question. Never fails: for input shorter than 2 bytes, id 0.
std::vector<uint8_t> make_error_reply(std::span<const uint8_t> query, Rcode rcode);

// The uncompressed wire form of a presentation name, or an error when `presentation` is not
// in the canonical form described above (empty or over-long label, bad escape, uppercase,
// needless escape) or the name is over 255 bytes.
Result<std::vector<uint8_t>> encode_name(std::string_view presentation);

// True when the name has no '\\' escapes: every label is plain [a-z0-9-_]. Filter code refuses
// other names.
bool is_plain_hostname(std::string_view presentation);

// The address of a class IN A/AAAA record; nullopt for any other record.
std::optional<std::array<uint8_t, 4>> a_address(const Record& r);
std::optional<std::array<uint8_t, 16>> aaaa_address(const Record& r);

}  // namespace km::proxy::dns
