#include "km/audit/redact.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

namespace km::audit {

namespace {

// ---------------------------------------------------------------------------------------------
// Marker types. Where overlapping spans merge into one marker, it is named after the longest
// span; between equally long ones, after the type listed first here (the most specific).

enum Type : uint8_t {
  kSandboxSecret,
  kPrivateKey,
  kAwsAccessKeyId,
  kAwsSecretAccessKey,
  kGithubToken,
  kGitlabToken,
  kAnthropicKey,
  kOpenaiKey,
  kSlackToken,
  kSlackWebhook,
  kStripeKey,
  kStripeWebhookSecret,
  kGoogleApiKey,
  kNpmToken,
  kHuggingfaceToken,
  kApiKey,
  kJwt,
  kAuthorization,
  kBearerToken,
  kUrlPassword,
  kUrlCredential,
  kCredential,
  kTypeCount,
};

constexpr std::array<std::string_view, kTypeCount> kTypeNames = {
    "sandbox-secret", "private-key",  "aws-access-key-id",     "aws-secret-access-key", "github-token",
    "gitlab-token",   "anthropic-key", "openai-key",           "slack-token",           "slack-webhook",
    "stripe-key",     "stripe-webhook-secret", "google-api-key", "npm-token",           "huggingface-token",
    "api-key",        "jwt",          "authorization",         "bearer-token",          "url-password",
    "url-credential", "credential",
};

constexpr std::string_view kMarkerOpen = "[REDACTED:";
constexpr size_t kMaxTypeNameLen = 32;

std::optional<Type> type_by_name(std::string_view name) {
  for (size_t k = 0; k < kTypeNames.size(); ++k) {
    if (kTypeNames[k] == name) return static_cast<Type>(k);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Character classes.

enum : uint16_t {
  kLower = 1 << 0,
  kUpper = 1 << 1,
  kDigit = 1 << 2,
  kUnderscore = 1 << 3,
  kDash = 1 << 4,
  kDot = 1 << 5,
  kPlus = 1 << 6,
  kSlash = 1 << 7,
  kTilde = 1 << 8,
  kEquals = 1 << 9,
  kTrigger = 1 << 10,
};
constexpr uint16_t kAlpha = kLower | kUpper;
constexpr uint16_t kAlnum = kAlpha | kDigit;
constexpr uint16_t kWord = kAlnum | kUnderscore;                      // [A-Za-z0-9_]
constexpr uint16_t kB64url = kWord | kDash;                           // [A-Za-z0-9_-]
constexpr uint16_t kB64 = kAlnum | kPlus | kSlash;                    // [A-Za-z0-9+/]
constexpr uint16_t kIdent = kB64url | kDot;                           // [A-Za-z0-9_.-]
constexpr uint16_t kToken68 = kB64url | kDot | kTilde | kPlus | kSlash;  // RFC 7235 token68

constexpr std::array<uint16_t, 256> make_classes() {
  std::array<uint16_t, 256> c{};
  for (int b = 'a'; b <= 'z'; ++b) c[b] |= kLower;
  for (int b = 'A'; b <= 'Z'; ++b) c[b] |= kUpper;
  for (int b = '0'; b <= '9'; ++b) c[b] |= kDigit;
  c['_'] |= kUnderscore;
  c['-'] |= kDash;
  c['.'] |= kDot;
  c['+'] |= kPlus;
  c['/'] |= kSlash;
  c['~'] |= kTilde;
  c['='] |= kEquals;
  for (unsigned char b : std::string_view("[ABeghnrswx-:=")) c[b] |= kTrigger;
  return c;
}
constexpr std::array<uint16_t, 256> kClass = make_classes();

inline uint16_t class_of(char c) { return kClass[static_cast<unsigned char>(c)]; }
inline bool is_blank(char c) { return c == ' ' || c == '\t'; }
inline bool is_one_of(char c, std::string_view set) {
  for (char x : set) {
    if (x == c) return true;
  }
  return false;
}
inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (lower(a[k]) != lower(b[k])) return false;
  }
  return true;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  for (size_t k = 1; k <= suffix.size(); ++k) {  // from the end: most keys differ in the last letter
    if (s[s.size() - k] != suffix[suffix.size() - k]) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Keys that name secrets.

enum class KeyKind : uint8_t { kNone, kPlain, kAwsSecret, kAuthorization, kCookie };

// Compared against the key lowercased with - _ . and space removed, as a suffix.
constexpr std::string_view kSecretSuffixes[] = {
    "password",   "passwd",     "passphrase",    "passcode",   "secret",     "token",
    "apikey",     "accesskey",  "secretkey",     "privatekey", "signingkey", "encryptionkey",
    "accountkey", "credential", "credentials",   "bearer",     "signature",
};

struct WordSuffix {
  std::string_view word;
  bool whole_key;  // also when it is the whole key (auth, sig) or only after a separator (PWD)
};
// Short words that are secrets only as a separate word: DB_PASS, dbPass, db-pwd, basic_auth.
constexpr WordSuffix kSecretWords[] = {{"pass", false}, {"pwd", false}, {"auth", true}, {"sig", true}};

constexpr size_t kMaxKeyLen = 64;

// `starts_at_boundary`: the key's first character is known to start it (false when the key was
// cut to its last kMaxKeyLen characters, or follows a marker with no separator), so a short
// word matching the whole key is not taken as a whole key.
KeyKind classify_key(std::string_view key, bool starts_at_boundary) {
  constexpr size_t kTail = 24;
  char buf[kTail];
  size_t len = 0;
  for (size_t k = key.size(); k > 0 && len < kTail; --k) {
    char c = key[k - 1];
    if (c == '-' || c == '_' || c == '.' || c == ' ') continue;
    buf[kTail - 1 - len++] = lower(c);
  }
  std::string_view tail(buf + kTail - len, len);
  if (len == 0 || !is_one_of(tail.back(), "detnylsrhg")) return KeyKind::kNone;  // no rule ends otherwise
  if (ends_with(tail, "authorization")) return KeyKind::kAuthorization;
  if (ends_with(tail, "cookie")) return KeyKind::kCookie;
  if (ends_with(tail, "secretaccesskey")) return KeyKind::kAwsSecret;
  for (std::string_view s : kSecretSuffixes) {
    if (ends_with(tail, s)) return KeyKind::kPlain;
  }
  for (const WordSuffix& w : kSecretWords) {
    if (key.size() < w.word.size() || !iequals(key.substr(key.size() - w.word.size()), w.word)) continue;
    size_t p = key.size() - w.word.size();
    if (p == 0) {
      if (w.whole_key && starts_at_boundary) return KeyKind::kPlain;
      continue;
    }
    char before = key[p - 1];
    if (before == '-' || before == '_' || before == '.' || before == ' ') return KeyKind::kPlain;
    if ((class_of(before) & kLower) && (class_of(key[p]) & kUpper)) return KeyKind::kPlain;  // dbPass
  }
  return KeyKind::kNone;
}

// Authorization schemes. Single-token ones carry one token68; the others run to the end of the
// header value.
struct Scheme {
  std::string_view name;
  bool single_token;
};
constexpr Scheme kSchemes[] = {
    {"bearer", true},        {"basic", true},    {"token", true},     {"bot", true},   {"ssws", true},
    {"jwt", true},           {"dpop", true},     {"apikey", true},    {"api-key", true}, {"key", true},
    {"digest", false},       {"negotiate", true}, {"ntlm", true},     {"oauth", false}, {"hoba", false},
    {"mutual", false},       {"vapid", false},   {"aws4-hmac-sha256", false}, {"aws", false},
    {"scram-sha-1", false},  {"scram-sha-256", false}, {"splunk", true}, {"genie-key", true},
    {"sso-key", true},
};

const Scheme* find_scheme(std::string_view word) {
  for (const Scheme& s : kSchemes) {
    if (iequals(word, s.name)) return &s;
  }
  return nullptr;
}

// Unquoted values that are not secrets whatever the key says.
bool is_placeholder_word(std::string_view v) {
  for (std::string_view w : {"true", "false", "null", "none", "nil", "undefined"}) {
    if (iequals(v, w)) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Spans and markers.

struct Span {
  size_t begin;
  size_t end;
  Type type;
  bool literal;  // from a literal secret: dropped, not cut, where it overlaps a marker
};

struct MarkerPos {
  size_t begin;
  size_t end;
};

// End of the known marker starting at `pos`, or 0.
size_t parse_marker(std::string_view t, size_t pos) {
  if (t.size() - pos < kMarkerOpen.size() + 2 || t.compare(pos, kMarkerOpen.size(), kMarkerOpen) != 0) return 0;
  size_t b = pos + kMarkerOpen.size();
  size_t e = b;
  while (e < t.size() && e - b <= kMaxTypeNameLen && (class_of(t[e]) & (kLower | kDigit | kDash))) ++e;
  if (e >= t.size() || t[e] != ']' || !type_by_name(t.substr(b, e - b))) return 0;
  return e + 1;
}

std::vector<MarkerPos> find_markers(std::string_view t) {
  std::vector<MarkerPos> out;
  size_t pos = 0;
  while ((pos = t.find(kMarkerOpen, pos)) != std::string_view::npos) {
    size_t e = parse_marker(t, pos);
    if (e != 0) {
      out.push_back({pos, e});
      pos = e;
    } else {
      ++pos;
    }
  }
  return out;
}

// First marker that ends after `pos`.
std::vector<MarkerPos>::const_iterator marker_after(const std::vector<MarkerPos>& m, size_t pos) {
  return std::upper_bound(m.begin(), m.end(), pos, [](size_t p, const MarkerPos& x) { return p < x.end; });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Literal secrets: Aho-Corasick over the secrets and their encoded forms, linear in the text.
// Compiled to a DFA over byte classes (one table load per byte) unless that table would pass
// kMaxDfaEntries, e.g. for a long key file given as a literal; then the goto/failure automaton
// is walked directly (failure links are followed at most as often as edges were taken).

class LiteralMatcher {
 public:
  explicit LiteralMatcher(const std::vector<std::string>& patterns) {
    nodes_.emplace_back();
    for (const std::string& p : patterns) insert(p);
    build();
  }

  // Appends a span per run of overlapping occurrences. Occurrences that overlap a marker are
  // skipped (the marker is atomic; see render()): at each end position the longest occurrence
  // that does not is taken.
  void find(std::string_view text, const std::vector<MarkerPos>& markers, std::vector<Span>& out) const {
    int32_t s = 0;
    bool open = false;
    auto next_marker = markers.begin();
    size_t free_from = 0;  // no marker overlaps [free_from, i]
    const bool dfa = !delta_.empty();
    for (size_t i = 0; i < text.size(); ++i) {
      const unsigned char byte = static_cast<unsigned char>(text[i]);
      int32_t m;
      if (dfa) {
        // Entries are state << 1 | (a pattern ends here): one dependent load per byte.
        const uint32_t v = delta_[(static_cast<size_t>(s) << class_bits_) | byte_class_[byte]];
        s = static_cast<int32_t>(v >> 1);
        if (!(v & 1)) continue;
        m = out_[static_cast<size_t>(s)];
      } else {
        s = step(s, byte);
        m = out_[static_cast<size_t>(s)];
        if (m < 0) continue;
      }
      while (next_marker != markers.end() && next_marker->begin <= i) {
        free_from = next_marker->end;
        ++next_marker;
      }
      if (free_from > i) continue;
      const size_t room = i + 1 - free_from;
      while (m >= 0 && nodes_[m].depth > room) m = nodes_[m].dict;
      if (m < 0) continue;
      size_t b = i + 1 - nodes_[m].depth;
      size_t e = i + 1;
      if (open && b < out.back().end) {
        out.back().begin = std::min(out.back().begin, b);
        out.back().end = e;
      } else {
        out.push_back({b, e, kSandboxSecret, true});
        open = true;
      }
    }
  }

 private:
  static constexpr size_t kMaxDfaEntries = size_t{1} << 20;

  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
    int32_t fail = 0;
    int32_t dict = -1;  // the longest proper suffix that is a pattern, or -1
    uint32_t depth = 0;
    bool terminal = false;
  };

  int32_t child(int32_t s, unsigned char b) const {
    const auto& nx = nodes_[s].next;
    if (nx.size() <= 8) {
      for (const auto& [c, t] : nx) {
        if (c == b) return t;
      }
      return -1;
    }
    auto it = std::lower_bound(nx.begin(), nx.end(), b, [](const auto& e, unsigned char v) { return e.first < v; });
    return (it != nx.end() && it->first == b) ? it->second : -1;
  }

  int32_t step(int32_t s, unsigned char b) const {
    while (s != 0) {
      int32_t c = child(s, b);
      if (c >= 0) return c;
      s = nodes_[s].fail;
    }
    return root_[b];
  }

  void insert(std::string_view p) {
    int32_t s = 0;
    for (unsigned char b : p) {
      int32_t c = child(s, b);
      if (c < 0) {
        c = static_cast<int32_t>(nodes_.size());
        Node n;
        n.depth = nodes_[s].depth + 1;
        nodes_.push_back(std::move(n));
        auto& nx = nodes_[s].next;
        auto it = std::lower_bound(nx.begin(), nx.end(), b, [](const auto& e, unsigned char v) { return e.first < v; });
        nx.insert(it, {b, c});
      }
      s = c;
    }
    nodes_[s].terminal = true;
  }

  void build() {
    root_.fill(0);
    std::vector<int32_t> order;  // breadth-first
    order.reserve(nodes_.size());
    for (const auto& [b, c] : nodes_[0].next) {
      root_[b] = c;
      nodes_[c].fail = 0;
      order.push_back(c);
    }
    for (size_t q = 0; q < order.size(); ++q) {
      int32_t u = order[q];
      Node& un = nodes_[u];
      const Node& f = nodes_[un.fail];
      un.dict = un.fail == 0 ? -1 : (f.terminal ? un.fail : f.dict);
      for (const auto& [b, v] : un.next) {
        nodes_[v].fail = step(un.fail, b);
        order.push_back(v);
      }
    }
    out_.resize(nodes_.size());
    for (size_t u = 0; u < nodes_.size(); ++u) out_[u] = nodes_[u].terminal ? static_cast<int32_t>(u) : nodes_[u].dict;

    // Byte classes: each byte some pattern uses, and one for all the others.
    byte_class_.fill(0);
    classes_ = 1;
    for (const Node& n : nodes_) {
      for (const auto& [b, v] : n.next) {
        if (byte_class_[b] == 0) byte_class_[b] = static_cast<uint16_t>(classes_++);
      }
    }
    class_bits_ = 0;
    while ((size_t{1} << class_bits_) < classes_) ++class_bits_;
    if ((nodes_.size() << class_bits_) > kMaxDfaEntries) return;
    // Entries are state << 1 | (a pattern ends at that state).
    auto entry = [&](int32_t t) { return static_cast<uint32_t>(t) << 1 | (out_[static_cast<size_t>(t)] >= 0 ? 1u : 0u); };
    delta_.assign(nodes_.size() << class_bits_, 0);
    for (const auto& [b, t] : nodes_[0].next) delta_[byte_class_[b]] = entry(t);
    for (int32_t u : order) {
      // A state moves as its failure state does, except along its own edges.
      const size_t row = static_cast<size_t>(u) << class_bits_;
      const size_t fail_row = static_cast<size_t>(nodes_[u].fail) << class_bits_;
      std::copy_n(delta_.begin() + static_cast<ptrdiff_t>(fail_row), classes_, delta_.begin() + static_cast<ptrdiff_t>(row));
      for (const auto& [b, t] : nodes_[u].next) delta_[row + byte_class_[b]] = entry(t);
    }
  }

  std::vector<Node> nodes_;
  std::array<int32_t, 256> root_{};
  std::vector<int32_t> out_;  // the longest pattern ending at a state: itself or its dict link
  std::array<uint16_t, 256> byte_class_{};
  size_t classes_ = 1;
  size_t class_bits_ = 0;        // rows are 1 << class_bits_ wide
  std::vector<uint32_t> delta_;  // empty when the DFA would be too large
};

namespace {

// ---------------------------------------------------------------------------------------------
// Encoded forms of a literal secret, so that it is also found where a tool printed it escaped.

std::string json_escaped(std::string_view s, bool escape_slash) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '/':
        out += escape_slash ? "\\/" : "/";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

std::string percent_encoded(std::string_view s, bool upper_hex, bool plus_for_space) {
  const char* hex = upper_hex ? "0123456789ABCDEF" : "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    if ((class_of(static_cast<char>(c)) & kAlnum) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else if (c == ' ' && plus_for_space) {
      out += '+';
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// The base64 characters that depend only on `s`'s bytes when `s` starts `offset` bytes into a
// 3-byte group: whatever surrounds it, an encoding of text containing `s` at that alignment
// contains this core.
std::string base64_core(std::string_view s, size_t offset, bool url) {
  const char* alphabet = url ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                             : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string bytes(offset, '\0');
  bytes.append(s);
  std::string out;
  const size_t bits = bytes.size() * 8;
  const size_t first_bit = offset * 8;
  for (size_t i = 0; 6 * i + 6 <= bits; ++i) {
    if (6 * i < first_bit) continue;
    size_t v = 0;
    for (size_t k = 0; k < 6; ++k) {
      size_t bit = 6 * i + k;
      v = (v << 1) | ((static_cast<unsigned char>(bytes[bit / 8]) >> (7 - bit % 8)) & 1);
    }
    out += alphabet[v];
  }
  return out;
}

std::vector<std::string> encoded_forms(std::string_view s) {
  std::vector<std::string> out{std::string(s)};
  auto add = [&](std::string v) {
    if (v.size() >= kMinLiteralSecretBytes) out.push_back(std::move(v));
  };
  add(json_escaped(s, false));
  add(json_escaped(s, true));
  add(percent_encoded(s, true, false));
  add(percent_encoded(s, false, false));
  add(percent_encoded(s, true, true));
  for (size_t off = 0; off < 3; ++off) {
    add(base64_core(s, off, false));
    add(base64_core(s, off, true));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Base64url decoding for JWT headers.

std::optional<std::string> base64url_decode(std::string_view s) {
  std::string out;
  uint32_t acc = 0;
  int nbits = 0;
  for (char c : s) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '-') {
      v = 62;
    } else if (c == '_') {
      v = 63;
    } else {
      return std::nullopt;
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    nbits += 6;
    if (nbits >= 8) {
      nbits -= 8;
      out += static_cast<char>((acc >> nbits) & 0xff);
    }
  }
  if (nbits >= 6) return std::nullopt;  // a single dangling character
  return out;
}

// ---------------------------------------------------------------------------------------------
// The scanner: one pass over the text, dispatching on trigger bytes. Every detector reads a
// bounded window backwards and a forward run it then skips, or a forward run that cannot be
// re-read by the same detector (runs of one class do not overlap), so the pass is linear.
//
// Markers already in the text are atomic: the scanner jumps over them, never starts or ends a
// match inside one, and treats one as a word character when a rule asks whether a token stands
// alone ("xghp_..." is not a token, nor is "[REDACTED:x]ghp_..."). That is what makes
// redaction idempotent: the output differs from the input only by markers.

class Scanner {
 public:
  Scanner(std::string_view text, const std::vector<MarkerPos>& markers, std::vector<Span>& out)
      : t_(text), n_(text.size()), markers_(markers), out_(out) {}

  void run() { run_range(0, n_, /*tokens_only=*/false); }

 private:
  // Scans [from, to). `tokens_only`: provider tokens, JWTs and key blocks only, for the inside of
  // a value a context rule redacted whole (so the marker can name the token it holds).
  void run_range(size_t from, size_t to, bool tokens_only) {
    size_t i = from;
    while (i < to) {
      if (!(class_of(t_[i]) & kTrigger)) {
        ++i;
        continue;
      }
      // Every token rule wants its first letter to start a word: most letters are inside one.
      if ((class_of(t_[i]) & kAlpha) && i > 0 && (class_of(t_[i - 1]) & kAlnum)) {
        ++i;
        continue;
      }
      size_t next = 0;
      switch (t_[i]) {
        case '[':
          next = marker_end_at(i);
          break;
        case 'A':
          next = aws_access_key_id(i);
          if (next == 0) next = google_api_key(i);
          break;
        case 'B':
          if (!tokens_only) next = bearer(i);
          break;
        case 'e':
          next = jwt(i);
          break;
        case 'g':
          next = github(i);
          if (next == 0) next = gitlab(i);
          break;
        case 'h':
          next = slack_webhook(i);
          if (next == 0) next = huggingface(i);
          break;
        case 'n':
          next = npm(i);
          break;
        case 'r':
          next = stripe(i);
          break;
        case 's':
          next = stripe(i);
          if (next == 0) next = sk_key(i);
          break;
        case 'w':
          next = stripe_webhook(i);
          break;
        case 'x':
          next = slack_token(i);
          break;
        case '-':
          next = private_key(i);
          if (next == 0 && !tokens_only) next = long_flag(i);
          if (next == 0 && !tokens_only) next = curl_user(i);
          break;
        case ':':
          if (tokens_only) break;
          url_userinfo(i);
          next = assignment(i);
          break;
        case '=':
          if (!tokens_only) next = assignment(i);
          break;
        default:
          break;
      }
      i = next > i ? next : i + 1;
    }
  }

 public:
  // The whole text is an Authorization header value: the scheme stays, the rest is redacted.
  void authorization_value() { auth_value(0, n_, /*require_scheme=*/false); }

  // Everything after the first ':' (curl -u user:password).
  void after_first_colon(size_t from) {
    for (size_t k = from; k < n_;) {
      if (size_t m = marker_end_at(k)) {
        k = m;
        continue;
      }
      if (t_[k] == ':') {
        emit(k + 1, n_, kCredential);
        return;
      }
      ++k;
    }
  }

  // [from, end) without surrounding whitespace.
  void whole_from(size_t from, Type type) {
    size_t b = from, e = n_;
    while (b < e && is_one_of(t_[b], " \t\r\n")) ++b;
    while (e > b && is_one_of(t_[e - 1], " \t\r\n")) --e;
    emit(b, e, type);
  }

 private:
  // --- helpers

  uint16_t cls(size_t i) const { return class_of(t_[i]); }
  bool starts(size_t i, std::string_view p) const {
    if (n_ - i < p.size()) return false;
    for (size_t k = 0; k < p.size(); ++k) {
      if (t_[i + k] != p[k]) return false;
    }
    return true;
  }
  size_t run_of(size_t i, uint16_t c) const {
    while (i < n_ && (class_of(t_[i]) & c)) ++i;
    return i;
  }

  bool marker_ends_at(size_t pos) const {
    if (pos == 0 || t_[pos - 1] != ']' || markers_.empty()) return false;
    auto it = marker_after(markers_, pos - 1);
    return it != markers_.end() && it->end == pos;
  }
  size_t marker_end_at(size_t pos) const {
    if (pos >= n_ || t_[pos] != '[' || markers_.empty()) return 0;
    auto it = marker_after(markers_, pos);
    return (it != markers_.end() && it->begin == pos) ? it->end : 0;
  }
  // Nothing of class `c` (and no marker) right before `pos`.
  bool left_ok(size_t pos, uint16_t c) const { return pos == 0 || (!(cls(pos - 1) & c) && !marker_ends_at(pos)); }
  // Nothing of class `c` (and no marker) at `pos`.
  bool right_ok(size_t pos, uint16_t c) const { return pos >= n_ || (!(cls(pos) & c) && !marker_end_at(pos)); }

  void emit(size_t b, size_t e, Type type) {
    if (e > b) out_.push_back({b, e, type, false});
  }

  // A value found by context, which the caller then skips: tokens inside it are looked for too.
  void emit_value(size_t b, size_t e, Type type) {
    if (e <= b) return;
    emit(b, e, type);
    run_range(b, e, /*tokens_only=*/true);
  }

  bool has(size_t b, size_t e, uint16_t c) const {
    for (size_t k = b; k < e; ++k) {
      if (cls(k) & c) return true;
    }
    return false;
  }

  // --- provider tokens

  // AKIA (long-term), ASIA (STS), ABIA (service bearer), ACCA (context-specific) + 16 of
  // [A-Z0-9], standing alone. AIDA/AROA/AGPA/AIPA/ANPA/ANVA/APKA are IDs of users, roles,
  // groups, profiles, policies and public keys: identifiers, not credentials; they stay.
  size_t aws_access_key_id(size_t i) {
    if (!(starts(i, "AKIA") || starts(i, "ASIA") || starts(i, "ABIA") || starts(i, "ACCA"))) return 0;
    if (!left_ok(i, kAlnum)) return 0;
    size_t e = run_of(i + 4, kUpper | kDigit);
    if (e - i != 20 || !right_ok(e, kAlnum)) return 0;
    emit(i, e, kAwsAccessKeyId);
    // The secret access key printed next to its id ("id,secret", "id|secret", "id secret"): up
    // to 8 separators, then exactly 40 base64 characters standing alone.
    size_t j = e;
    while (j < n_ && j - e < 8 && is_one_of(t_[j], " \t,|;:=\"'")) ++j;
    if (j > e) {
      size_t s = run_of(j, kB64);
      if (s - j == 40 && right_ok(s, kB64 | kEquals)) {
        emit(j, s, kAwsSecretAccessKey);
        return s;
      }
    }
    return e;
  }

  // AIza + 35 of [A-Za-z0-9_-].
  size_t google_api_key(size_t i) {
    if (!starts(i, "AIza") || !left_ok(i, kB64url)) return 0;
    size_t e = run_of(i + 4, kB64url);
    if (e - i != 39 || !right_ok(e, kB64url)) return 0;
    emit(i, e, kGoogleApiKey);
    return e;
  }

  // ghp_ gho_ ghu_ ghs_ ghr_ + base62 (36 today; GitHub reserves the right to grow them), and
  // fine-grained github_pat_ + 22 + _ + 59.
  size_t github(size_t i) {
    if (!left_ok(i, kWord)) return 0;
    if (starts(i, "github_pat_")) {
      size_t e = run_of(i + 11, kWord);
      if (e - (i + 11) < 36) return 0;
      emit(i, e, kGithubToken);
      return e;
    }
    if (n_ - i < 4 || t_[i + 1] != 'h' || t_[i + 3] != '_' || !is_one_of(t_[i + 2], "pousr")) return 0;
    size_t e = run_of(i + 4, kAlnum);
    if (e - (i + 4) < 36) return 0;
    emit(i, e, kGithubToken);
    return e;
  }

  // glpat- + 20 or more of [A-Za-z0-9_-].
  size_t gitlab(size_t i) {
    if (!starts(i, "glpat-") || !left_ok(i, kB64url)) return 0;
    size_t e = run_of(i + 6, kB64url);
    if (e - (i + 6) < 20) return 0;
    emit(i, e, kGitlabToken);
    return e;
  }

  // hf_ + 34 letters (both cases); taken from 30 on.
  size_t huggingface(size_t i) {
    if (!starts(i, "hf_") || !left_ok(i, kWord)) return 0;
    size_t e = run_of(i + 3, kAlnum);
    if (e - (i + 3) < 30 || !has(i + 3, e, kUpper) || !has(i + 3, e, kLower)) return 0;
    emit(i, e, kHuggingfaceToken);
    return e;
  }

  // npm_ + 36 base62.
  size_t npm(size_t i) {
    if (!starts(i, "npm_") || !left_ok(i, kWord)) return 0;
    size_t e = run_of(i + 4, kAlnum);
    if (e - (i + 4) < 36) return 0;
    emit(i, e, kNpmToken);
    return e;
  }

  // sk_live_ sk_test_ rk_live_ rk_test_ + 20 or more base62 (Stripe's keys run to 99 and more).
  // pk_live_/pk_test_ are publishable keys, public by design: they stay.
  size_t stripe(size_t i) {
    if (!(starts(i, "sk_live_") || starts(i, "sk_test_") || starts(i, "rk_live_") || starts(i, "rk_test_"))) {
      return 0;
    }
    if (!left_ok(i, kWord)) return 0;
    size_t e = run_of(i + 8, kAlnum);
    if (e - (i + 8) < 20) return 0;
    emit(i, e, kStripeKey);
    return e;
  }

  // whsec_ + 32 or more base62.
  size_t stripe_webhook(size_t i) {
    if (!starts(i, "whsec_") || !left_ok(i, kWord)) return 0;
    size_t e = run_of(i + 6, kAlnum);
    if (e - (i + 6) < 32) return 0;
    emit(i, e, kStripeWebhookSecret);
    return e;
  }

  // sk-ant-<kind><version>-... is Anthropic (api03, admin01, oat01, ort01); sk-proj-,
  // sk-svcacct-, sk-admin-, sk-None-, anything with OpenAI's T3BlbkFJ, and legacy sk- + 48
  // base62 are OpenAI; any other sk- + 32 or more key characters with letters and digits
  // (DeepSeek, OpenRouter's sk-or-v1-, other OpenAI-compatible providers) is "api-key".
  size_t sk_key(size_t i) {
    if (!starts(i, "sk-") || !left_ok(i, kB64url)) return 0;
    const size_t body = i + 3;
    const size_t e = run_of(body, kB64url);
    std::string_view run = t_.substr(body, e - body);
    if (run.substr(0, 4) == "ant-") {
      size_t k = 4;
      while (k < run.size() && k < 4 + 16 && (class_of(run[k]) & (kLower | kDigit))) ++k;
      if (k > 4 && k < run.size() && run[k] == '-' && run.size() - (k + 1) >= 20) {
        emit(i, e, kAnthropicKey);
        return e;
      }
    }
    for (std::string_view p : {"proj-", "svcacct-", "admin-", "None-"}) {
      if (run.substr(0, p.size()) == p && run.size() - p.size() >= 20) {
        emit(i, e, kOpenaiKey);
        return e;
      }
    }
    if (run.size() >= 20 && run.find("T3BlbkFJ") != std::string_view::npos) {
      emit(i, e, kOpenaiKey);
      return e;
    }
    size_t a = run_of(body, kAlnum);
    if (a - body == 48 && right_ok(a, kB64url)) {
      emit(i, a, kOpenaiKey);
      return a;
    }
    if (run.size() >= 32 && has(body, e, kDigit) && has(body, e, kAlpha)) {
      emit(i, e, kApiKey);
      return e;
    }
    return 0;
  }

  // xoxb- xoxp- xoxa- xoxr- xoxs- xoxo- xoxe- xoxe.xoxb- xoxe.xoxp- xapp- + 10 or more of
  // [A-Za-z0-9-] with a digit (placeholders such as xoxb-your-token-here have none).
  size_t slack_token(size_t i) {
    if (!left_ok(i, kWord)) return 0;
    size_t body;
    if (starts(i, "xoxe.xoxb-") || starts(i, "xoxe.xoxp-")) {
      body = i + 10;
    } else if (starts(i, "xapp-")) {
      body = i + 5;
    } else if (starts(i, "xox") && n_ - i >= 5 && is_one_of(t_[i + 3], "abprsoe") && t_[i + 4] == '-') {
      body = i + 5;
    } else {
      return 0;
    }
    size_t e = run_of(body, kAlnum | kDash);
    if (e - body < 10 || !has(body, e, kDigit)) return 0;
    emit(i, e, kSlackToken);
    return e;
  }

  // https://hooks.slack.com/services/T.../B.../... (also /workflows/ and /triggers/): the path
  // after the kind is the secret.
  size_t slack_webhook(size_t i) {
    if (!starts(i, "hooks.slack.com/") || !left_ok(i, kAlnum | kDot | kDash)) return 0;
    size_t p = i + 16;
    size_t body = 0;
    for (std::string_view kind : {"services/", "workflows/", "triggers/"}) {
      if (starts(p, kind)) body = p + kind.size();
    }
    if (body == 0) return 0;
    size_t e = run_of(body, kB64url | kSlash);
    if (e - body < 10) return 0;
    emit(body, e, kSlackWebhook);
    return e;
  }

  // Three (JWS) or five (JWE) base64url segments whose first decodes to a JSON object with
  // "alg". A full stop after the last segment is the sentence's, not the token's.
  size_t jwt(size_t i) {
    if (!starts(i, "eyJ") || !left_ok(i, kB64url | kDot)) return 0;
    size_t e = run_of(i, kB64url | kDot);
    if (!right_ok(e, kB64url | kDot)) return 0;
    std::vector<std::string_view> parts;
    for (size_t p = i;;) {
      size_t d = t_.substr(0, e).find('.', p);
      if (d == std::string_view::npos) {
        parts.push_back(t_.substr(p, e - p));
        break;
      }
      parts.push_back(t_.substr(p, d - p));
      p = d + 1;
      if (parts.size() > 6) return 0;
    }
    size_t end = e;
    if (parts.size() >= 4 && parts.back().empty()) {
      parts.pop_back();
      --end;
    }
    if ((parts.size() != 3 && parts.size() != 5) || parts[1].empty()) return 0;
    if (parts.size() == 5 && parts[3].empty()) return 0;
    if (parts[0].size() > 16384) return 0;
    auto header = base64url_decode(parts[0]);
    if (!header) return 0;
    auto j = nlohmann::json::parse(*header, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("alg") || !j["alg"].is_string()) return 0;
    emit(i, end, kJwt);
    return end;
  }

  // -----BEGIN <...PRIVATE KEY...>----- through the matching -----END ...-----. A block cut
  // before its END (a truncated log line) is redacted to where its body stops.
  size_t private_key(size_t i) {
    static constexpr std::string_view kBegin = "-----BEGIN ";
    if (!starts(i, kBegin)) return 0;
    size_t l = i + kBegin.size();
    size_t le = l;
    while (le < n_ && le - l <= 64 && ((cls(le) & (kUpper | kDigit)) || t_[le] == ' ')) ++le;
    if (!starts(le, "-----")) return 0;
    if (t_.substr(l, le - l).find("PRIVATE KEY") == std::string_view::npos) return 0;
    size_t b = le + 5;
    while (b < n_) {
      if (size_t m = marker_end_at(b)) {
        b = m;
        continue;
      }
      if (starts(b, "-----END")) {
        size_t q = b + 8;
        while (q < n_ && q - b <= 80 && ((cls(q) & (kUpper | kDigit)) || t_[q] == ' ')) ++q;
        if (starts(q, "-----")) q += 5;
        emit(i, q, kPrivateKey);
        return q;
      }
      char c = t_[b];
      if (!(cls(b) & (kB64 | kEquals | kDash | kDot | kUnderscore)) && !is_one_of(c, " \t\r\n:,\\()@<>")) break;
      ++b;
    }
    emit(i, b, kPrivateKey);
    return b;
  }

  // --- context rules

  // A random-looking credential: long enough, with digits (or both cases when longer).
  bool token_like(size_t b, size_t e) const {
    size_t len = e - b;
    if (len >= 16 && has(b, e, kDigit)) return true;
    return len >= 20 && has(b, e, kUpper) && has(b, e, kLower);
  }

  // "Bearer <token68>" anywhere (in a header the Authorization rule gets it first).
  size_t bearer(size_t i) {
    if (!starts(i, "Bearer") || !left_ok(i, kAlnum)) return 0;
    size_t s = i + 6;
    size_t v = s;
    while (v < n_ && v - s < 8 && is_blank(t_[v])) ++v;
    if (v == s) return 0;
    size_t e = run_of(v, kToken68);
    while (e < n_ && t_[e] == '=') ++e;
    if (!token_like(v, e)) return 0;
    emit(v, e, kBearerToken);
    return e;
  }

  // scheme://user:password@host: the password. scheme://<token>@host (a token as the user name,
  // as git and Sentry DSNs use) when it looks like one.
  void url_userinfo(size_t i) {
    if (!starts(i, "://") || i == 0 || !(cls(i - 1) & (kAlnum | kPlus | kDot | kDash))) return;
    const size_t a = i + 3;
    size_t e = a;
    size_t at = std::string_view::npos;
    while (e < n_) {
      if (size_t m = marker_end_at(e)) {
        e = m;
        continue;
      }
      char c = t_[e];
      if (is_one_of(c, "/?#\"'<>\\`{}|^ \t\r\n\v\f") || c == '\0') break;
      if (c == '@') at = e;
      ++e;
    }
    if (at == std::string_view::npos || at == a) return;
    size_t colon = std::string_view::npos;
    for (size_t k = a; k < at;) {
      if (size_t m = marker_end_at(k)) {
        k = m;
        continue;
      }
      if (t_[k] == ':') {
        colon = k;
        break;
      }
      ++k;
    }
    if (colon != std::string_view::npos) {
      emit(colon + 1, at, kUrlPassword);
    } else if (run_of(a, kB64url) == at && at - a >= 20 && has(a, at, kDigit) && has(a, at, kAlpha)) {
      emit(a, at, kUrlCredential);
    }
  }

  // Where an unquoted "key:" sits: only some places make it a key rather than prose.
  enum class Where { kLineStart, kAfterQuote, kFlow, kMidLine };

  // KEY=VALUE, KEY := VALUE, 'key' => 'value', "key": "value", key: value (YAML, headers) where
  // the key names a secret.
  size_t assignment(size_t i) {
    const char sep = t_[i];
    size_t sep_end = i + 1;
    if (sep == '=') {
      if (i + 1 < n_ && t_[i + 1] == '=') return i + 2;  // ==
      if (i > 0 && is_one_of(t_[i - 1], "=!<>")) return 0;
      if (i + 1 < n_ && t_[i + 1] == '>') sep_end = i + 2;  // =>
    } else {
      if (i + 1 < n_ && t_[i + 1] == ':') return i + 2;  // ::
      if (starts(i, "://")) return 0;
      if (i + 1 < n_ && t_[i + 1] == '=') sep_end = i + 2;  // :=
    }
    const bool colon = sep == ':' && sep_end == i + 1;

    // The key, backwards: a few blanks, an optional closing quote (maybe escaped), the name.
    size_t j = i;
    size_t blanks_before = 0;
    while (j > 0 && blanks_before < 4 && is_blank(t_[j - 1])) {
      --j;
      ++blanks_before;
    }
    char quote = 0;
    bool escaped = false;
    if (j > 0 && (t_[j - 1] == '"' || t_[j - 1] == '\'')) {
      quote = t_[j - 1];
      --j;
      if (j > 0 && t_[j - 1] == '\\') {
        escaped = true;
        --j;
      }
    }
    const size_t key_end = j;
    const size_t floor = key_end > kMaxKeyLen ? key_end - kMaxKeyLen : 0;
    while (j > floor && (cls(j - 1) & kIdent)) --j;
    const size_t key_begin = j;
    if (key_begin == key_end) return 0;
    const bool cut = key_begin == floor && floor > 0 && (cls(floor - 1) & kIdent);
    if (quote) {
      if (key_begin == 0 || t_[key_begin - 1] != quote) return 0;
      if (escaped && (key_begin < 2 || t_[key_begin - 2] != '\\')) return 0;
    }
    const KeyKind kind =
        classify_key(t_.substr(key_begin, key_end - key_begin), !cut && !marker_ends_at(key_begin));
    if (kind == KeyKind::kNone) return 0;

    Where where = Where::kMidLine;
    char open_quote = 0;
    if (!quote) {
      size_t b = key_begin;
      while (b > 0 && b + 16 > key_begin && is_blank(t_[b - 1])) --b;
      if (b > 0 && (t_[b - 1] == '{' || t_[b - 1] == ',' || t_[b - 1] == '(')) {
        where = Where::kFlow;
      } else {
        while (b > 0 && b + 16 > key_begin && is_one_of(t_[b - 1], " \t>*<#+-")) --b;
        if (b == 0 || t_[b - 1] == '\n' || t_[b - 1] == '\r') {
          where = Where::kLineStart;
        } else if (is_one_of(t_[b - 1], "\"'`")) {
          where = Where::kAfterQuote;
          open_quote = t_[b - 1];
        }
      }
    }
    if (colon && !quote) {
      if (where == Where::kMidLine && kind != KeyKind::kAuthorization) return 0;
      if (blanks_before > 0 && where != Where::kLineStart) return 0;
    }

    size_t v = sep_end;
    size_t blanks_after = 0;
    while (v < n_ && is_blank(t_[v])) {
      ++v;
      ++blanks_after;
    }
    if (v >= n_ || t_[v] == '\n' || t_[v] == '\r' || t_[v] == '`') return 0;

    // Quoted value (also \"...\" inside an escaped JSON string).
    char vq = 0;
    size_t vb = v;
    bool vescaped = false;
    if (t_[v] == '"' || t_[v] == '\'') {
      vq = t_[v];
      vb = v + 1;
    } else if (t_[v] == '\\' && v + 1 < n_ && (t_[v + 1] == '"' || t_[v + 1] == '\'')) {
      vq = t_[v + 1];
      vb = v + 2;
      vescaped = true;
    }
    if (vq) {
      if (vb < n_ && t_[vb] == '$' && vb + 1 < n_ && (t_[vb + 1] == '{' || t_[vb + 1] == '(' || (cls(vb + 1) & kWord))) {
        return 0;  // "${OTHER}", "$(cmd)": an expansion, not a value
      }
      size_t ve = close_quote(vb, vq, vescaped);
      size_t resume = ve < n_ && t_[ve] != '\n' && t_[ve] != '\r' ? ve + (vescaped ? 2 : 1) : ve;
      if (kind == KeyKind::kAuthorization) {
        auth_value(vb, ve, /*require_scheme=*/false);
      } else {
        emit_value(vb, ve, value_type(kind, vb, ve));
      }
      return std::max(resume, i + 1);
    }

    // Unquoted.
    const bool header_like = !quote && (where == Where::kLineStart || where == Where::kAfterQuote);
    if (kind == KeyKind::kAuthorization) {
      if (colon && !quote && where == Where::kMidLine) {
        // Prose mentions "Authorization:"; only a known scheme makes it a header here.
        return std::max(auth_value(v, kToLineEnd, /*require_scheme=*/true), i + 1);
      }
      if (header_like || !colon) {
        size_t limit = header_like ? line_end(v, where == Where::kAfterQuote ? open_quote : 0) : unquoted_end(v, false);
        return std::max(auth_value(v, limit, /*require_scheme=*/false), i + 1);
      }
    }
    if (kind == KeyKind::kCookie && header_like) {
      size_t limit = trim_right(v, line_end(v, where == Where::kAfterQuote ? open_quote : 0));
      emit_value(v, limit, kCredential);
      return std::max(limit, i + 1);
    }

    if (t_[v] == '$') return 0;  // a variable, not a value
    const size_t ve = unquoted_end(v, colon);
    if (ve == v) return 0;
    if (ve < n_ && (t_[ve] == '(' || t_[ve] == '[')) return 0;  // an expression: token = get(...)
    if (is_placeholder_word(t_.substr(v, ve - v))) return 0;
    if (!colon && (blanks_before > 0 || blanks_after > 0)) {
      // Code rather than config: `token = await fetch_token()`; the statement goes on.
      size_t w = ve;
      while (w < n_ && is_blank(t_[w])) ++w;
      if (w < n_ && ((cls(w) & kIdent) || t_[w] == '(' || t_[w] == '[')) return 0;
    }
    if (colon && !quote) {
      size_t w = ve;
      while (w < n_ && is_blank(t_[w])) ++w;
      if (where == Where::kFlow) {
        // { password: abc, user: x }: the item has to end here.
        if (w < n_ && !is_one_of(t_[w], ",})\r\n")) return 0;
      } else {
        // YAML or a header line: one value, then the end of the line (or of the quote) or a
        // comment; "Password: must be 8 characters" is prose.
        char end_quote = where == Where::kAfterQuote ? open_quote : 0;
        if (w < n_ && t_[w] != '\n' && t_[w] != '\r' && t_[w] != '#' && t_[w] != end_quote) return 0;
      }
    }
    emit_value(v, ve, value_type(kind, v, ve));
    return ve;
  }

  Type value_type(KeyKind kind, size_t b, size_t e) const {
    if (kind == KeyKind::kAwsSecret && e - b == 40 && run_of(b, kB64) == e) return kAwsSecretAccessKey;
    return kCredential;
  }

  // Where a quoted value ends: the closing quote, else the end of the line.
  size_t close_quote(size_t b, char q, bool escaped) const {
    size_t k = b;
    while (k < n_) {
      char c = t_[k];
      if (c == '\n' || c == '\r') return k;
      if (escaped) {
        if (c == '\\' && k + 1 < n_ && t_[k + 1] == q) return k;
      } else {
        if (c == q) return k;
        if (c == '\\' && q == '"' && k + 1 < n_ && t_[k + 1] != '\n') {
          k += 2;
          continue;
        }
      }
      ++k;
    }
    return n_;
  }

  // The end of the line, or the first `quote` before it.
  size_t line_end(size_t b, char quote) const {
    size_t k = b;
    while (k < n_ && t_[k] != '\n' && t_[k] != '\r' && (quote == 0 || t_[k] != quote)) ++k;
    return k;
  }

  size_t trim_right(size_t b, size_t e) const {
    while (e > b && is_blank(t_[e - 1])) --e;
    return e;
  }

  // Where an unquoted value ends. Memoised per stop set: every start inside a scanned value
  // ends at the same place, so values are scanned once however many separators they hold.
  size_t unquoted_end(size_t v, bool comma_stops) {
    auto& memo = memo_[comma_stops ? 1 : 0];
    if (v >= memo.first && v < memo.second) return memo.second;
    size_t k = v;
    while (k < n_) {
      if (size_t m = marker_end_at(k)) {
        k = m;
        continue;
      }
      char c = t_[k];
      if (c == '\0' || is_one_of(c, " \t\r\n\v\f\"'`;&|<>(){}[]")) break;
      if (c == ',' && comma_stops) break;
      if (c == '\\' && k + 1 < n_ && is_one_of(t_[k + 1], "nrt\"'\\")) break;
      ++k;
    }
    memo = {v, k};
    return k;
  }

  // An Authorization value in [b, limit): a known scheme stays and what it carries is redacted;
  // with no known scheme the whole value is, unless `require_scheme`. Returns where to resume.
  // `limit` kToLineEnd: the value runs to the end of the line, found only once a scheme matched
  // (so prose with many "Authorization:" on one line is not read to its end each time).
  static constexpr size_t kToLineEnd = SIZE_MAX;
  size_t auth_value(size_t b, size_t limit, bool require_scheme) {
    const bool to_line_end = limit == kToLineEnd;
    if (to_line_end) limit = n_;
    while (b < limit && is_blank(t_[b])) ++b;
    size_t w = b;
    while (w < limit && (cls(w) & (kAlnum | kDash))) ++w;
    const Scheme* scheme = (w > b && w < limit && is_blank(t_[w])) ? find_scheme(t_.substr(b, w - b)) : nullptr;
    if (scheme) {
      size_t c = w;
      while (c < limit && is_blank(t_[c])) ++c;
      size_t ce = c;
      if (scheme->single_token) {
        while (ce < limit) {
          if (size_t m = marker_end_at(ce)) {
            ce = m;
            continue;
          }
          if (!(cls(ce) & (kToken68 | kEquals))) break;
          ++ce;
        }
      } else {
        ce = trim_right(c, to_line_end ? line_end(c, 0) : limit);
      }
      emit_value(c, ce, kAuthorization);
      return ce;
    }
    if (require_scheme) return 0;
    if (to_line_end) limit = line_end(b, 0);
    size_t e = trim_right(b, limit);
    emit_value(b, e, kAuthorization);
    return e;
  }

  // --password X, --api-key "X" (a long flag that names a secret, then a space): X. The
  // --flag=X form is an assignment.
  size_t long_flag(size_t i) {
    if (!starts(i, "--")) return 0;
    if (i > 0 && !is_one_of(t_[i - 1], " \t\r\n\"'`(")) return 0;
    size_t ns = i + 2;
    size_t ne = run_of(ns, kAlnum | kDash | kUnderscore);
    if (ne == ns || ne - ns > kMaxKeyLen || ne >= n_ || !is_blank(t_[ne])) return 0;
    std::string_view name = t_.substr(ns, ne - ns);
    if (name.substr(0, 3) == "no-" || classify_key(name, true) == KeyKind::kNone) return 0;
    size_t v = ne;
    while (v < n_ && v - ne < 8 && is_blank(t_[v])) ++v;
    if (v >= n_ || is_one_of(t_[v], "-$`\\\r\n \t")) return 0;
    if (t_[v] == '"' || t_[v] == '\'') {
      if (v + 1 < n_ && t_[v + 1] == '$') return 0;  // --token "$GITHUB_TOKEN"
      size_t ve = close_quote(v + 1, t_[v], false);
      emit_value(v + 1, ve, kCredential);
      return std::max(ve, i + 1);
    }
    size_t ve = unquoted_end(v, false);
    emit_value(v, ve, kCredential);
    return std::max(ve, i + 1);
  }

  // curl -u user:PASSWORD (also -uuser:PASSWORD, -U, --user, --proxy-user, --user=...) in a
  // command line that runs curl: -u means other things to other tools (docker run -u 0:0).
  size_t curl_user(size_t i) {
    if (i > 0 && !is_one_of(t_[i - 1], " \t\"'`")) return 0;
    size_t v;
    bool short_flag = false;
    if (starts(i, "-u") || starts(i, "-U")) {
      v = i + 2;
      short_flag = true;
    } else if (starts(i, "--user")) {
      v = i + 6;
    } else if (starts(i, "--proxy-user")) {
      v = i + 12;
    } else {
      return 0;
    }
    if (v < n_ && is_blank(t_[v])) {
      while (v < n_ && is_blank(t_[v])) ++v;
    } else if (v < n_ && t_[v] == '=' && !short_flag) {
      ++v;
    } else if (!short_flag || v >= n_ || !(cls(v) & kAlnum)) {
      return 0;
    }
    if (v >= n_ || !runs_curl(i)) return 0;
    size_t vb = v;
    size_t ve;
    if (t_[v] == '"' || t_[v] == '\'') {
      vb = v + 1;
      ve = close_quote(vb, t_[v], false);
    } else {
      ve = unquoted_end(v, false);
    }
    for (size_t k = vb; k < ve;) {
      if (size_t m = marker_end_at(k)) {
        k = m;
        continue;
      }
      if (t_[k] == ':') {
        emit(k + 1, ve, kCredential);
        return 0;  // the user name is scanned on: it may be a token itself (curl -u sk_test_...:)
      }
      ++k;
    }
    return 0;
  }

  // "curl" as a word earlier on the line (within 256 bytes).
  bool runs_curl(size_t i) const {
    size_t floor = i > 256 ? i - 256 : 0;
    for (size_t k = i; k >= floor + 4; --k) {
      if (t_[k - 1] == '\n' || t_[k - 1] == '\r') return false;
      if (t_.compare(k - 4, 4, "curl") == 0 && (k - 4 == 0 || is_one_of(t_[k - 5], " \t/\"'`;&|(")) &&
          (k == n_ || is_blank(t_[k]))) {
        return true;
      }
    }
    return false;
  }

  std::string_view t_;
  size_t n_;
  const std::vector<MarkerPos>& markers_;
  std::vector<Span>& out_;
  std::pair<size_t, size_t> memo_[2] = {{0, 0}, {0, 0}};
};

// Cuts spans around markers (markers are atomic and never redacted again; a literal occurrence
// that overlaps one is dropped, since cutting it would make a second pass find more), merges
// overlapping spans into one marker, and writes the result. A merged marker is named after its
// longest span, and among equally long ones after the most specific type: a token that is the
// whole value of "token=" is a github-token, an AWS key id inside an AWS4 Authorization header
// is part of an authorization.
// Returns nullopt when nothing is left to redact.
std::optional<std::string> render(std::string_view t, std::vector<Span>& spans, const std::vector<MarkerPos>& markers,
                                  std::vector<std::string>* found) {
  if (spans.empty()) return std::nullopt;
  std::vector<Span> pieces;
  pieces.reserve(spans.size());
  for (const Span& s : spans) {
    if (s.begin >= s.end) continue;
    if (markers.empty() || s.literal) {
      pieces.push_back(s);
      continue;
    }
    size_t b = s.begin;
    for (auto it = marker_after(markers, b); b < s.end; ++it) {
      if (it == markers.end() || it->begin >= s.end) {
        pieces.push_back({b, s.end, s.type, false});
        break;
      }
      if (it->begin > b) pieces.push_back({b, it->begin, s.type, false});
      b = std::max(b, it->end);
    }
  }
  if (pieces.empty()) return std::nullopt;
  std::sort(pieces.begin(), pieces.end(),
            [](const Span& a, const Span& b) { return std::tie(a.begin, a.type) < std::tie(b.begin, b.type); });
  std::string out;
  out.reserve(t.size());
  size_t pos = 0;
  for (size_t k = 0; k < pieces.size();) {
    size_t b = pieces[k].begin;
    size_t e = pieces[k].end;
    Type type = pieces[k].type;
    size_t best = e - b;
    for (++k; k < pieces.size() && pieces[k].begin < e; ++k) {
      e = std::max(e, pieces[k].end);
      size_t len = pieces[k].end - pieces[k].begin;
      if (len > best || (len == best && pieces[k].type < type)) {
        best = len;
        type = pieces[k].type;
      }
    }
    out.append(t.substr(pos, b - pos));
    out += kMarkerOpen;
    out += kTypeNames[type];
    out += ']';
    if (found) found->emplace_back(kTypeNames[type]);
    pos = e;
  }
  out.append(t.substr(pos));
  return out;
}

// What a caller knows about a value beyond its text.
enum class Whole {
  kNo,
  kCredential,     // the whole value is a secret
  kAwsSecret,      // ... named as an AWS secret access key
  kAuthorization,  // the whole value is an Authorization header value
  kAfterColon,     // user:secret
  kAfterFlag,      // -pSECRET: everything after the two-character flag
};

std::string_view basename(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// Members that hold a secret's value rather than describe it.
bool is_holder_key(std::string_view key) {
  for (std::string_view k : {"value", "data", "plain", "plaintext", "raw", "text", "string", "content", "b64", "base64"}) {
    if (iequals(key, k)) return true;
  }
  return false;
}

bool is_argv_key(std::string_view key) {
  for (std::string_view k : {"argv", "args", "cmdline", "command_line", "commandline", "command", "cmd"}) {
    if (iequals(key, k)) return true;
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string marker(std::string_view type) {
  std::string out(kMarkerOpen);
  out += type;
  out += ']';
  return out;
}

const std::vector<std::string_view>& marker_types() {
  static const std::vector<std::string_view> all(kTypeNames.begin(), kTypeNames.end());
  return all;
}

bool names_secret(std::string_view key) { return classify_key(key, true) != KeyKind::kNone; }

Redactor::Redactor(std::vector<std::string> literal_secrets) {
  std::set<std::string> accepted;
  for (size_t k = 0; k < literal_secrets.size(); ++k) {
    const std::string& s = literal_secrets[k];
    std::string which = "sandbox secret #" + std::to_string(k + 1) + " (" + std::to_string(s.size()) + " bytes)";
    if (s.size() < kMinLiteralSecretBytes) {
      ignored_.push_back(which + " is shorter than " + std::to_string(kMinLiteralSecretBytes) +
                         " bytes; it is not matched by value");
      continue;
    }
    if (std::all_of(s.begin(), s.end(), [](char c) { return is_one_of(c, " \t\r\n\v\f"); })) {
      ignored_.push_back(which + " is only whitespace; it is not matched by value");
      continue;
    }
    bool marker_text = false;
    for (std::string_view type : kTypeNames) {
      if (marker(type).find(s) != std::string::npos) marker_text = true;
    }
    if (marker_text) {
      ignored_.push_back(which + " is part of a redaction marker; it is not matched by value");
      continue;
    }
    accepted.insert(s);
  }
  literal_count_ = accepted.size();
  if (accepted.empty()) return;
  std::set<std::string> patterns;
  for (const std::string& s : accepted) {
    for (std::string& form : encoded_forms(s)) patterns.insert(std::move(form));
  }
  literals_ = std::make_shared<const LiteralMatcher>(std::vector<std::string>(patterns.begin(), patterns.end()));
}

namespace {

// One pass; nullopt when it finds nothing more to redact.
std::optional<std::string> redact_pass(std::string_view text, const LiteralMatcher* literals, Whole whole,
                                       std::vector<std::string>* found) {
  std::vector<MarkerPos> markers = find_markers(text);
  std::vector<Span> spans;
  Scanner scanner(text, markers, spans);
  scanner.run();
  if (literals) literals->find(text, markers, spans);
  switch (whole) {
    case Whole::kNo:
      break;
    case Whole::kCredential:
      scanner.whole_from(0, kCredential);
      break;
    case Whole::kAwsSecret:
      scanner.whole_from(0, text.size() == 40 && std::all_of(text.begin(), text.end(), [](char c) {
                              return (class_of(c) & kB64) != 0;
                            }) ? kAwsSecretAccessKey : kCredential);
      break;
    case Whole::kAuthorization:
      scanner.authorization_value();
      break;
    case Whole::kAfterColon:
      scanner.after_first_colon(0);
      break;
    case Whole::kAfterFlag:
      scanner.whole_from(std::min<size_t>(2, text.size()), kCredential);
      break;
  }
  return render(text, spans, markers, found);
}

// Passes until one finds nothing more (the second pass, when the first found something, almost
// always). Rules read context (where a line or quote ends, what stands next to a token) and a
// merged marker can remove some of it, e.g. a key block that runs past the end of a header line
// takes the line break with it; going on until nothing changes makes the result a fixed point,
// so redacting it again changes nothing. Every pass turns at least one byte into a marker and
// none undoes one; kMaxPasses bounds the work on inputs built to chain.
constexpr int kMaxPasses = 4;

std::string redact_text(std::string_view text, const LiteralMatcher* literals, Whole whole,
                        std::vector<std::string>* found) {
  std::optional<std::string> cur = redact_pass(text, literals, whole, found);
  if (!cur) return std::string(text);
  for (int pass = 1; pass < kMaxPasses; ++pass) {
    std::optional<std::string> next = redact_pass(*cur, literals, whole, found);
    if (!next) break;
    cur = std::move(next);
  }
  return std::move(*cur);
}

}  // namespace

std::string Redactor::redact(std::string_view text, std::vector<std::string>* found) const {
  return redact_text(text, literals_.get(), Whole::kNo, found);
}

namespace {

// What each argument of a command is, by its neighbours.
std::vector<Whole> argv_rules(const std::vector<std::string>& argv) {
  std::vector<Whole> whole(argv.size(), Whole::kNo);
  bool setter = false;  // `aws configure set KEY VALUE`, `git config KEY VALUE`, `npm config set ...`
  for (size_t k = 1; k < argv.size(); ++k) {
    std::string_view prev = argv[k - 1];
    std::string_view cur = argv[k];
    if (k >= 2 && (argv[k - 2] == "set" || argv[k - 2] == "config")) setter = true;
    if (setter && !prev.empty() && prev[0] != '-' && names_secret(prev) && cur.substr(0, 2) != "--") {
      whole[k] = Whole::kCredential;
    } else if (prev.size() > 2 && prev.substr(0, 2) == "--" && prev.find('=') == std::string_view::npos &&
               prev.substr(2, 3) != "no-" && names_secret(prev.substr(2)) && cur.substr(0, 2) != "--" && cur != "-") {
      whole[k] = Whole::kCredential;
    }
  }
  // The tool: the first argument (that is not itself a secret) whose basename has
  // secret-carrying short flags.
  enum class Tool { kNone, kCurl, kMysql, kSshpass, kLogin };
  Tool tool = Tool::kNone;
  size_t tool_at = 0;
  for (size_t k = 0; k < argv.size() && tool == Tool::kNone; ++k) {
    tool_at = k;
    if (whole[k] != Whole::kNo) continue;
    std::string_view b = basename(argv[k]);
    if (b == "curl") {
      tool = Tool::kCurl;
    } else if (b == "mysql" || b == "mariadb" || b == "mysqldump" || b == "mysqladmin" || b == "mariadb-dump") {
      tool = Tool::kMysql;
    } else if (b == "sshpass") {
      tool = Tool::kSshpass;
    } else if (b == "docker" || b == "podman" || b == "nerdctl" || b == "helm" || b == "oras" || b == "skopeo") {
      if (std::find(argv.begin() + static_cast<ptrdiff_t>(k), argv.end(), "login") != argv.end()) tool = Tool::kLogin;
    }
  }
  for (size_t k = tool_at + 1; k < argv.size() && tool != Tool::kNone; ++k) {
    if (whole[k] != Whole::kNo) continue;
    std::string_view prev = argv[k - 1];
    std::string_view cur = argv[k];
    switch (tool) {
      case Tool::kCurl:
        if (prev == "-u" || prev == "--user" || prev == "-U" || prev == "--proxy-user") {
          whole[k] = Whole::kAfterColon;
        } else if (cur.size() > 2 && (cur.substr(0, 2) == "-u" || cur.substr(0, 2) == "-U")) {
          whole[k] = Whole::kAfterColon;
        }
        break;
      case Tool::kMysql:
        if (cur.size() > 2 && cur.substr(0, 2) == "-p") whole[k] = Whole::kAfterFlag;
        break;
      case Tool::kSshpass:
        if (prev == "-p") {
          whole[k] = Whole::kCredential;
        } else if (cur.size() > 2 && cur.substr(0, 2) == "-p") {
          whole[k] = Whole::kAfterFlag;
        }
        break;
      case Tool::kLogin:
        if (prev == "-p") whole[k] = Whole::kCredential;
        break;
      case Tool::kNone:
        break;
    }
  }
  return whole;
}

}  // namespace

std::vector<std::string> Redactor::redact_argv(const std::vector<std::string>& argv,
                                               std::vector<std::string>* found) const {
  // As with text, passes until nothing changes: redacting an argument can change what its
  // neighbours are (a literal secret that was the tool's path).
  std::vector<std::string> cur = argv;
  for (int pass = 0; pass < kMaxPasses; ++pass) {
    std::vector<Whole> whole = argv_rules(cur);
    bool changed = false;
    for (size_t k = 0; k < cur.size(); ++k) {
      std::string r = redact_text(cur[k], literals_.get(), whole[k], found);
      if (r != cur[k]) {
        cur[k] = std::move(r);
        changed = true;
      }
    }
    if (!changed) break;
  }
  return cur;
}

nlohmann::json Redactor::redact_json(const nlohmann::json& value, std::vector<std::string>* found) const {
  using json = nlohmann::json;
  struct Ctx {
    bool secret = false;  // the whole value is a secret
    bool auth = false;    // ... and an Authorization header value
    bool aws = false;     // ... or an AWS secret access key
    bool argv = false;    // an array of strings here is a command's argv
  };
  struct Item {
    std::string key;  // the redacted key, for objects
    const json* src;
    Ctx ctx;
  };
  struct Frame {
    json* dst;
    std::vector<Item> items;
    size_t next = 0;
  };

  const LiteralMatcher* lit = literals_.get();
  auto scalar = [&](const json& v, Ctx ctx) -> json {
    if (v.is_string()) {
      const std::string& s = v.get_ref<const std::string&>();
      Whole w = !ctx.secret ? Whole::kNo
                : ctx.auth    ? Whole::kAuthorization
                : ctx.aws     ? Whole::kAwsSecret
                              : Whole::kCredential;
      return redact_text(s, lit, w, found);
    }
    if (v.is_number() && ctx.secret) {
      if (found) found->emplace_back(kTypeNames[kCredential]);
      return marker(kTypeNames[kCredential]);
    }
    if (v.is_binary()) {
      const auto& bin = v.get_binary();
      std::string_view bytes(reinterpret_cast<const char*>(bin.data()), bin.size());
      std::string r = redact_text(bytes, lit, ctx.secret ? Whole::kCredential : Whole::kNo, found);
      return json::binary(std::vector<std::uint8_t>(r.begin(), r.end()));
    }
    return v;
  };

  auto object_items = [&](const json& obj, Ctx ctx) {
    // {"name": "DB_PASSWORD", "value": "..."} and its spellings.
    KeyKind sibling = KeyKind::kNone;
    for (const char* nk : {"name", "Name", "key", "Key", "ParameterKey", "OptionName"}) {
      auto it = obj.find(nk);
      if (it != obj.end() && it->is_string()) {
        KeyKind k = classify_key(it->get_ref<const std::string&>(), true);
        if (k != KeyKind::kNone) sibling = k;
      }
    }
    std::vector<Item> items;
    items.reserve(obj.size());
    std::set<std::string> taken;
    std::vector<bool> changed;
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      const std::string& key = it.key();
      std::string rk = redact_text(key, lit, Whole::kNo, found);
      KeyKind kind = classify_key(key, true);
      bool is_value = key == "value" || key == "Value" || key == "ParameterValue" || key == "OptionValue";
      if (is_value && sibling != KeyKind::kNone) kind = sibling;
      // Under a secret key, an object's members are secrets when their own names say so, or
      // when they only hold the value ({"password": {"value": ...}}); {"Credentials":
      // {"Expiration": ...}} keeps its expiry.
      Ctx c;
      c.secret = kind != KeyKind::kNone || (ctx.secret && is_holder_key(key));
      c.auth = kind == KeyKind::kAuthorization;
      c.aws = kind == KeyKind::kAwsSecret;
      c.argv = is_argv_key(key);
      changed.push_back(rk != key);
      if (rk == key) taken.insert(rk);
      items.push_back({std::move(rk), &it.value(), c});
    }
    // Keys that changed stay distinct: "[REDACTED:jwt]", "[REDACTED:jwt]#2", ...
    std::map<std::string, size_t> next_suffix;
    for (size_t k = 0; k < items.size(); ++k) {
      if (!changed[k]) continue;
      std::string base = items[k].key;
      if (taken.insert(base).second) continue;
      size_t& n = next_suffix.try_emplace(base, 2).first->second;
      std::string candidate;
      do {
        candidate = base + "#" + std::to_string(n++);
      } while (!taken.insert(candidate).second);
      items[k].key = std::move(candidate);
    }
    return items;
  };

  std::vector<Frame> stack;
  auto open = [&](const json& v, json& dst, Ctx ctx) {
    if (v.is_object()) {
      dst = json::object();
      stack.push_back({&dst, object_items(v, ctx)});
    } else if (v.is_array()) {
      if (ctx.argv && !ctx.secret && std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_string(); })) {
        dst = redact_argv(v.get<std::vector<std::string>>(), found);
        return;
      }
      dst = json::array();
      Frame f{&dst, {}};
      f.items.reserve(v.size());
      for (const json& e : v) f.items.push_back({std::string(), &e, Ctx{ctx.secret, ctx.auth, ctx.aws, false}});
      stack.push_back(std::move(f));
    } else {
      dst = scalar(v, ctx);
    }
  };

  json out;
  open(value, out, Ctx{});
  while (!stack.empty()) {
    Frame& f = stack.back();
    if (f.next == f.items.size()) {
      stack.pop_back();
      continue;
    }
    Item& item = f.items[f.next++];
    json* slot;
    if (f.dst->is_object()) {
      slot = &(*f.dst)[item.key];
    } else {
      f.dst->push_back(nullptr);
      slot = &f.dst->back();
    }
    open(*item.src, *slot, item.ctx);  // may grow `stack`: `f` is not used after this
  }
  return out;
}

}  // namespace km::audit
