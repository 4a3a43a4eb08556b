#include "km/audit/corpus_template.h"

#include <optional>

namespace km::audit::testing {

namespace {

constexpr size_t kMaxRun = 4096;
constexpr size_t kMaxPemLines = 64;
constexpr size_t kMaxOutput = 1 << 20;

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {  // splitmix64
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }

 private:
  uint64_t state_;
};

constexpr std::string_view kUpperAZ = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
constexpr std::string_view kLowerAZ = "abcdefghijklmnopqrstuvwxyz";
constexpr std::string_view kDigits = "0123456789";

std::optional<std::string> alphabet(std::string_view name) {
  std::string up(kUpperAZ), lo(kLowerAZ), dg(kDigits);
  if (name == "b62") return up + lo + dg;
  if (name == "b64") return up + lo + dg + "+/";
  if (name == "b64url") return up + lo + dg + "_-";
  if (name == "hex") return "0123456789abcdef";
  if (name == "HEX") return "0123456789ABCDEF";
  if (name == "dig") return dg;
  if (name == "B32") return up + "234567";
  if (name == "UD") return up + dg;
  if (name == "alpha") return up + lo;
  if (name == "lower") return lo;
  if (name == "upper") return up;
  if (name == "pw") return up + lo + dg + "-_.!*+~%=";
  return std::nullopt;
}

bool has_any(std::string_view s, std::string_view set) { return s.find_first_of(set) != std::string_view::npos; }

std::string generate(std::string_view abc, size_t n, Rng& rng) {
  std::string out;
  for (size_t k = 0; k < n; ++k) out += abc[rng.below(abc.size())];
  if (n >= 12) {
    // Obviously fake, in a case the alphabet has.
    for (std::string_view fake : {"FAKE", "fake", "Fake"}) {
      if (fake.find_first_not_of(abc) == std::string_view::npos) {
        out.replace(0, 4, fake);
        break;
      }
    }
  }
  if (n >= 8) {
    // Enough character variety for the rules that ask for it (digits, both cases).
    size_t slot = n - 1;
    auto ensure = [&](std::string_view cls) {
      if (!has_any(abc, cls) || has_any(out, cls)) return;
      out[slot--] = cls[rng.below(cls.size())];
    };
    ensure(kDigits);
    ensure(kUpperAZ);
    ensure(kLowerAZ);
  }
  return out;
}

std::string base64url(std::string_view in) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += abc[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += abc[(acc << (6 - bits)) & 63];
  return out;
}

std::optional<size_t> parse_count(std::string_view s, size_t max) {
  if (s.empty() || s.size() > 5) return std::nullopt;
  size_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  if (n == 0 || n > max) return std::nullopt;
  return n;
}

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Expanded expand_template(std::string_view tmpl, uint64_t seed, bool escapes) {
  uint64_t h = seed ^ 0xcbf29ce484222325ULL;
  for (char c : tmpl) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  Rng rng(h);
  Expanded out;
  std::optional<size_t> region;  // where the open secret region starts in out.text
  const std::string newline = escapes ? "\n" : "\\n";

  auto filler = [&](std::string s) {
    if (region && s.size() >= 8) out.fillers.push_back(s);
    out.text += s;
  };

  size_t i = 0;
  while (i < tmpl.size() && out.text.size() < kMaxOutput) {
    std::string_view rest = tmpl.substr(i);
    if (rest.substr(0, 2) == "{!" && !region) {
      region = out.text.size();
      i += 2;
      continue;
    }
    if (rest.substr(0, 2) == "!}" && region) {
      out.secrets.push_back(out.text.substr(*region));
      region.reset();
      i += 2;
      continue;
    }
    if (escapes && rest[0] == '\\' && rest.size() >= 2) {
      char e = rest[1];
      const char* simple = nullptr;
      switch (e) {
        case 'n': simple = "\n"; break;
        case 'r': simple = "\r"; break;
        case 't': simple = "\t"; break;
        case '\\': simple = "\\"; break;
        case '{': simple = "{"; break;
        default: break;
      }
      if (simple) {
        out.text += simple;
        i += 2;
        continue;
      }
      if (e == '0') {
        out.text += '\0';
        i += 2;
        continue;
      }
      if (e == 'x' && rest.size() >= 4 && hexval(rest[2]) >= 0 && hexval(rest[3]) >= 0) {
        out.text += static_cast<char>(hexval(rest[2]) * 16 + hexval(rest[3]));
        i += 4;
        continue;
      }
    }
    if (rest[0] == '{') {
      if (rest.substr(0, 5) == "{jwt}") {
        std::string header = base64url(R"({"alg":"HS256","typ":"JWT"})");
        std::string payload = base64url(R"({"sub":"fake-user-)" + generate(kDigits, 6, rng) + R"(","iat":1700000000})");
        filler(header + "." + payload + "." + generate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", 43, rng));
        i += 5;
        continue;
      }
      if (rest.substr(0, 6) == "{b64u|") {
        size_t end = rest.find("|}", 6);
        if (end != std::string_view::npos) {
          out.text += base64url(rest.substr(6, end - 6));
          i += end + 2;
          continue;
        }
      }
      if (rest.substr(0, 5) == "{pem:") {
        size_t colon = rest.find(':', 5);
        size_t close = rest.find('}', 5);
        if (colon != std::string_view::npos && close != std::string_view::npos && colon < close) {
          std::string_view label = rest.substr(5, colon - 5);
          auto lines = parse_count(rest.substr(colon + 1, close - colon - 1), kMaxPemLines);
          if (lines && label.size() <= 64) {
            std::string b64 = *alphabet("b64");
            out.text += "-----BEGIN " + std::string(label) + "-----" + newline;
            for (size_t k = 0; k < *lines; ++k) {
              filler(generate(b64, k + 1 == *lines ? 44 : 64, rng));
              out.text += newline;
            }
            out.text += "-----END " + std::string(label) + "-----";
            i += close + 1;
            continue;
          }
        }
      }
      size_t colon = rest.find(':');
      size_t close = rest.find('}');
      if (colon != std::string_view::npos && close != std::string_view::npos && colon < close && close < 24) {
        auto abc = alphabet(rest.substr(1, colon - 1));
        auto n = parse_count(rest.substr(colon + 1, close - colon - 1), kMaxRun);
        if (abc && n) {
          filler(generate(*abc, *n, rng));
          i += close + 1;
          continue;
        }
      }
    }
    out.text += rest[0];
    ++i;
  }
  if (region) out.secrets.push_back(out.text.substr(*region));
  return out;
}

}  // namespace km::audit::testing
