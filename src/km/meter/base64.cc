#include "km/meter/base64.h"

#include <array>
#include <cstdint>

namespace km::meter {

namespace {

constexpr std::array<signed char, 256> make_table() {
  std::array<signed char, 256> t{};
  for (auto& v : t) v = -1;
  constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < kAlphabet.size(); ++i) t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<signed char>(i);
  return t;
}

constexpr std::array<signed char, 256> kTable = make_table();

}  // namespace

bool base64_decode(std::string_view in, std::string& out) {
  out.clear();
  size_t pad = 0;
  while (pad < 2 && !in.empty() && in.back() == '=') {
    in.remove_suffix(1);
    ++pad;
  }
  size_t rem = in.size() % 4;
  if (rem == 1) return false;
  if (pad > 0 && (rem == 0 || 4 - rem != pad)) return false;
  out.reserve(in.size() / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = kTable[static_cast<unsigned char>(c)];
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  // Leftover bits (2 or 4) must be zero in canonical encoding.
  return (acc & ((1u << bits) - 1)) == 0;
}

}  // namespace km::meter
