#include "km/proxy/dns_message.h"

#include <map>
#include <utility>

#include "km/base/strings.h"

namespace km::proxy::dns {

namespace {

constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxNameWire = 255;
constexpr size_t kMaxLabel = 63;
constexpr size_t kMaxPointerTarget = 0x3fff;

Unexpected<Error> invalid(std::string message) {
  return fail(ErrorCode::kInvalidArgument, std::move(message));
}

uint16_t get16(std::span<const uint8_t> w, size_t pos) {
  return static_cast<uint16_t>((w[pos] << 8) | w[pos + 1]);
}

uint32_t get32(std::span<const uint8_t> w, size_t pos) {
  return (uint32_t{w[pos]} << 24) | (uint32_t{w[pos + 1]} << 16) | (uint32_t{w[pos + 2]} << 8) |
         uint32_t{w[pos + 3]};
}

uint8_t ascii_lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? static_cast<uint8_t>(c + ('a' - 'A')) : c; }

// Bytes that appear unescaped in the presentation form.
bool is_plain_byte(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// Where the data of a record type holds domain names: `prefix` fixed bytes, `names` names, then
// exactly `suffix` fixed bytes. RFC 3597 section 4: receivers decompress the RFC 1035 types and
// should decompress RP, AFSDB, RT, PX and SRV; senders compress only the RFC 1035 types.
struct NameLayout {
  uint16_t type;
  const char* label;
  uint8_t prefix;
  uint8_t names;
  uint8_t suffix;
  bool compress;
};

constexpr NameLayout kNameLayouts[] = {
    {type::kNS, "NS", 0, 1, 0, true},       {3, "MD", 0, 1, 0, true},
    {4, "MF", 0, 1, 0, true},               {type::kCNAME, "CNAME", 0, 1, 0, true},
    {type::kSOA, "SOA", 0, 2, 20, true},    {7, "MB", 0, 1, 0, true},
    {8, "MG", 0, 1, 0, true},               {9, "MR", 0, 1, 0, true},
    {type::kPTR, "PTR", 0, 1, 0, true},     {14, "MINFO", 0, 2, 0, true},
    {type::kMX, "MX", 2, 1, 0, true},       {17, "RP", 0, 2, 0, false},
    {18, "AFSDB", 2, 1, 0, false},          {21, "RT", 2, 1, 0, false},
    {26, "PX", 2, 2, 0, false},             {type::kSRV, "SRV", 6, 1, 0, false},
    {type::kDNAME, "DNAME", 0, 1, 0, false},
};

const NameLayout* find_layout(uint16_t t) {
  for (const NameLayout& l : kNameLayouts) {
    if (l.type == t) return &l;
  }
  return nullptr;
}

void append_presentation_label(std::string& out, std::span<const uint8_t> label) {
  for (uint8_t raw : label) {
    uint8_t c = ascii_lower(raw);
    if (is_plain_byte(c)) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('\\');
      out.push_back(static_cast<char>('0' + c / 100));
      out.push_back(static_cast<char>('0' + c / 10 % 10));
      out.push_back(static_cast<char>('0' + c % 10));
    }
  }
}

struct DecodedName {
  std::string presentation;
  std::vector<uint8_t> wire;  // uncompressed, lowercased
  size_t end = 0;             // offset just past the name's own bytes (its pointer, or its root)
};

// Reads the name at `pos`, whose own bytes must lie below `limit` (the end of the message, or of
// the record data holding it when `in_rdata`). Each compression pointer must land strictly
// before the run of labels that holds it, and the run it lands on must end before that run
// begins: offsets only decrease, so a name cannot loop and reads each byte at most once.
Result<DecodedName> read_name(std::span<const uint8_t> msg, size_t pos, size_t limit, bool in_rdata) {
  DecodedName out;
  size_t run_start = pos;
  size_t run_limit = limit;
  size_t jumps = 0;
  bool jumped = false;
  auto past_end = [&]() {
    if (jumped) return invalid("compressed name runs into the bytes that point to it");
    return invalid(in_rdata ? "name extends past end of record data" : "name extends past end of message");
  };
  for (;;) {
    if (pos >= run_limit) return past_end();
    uint8_t len = msg[pos];
    if (len == 0) {
      out.wire.push_back(0);
      if (!jumped) out.end = pos + 1;
      return out;
    }
    switch (len & 0xc0) {
      case 0xc0: {
        if (run_limit - pos < 2) return past_end();
        size_t target = (size_t{len & 0x3fu} << 8) | msg[pos + 1];
        if (!jumped) out.end = pos + 2;
        if (++jumps > kMaxCompressionJumps) return invalid("more than 128 compression pointers in a name");
        if (target >= run_start) return invalid("name compression pointer loops or points forward");
        if (target < kHeaderSize) return invalid("name compression pointer into the header");
        run_limit = run_start;
        run_start = target;
        pos = target;
        jumped = true;
        continue;
      }
      case 0x40:
      case 0x80:
        return invalid("unsupported label type (extended or binary label)");
      default:
        break;
    }
    if (run_limit - pos - 1 < len) return past_end();
    // The label, its length byte and the root byte still to come.
    if (out.wire.size() + 1 + len + 1 > kMaxNameWire) return invalid("name longer than 255 bytes");
    std::span<const uint8_t> label = msg.subspan(pos + 1, len);
    if (!out.wire.empty()) out.presentation.push_back('.');
    append_presentation_label(out.presentation, label);
    out.wire.push_back(len);
    for (uint8_t c : label) out.wire.push_back(ascii_lower(c));
    pos += 1 + len;
  }
}

Result<Question> read_question(std::span<const uint8_t> msg, size_t& pos) {
  KM_ASSIGN_OR_RETURN(DecodedName name, read_name(msg, pos, msg.size(), false));
  pos = name.end;
  if (msg.size() - pos < 4) return invalid("question extends past end of message");
  Question q;
  q.name = std::move(name.presentation);
  q.type = get16(msg, pos);
  q.klass = get16(msg, pos + 2);
  pos += 4;
  return q;
}

Status read_rdata(std::span<const uint8_t> msg, size_t start, size_t length, Record& r) {
  if (r.type == type::kA || r.type == type::kAAAA) {
    size_t want = r.type == type::kA ? 4 : 16;
    if (length != want) {
      return invalid(std::string(r.type == type::kA ? "A" : "AAAA") + " record data is " +
                     std::to_string(length) + " bytes, not " + std::to_string(want));
    }
  }
  const NameLayout* layout = find_layout(r.type);
  if (!layout) {
    r.rdata.assign(msg.begin() + static_cast<ptrdiff_t>(start),
                   msg.begin() + static_cast<ptrdiff_t>(start + length));
    return ok();
  }
  std::string what = std::string(layout->label) + " record data";
  size_t end = start + length;
  if (length < layout->prefix) return invalid(what + " is too short");
  r.rdata.assign(msg.begin() + static_cast<ptrdiff_t>(start),
                 msg.begin() + static_cast<ptrdiff_t>(start + layout->prefix));
  size_t pos = start + layout->prefix;
  for (int i = 0; i < layout->names; ++i) {
    auto name = read_name(msg, pos, end, true);
    if (!name) return fail(std::move(name).error().wrap(what));
    r.rdata.insert(r.rdata.end(), name->wire.begin(), name->wire.end());
    if (layout->names == 1) r.target = std::move(name->presentation);
    pos = name->end;
  }
  if (end - pos != layout->suffix) {
    return invalid(what + " has " + std::to_string(end - pos) + " bytes after its names, not " +
                   std::to_string(layout->suffix));
  }
  r.rdata.insert(r.rdata.end(), msg.begin() + static_cast<ptrdiff_t>(pos),
                 msg.begin() + static_cast<ptrdiff_t>(end));
  return ok();
}

Result<Record> read_record(std::span<const uint8_t> msg, size_t& pos) {
  KM_ASSIGN_OR_RETURN(DecodedName name, read_name(msg, pos, msg.size(), false));
  pos = name.end;
  if (msg.size() - pos < 10) return invalid("record extends past end of message");
  Record r;
  r.name = std::move(name.presentation);
  r.type = get16(msg, pos);
  r.klass = get16(msg, pos + 2);
  r.ttl = get32(msg, pos + 4);
  size_t length = get16(msg, pos + 8);
  pos += 10;
  if (msg.size() - pos < length) return invalid("record data extends past end of message");
  KM_TRY(read_rdata(msg, pos, length, r));
  pos += length;
  return r;
}

// The length of the uncompressed name at the start of `data`, or nullopt when there is none.
std::optional<size_t> plain_name_length(std::span<const uint8_t> data) {
  size_t pos = 0;
  while (pos < data.size() && pos < kMaxNameWire) {
    uint8_t len = data[pos];
    if (len == 0) return pos + 1;
    if (len > kMaxLabel) return std::nullopt;
    pos += 1 + size_t{len};
  }
  return std::nullopt;
}

// Writes a message, compressing names against the suffixes already written (RFC 1035 4.1.4).
class Writer {
 public:
  std::vector<uint8_t>& bytes() { return out_; }

  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v) {
    out_.push_back(static_cast<uint8_t>(v >> 8));
    out_.push_back(static_cast<uint8_t>(v));
  }
  void u32(uint32_t v) {
    u16(static_cast<uint16_t>(v >> 16));
    u16(static_cast<uint16_t>(v));
  }
  void raw(std::span<const uint8_t> data) { out_.insert(out_.end(), data.begin(), data.end()); }

  void name(std::string_view presentation) {
    auto wire = encode_name(presentation);
    KM_CHECK(wire.has_value());
    wire_name(*wire, true);
  }

  // `wire` is one uncompressed name. With `compress`, its longest suffix already in the message
  // becomes a pointer; either way its new suffixes become targets for later names.
  void wire_name(std::span<const uint8_t> wire, bool compress) {
    std::vector<std::pair<size_t, size_t>> labels;  // offset in `wire`, length
    for (size_t pos = 0; wire[pos] != 0; pos += 1 + wire[pos]) labels.emplace_back(pos + 1, wire[pos]);
    auto label_text = [&](size_t i) {
      return std::string(reinterpret_cast<const char*>(wire.data()) + labels[i].first, labels[i].second);
    };
    // Longest known suffix, found from the root up; a suffix is known by the offset of its
    // first occurrence (0 stands for the root, which is never a pointer target).
    size_t matched = labels.size();
    uint16_t suffix_at = 0;
    while (matched > 0) {
      auto it = suffixes_.find({label_text(matched - 1), suffix_at});
      if (it == suffixes_.end()) break;
      suffix_at = it->second;
      --matched;
    }
    std::vector<size_t> offsets(matched);
    for (size_t i = 0; i < matched; ++i) {
      offsets[i] = out_.size();
      u8(static_cast<uint8_t>(labels[i].second));
      raw(wire.subspan(labels[i].first, labels[i].second));
    }
    if (compress && matched < labels.size()) {
      u16(static_cast<uint16_t>(0xc000 | suffix_at));
    } else {
      size_t rest = matched < labels.size() ? labels[matched].first - 1 : wire.size() - 1;
      raw(wire.subspan(rest));
    }
    uint16_t next = suffix_at;
    for (size_t i = matched; i-- > 0;) {
      // A suffix past the pointer range is never found, so neither is any name ending in it.
      if (offsets[i] > kMaxPointerTarget) break;
      uint16_t here = static_cast<uint16_t>(offsets[i]);
      suffixes_.emplace(std::make_pair(label_text(i), next), here);
      next = here;
    }
  }

 private:
  std::vector<uint8_t> out_;
  std::map<std::pair<std::string, uint16_t>, uint16_t> suffixes_;
};

void write_rdata(Writer& w, const Record& r) {
  const NameLayout* layout = find_layout(r.type);
  if (layout && r.rdata.size() >= layout->prefix) {
    // Split the data into its fields; data that does not hold them is written as it is.
    std::span<const uint8_t> data(r.rdata);
    std::vector<std::span<const uint8_t>> names;
    size_t pos = layout->prefix;
    for (int i = 0; i < layout->names; ++i) {
      auto len = plain_name_length(data.subspan(pos));
      if (!len) break;
      names.push_back(data.subspan(pos, *len));
      pos += *len;
    }
    if (names.size() == layout->names && data.size() - pos == layout->suffix) {
      w.raw(data.first(layout->prefix));
      for (auto name : names) w.wire_name(name, layout->compress);
      w.raw(data.subspan(pos));
      return;
    }
  }
  w.raw(r.rdata);
}

void write_record(Writer& w, const Record& r) {
  w.name(r.name);
  w.u16(r.type);
  w.u16(r.klass);
  w.u32(r.ttl);
  size_t length_at = w.bytes().size();
  w.u16(0);
  write_rdata(w, r);
  size_t length = w.bytes().size() - length_at - 2;
  KM_CHECK(length <= 0xffff);
  w.bytes()[length_at] = static_cast<uint8_t>(length >> 8);
  w.bytes()[length_at + 1] = static_cast<uint8_t>(length);
}

uint16_t section_count(size_t n) {
  KM_CHECK(n <= 0xffff);
  return static_cast<uint16_t>(n);
}

}  // namespace

Result<Message> parse(std::span<const uint8_t> wire) {
  if (wire.size() < kHeaderSize) return invalid("message shorter than the 12-byte header");
  Message m;
  m.id = get16(wire, 0);
  m.qr = (wire[2] & 0x80) != 0;
  m.opcode = static_cast<uint8_t>((wire[2] >> 3) & 0x0f);
  m.aa = (wire[2] & 0x04) != 0;
  m.tc = (wire[2] & 0x02) != 0;
  m.rd = (wire[2] & 0x01) != 0;
  m.ra = (wire[3] & 0x80) != 0;
  m.ad = (wire[3] & 0x20) != 0;
  m.cd = (wire[3] & 0x10) != 0;
  m.rcode = static_cast<Rcode>(wire[3] & 0x0f);
  size_t qdcount = get16(wire, 4);
  size_t counts[3] = {get16(wire, 6), get16(wire, 8), get16(wire, 10)};
  size_t records = counts[0] + counts[1] + counts[2];
  if (qdcount > kMaxQuestions) {
    return invalid("too many questions (" + std::to_string(qdcount) + ", at most 64)");
  }
  if (records > kMaxRecords) {
    return invalid("too many records (" + std::to_string(records) + ", at most 1024)");
  }
  // Each question takes at least 5 bytes (root name, type, class), each record 11.
  if (kHeaderSize + qdcount * 5 + records * 11 > wire.size()) {
    return invalid("section counts do not fit in the message");
  }

  size_t pos = kHeaderSize;
  m.questions.reserve(qdcount);
  for (size_t i = 0; i < qdcount; ++i) {
    auto q = read_question(wire, pos);
    if (!q) return fail(std::move(q).error().wrap("question " + std::to_string(i + 1)));
    m.questions.push_back(std::move(*q));
  }
  std::vector<Record>* sections[3] = {&m.answers, &m.authority, &m.additional};
  const char* section_names[3] = {"answer ", "authority ", "additional "};
  for (size_t s = 0; s < 3; ++s) {
    sections[s]->reserve(counts[s]);
    for (size_t i = 0; i < counts[s]; ++i) {
      auto r = read_record(wire, pos);
      if (!r) return fail(std::move(r).error().wrap(section_names[s] + std::to_string(i + 1)));
      sections[s]->push_back(std::move(*r));
    }
  }
  if (pos != wire.size()) {
    return invalid(std::to_string(wire.size() - pos) + " trailing bytes after the last record");
  }
  return m;
}

std::vector<uint8_t> serialize(const Message& m) {
  KM_CHECK(m.opcode <= 0x0f);
  KM_CHECK(static_cast<uint8_t>(m.rcode) <= 0x0f);
  Writer w;
  w.u16(m.id);
  w.u8(static_cast<uint8_t>((m.qr ? 0x80 : 0) | (m.opcode << 3) | (m.aa ? 0x04 : 0) |
                            (m.tc ? 0x02 : 0) | (m.rd ? 0x01 : 0)));
  w.u8(static_cast<uint8_t>((m.ra ? 0x80 : 0) | (m.ad ? 0x20 : 0) | (m.cd ? 0x10 : 0) |
                            static_cast<uint8_t>(m.rcode)));
  w.u16(section_count(m.questions.size()));
  w.u16(section_count(m.answers.size()));
  w.u16(section_count(m.authority.size()));
  w.u16(section_count(m.additional.size()));
  for (const Question& q : m.questions) {
    w.name(q.name);
    w.u16(q.type);
    w.u16(q.klass);
  }
  for (const auto* section : {&m.answers, &m.authority, &m.additional}) {
    for (const Record& r : *section) write_record(w, r);
  }
  return std::move(w.bytes());
}

std::vector<uint8_t> make_error_reply(std::span<const uint8_t> query, Rcode rcode) {
  std::vector<uint8_t> out(kHeaderSize, 0);
  if (query.size() >= 2) {
    out[0] = query[0];
    out[1] = query[1];
  }
  uint8_t opcode_and_rd = query.size() >= 3 ? static_cast<uint8_t>(query[2] & 0x79) : 0;
  out[2] = static_cast<uint8_t>(0x80 | opcode_and_rd);
  out[3] = static_cast<uint8_t>(0x80 | (static_cast<uint8_t>(rcode) & 0x0f));
  if (query.size() >= kHeaderSize && get16(query, 4) >= 1) {
    // The first name starts right after the header, so it cannot hold a valid pointer and its
    // bytes are the whole name: copy them, keeping the client's case (some check it, RFC 5452).
    auto name = read_name(query, kHeaderSize, query.size(), false);
    if (name && query.size() - name->end >= 4) {
      out[5] = 1;
      out.insert(out.end(), query.begin() + static_cast<ptrdiff_t>(kHeaderSize),
                 query.begin() + static_cast<ptrdiff_t>(name->end + 4));
    }
  }
  return out;
}

Result<std::vector<uint8_t>> encode_name(std::string_view presentation) {
  std::vector<uint8_t> out;
  const std::string_view s = presentation;
  if (s.empty()) {
    out.push_back(0);
    return out;
  }
  auto bad = [&](std::string_view why) { return invalid(std::string(why) + " in name " + quoted(s)); };
  size_t i = 0;
  for (;;) {
    size_t length_at = out.size();
    out.push_back(0);
    size_t length = 0;
    while (i < s.size() && s[i] != '.') {
      uint8_t c = static_cast<uint8_t>(s[i]);
      if (c == '\\') {
        if (s.size() - i < 4) return bad("incomplete \\DDD escape");
        unsigned value = 0;
        for (size_t k = 1; k <= 3; ++k) {
          char d = s[i + k];
          if (d < '0' || d > '9') return bad("escape is not \\DDD");
          value = value * 10 + static_cast<unsigned>(d - '0');
        }
        if (value > 255) return bad("escape \\" + std::string(s.substr(i + 1, 3)) + " is over 255");
        c = static_cast<uint8_t>(value);
        if (is_plain_byte(c) || (c >= 'A' && c <= 'Z')) {
          return bad("escape \\" + std::string(s.substr(i + 1, 3)) + " of a letter, digit, '-' or '_'");
        }
        i += 4;
      } else if (is_plain_byte(c)) {
        ++i;
      } else if (c >= 'A' && c <= 'Z') {
        return bad("uppercase letter");
      } else {
        return bad("unescaped character (write it as \\DDD)");
      }
      if (++length > kMaxLabel) return bad("label longer than 63 bytes");
      out.push_back(c);
    }
    if (length == 0) return bad("empty label");
    out[length_at] = static_cast<uint8_t>(length);
    if (out.size() + 1 > kMaxNameWire) return bad("more than 255 bytes");
    if (i == s.size()) break;
    ++i;  // the dot
  }
  out.push_back(0);
  return out;
}

bool is_plain_hostname(std::string_view presentation) {
  return presentation.find('\\') == std::string_view::npos;
}

std::optional<std::array<uint8_t, 4>> a_address(const Record& r) {
  if (r.type != type::kA || r.klass != kClassIN || r.rdata.size() != 4) return std::nullopt;
  std::array<uint8_t, 4> a{};
  for (size_t i = 0; i < 4; ++i) a[i] = r.rdata[i];
  return a;
}

std::optional<std::array<uint8_t, 16>> aaaa_address(const Record& r) {
  if (r.type != type::kAAAA || r.klass != kClassIN || r.rdata.size() != 16) return std::nullopt;
  std::array<uint8_t, 16> a{};
  for (size_t i = 0; i < 16; ++i) a[i] = r.rdata[i];
  return a;
}

}  // namespace km::proxy::dns
