// What the fuzz targets share: how a broken property ends the run, and a small deterministic
// generator seeded from the input, so that a failing input replays the same feed splits.
#pragma once

#include <errno.h>  // program_invocation_short_name (glibc)

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>

namespace km::fuzz {

// Names the target (the binary) and what broke, then aborts: the fuzzer keeps the input.
[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, what);
  std::abort();
}

// xorshift64, seeded with FNV-1a over the seed bytes.
class Rng {
 public:
  explicit Rng(std::string_view seed) {
    for (char c : seed) state_ = (state_ ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  }
  explicit Rng(std::span<const uint8_t> seed) {
    for (uint8_t b : seed) state_ = (state_ ^ b) * 0x100000001b3ULL;
  }
  uint64_t next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(next() % n); }

 private:
  uint64_t state_ = 0xcbf29ce484222325ULL;
};

}  // namespace km::fuzz
