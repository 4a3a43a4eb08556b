// Streaming decoders for HTTP content codings (RFC 9110 §8.4): gzip (and x-gzip), deflate
// (zlib-wrapped, or raw as some servers send it), br, zstd and identity, up to
// kMaxContentCodings of them stacked ("gzip, br" is decoded br first, then gzip).
//
// Bytes arrive in arbitrary fragments; output is handed to a sink in pieces of at most
// kDecodeChunk bytes as soon as it is produced. Memory is bounded per coding: zlib's 32 KiB
// window, brotli's window (at most 16 MiB), zstd frames with windows up to 8 MiB (RFC 9659's
// limit for HTTP; larger frames are refused), plus one output buffer. The total output of every
// stage is capped (max_output, 1 GiB by default), so a decompression bomb stops with an error.
//
// Errors (kInvalidArgument, or kResourceExhausted for the cap) name the coding and what was
// wrong, never the bytes; after one, the decoder stays failed. Gzip bodies may hold several
// members; other data after the end of a compressed stream is an error.
// Thread-safety: a single-owner state machine; no I/O.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"

namespace km::meter {

inline constexpr uint64_t kMaxDecodedBody = uint64_t{1} << 30;
inline constexpr size_t kMaxContentCodings = 2;
inline constexpr size_t kDecodeChunk = 64u << 10;

class ContentDecoder {
 public:
  using Sink = std::function<void(std::string_view)>;

  // `content_encoding`: the Content-Encoding field value (several header lines joined with
  // ','), codings in the order they were applied; "" and "identity" decode nothing. Error for
  // an unknown coding or more than kMaxContentCodings.
  static Result<ContentDecoder> create(std::string_view content_encoding,
                                       uint64_t max_output = kMaxDecodedBody);

  ContentDecoder(ContentDecoder&&) noexcept;
  ContentDecoder& operator=(ContentDecoder&&) noexcept;
  ~ContentDecoder();

  // Decodes the next bytes of the body; decoded bytes go to `sink`, possibly in several calls,
  // before feed returns.
  Status feed(std::string_view bytes, const Sink& sink);
  // The body ended: error when a compressed stream stopped before its end (truncated).
  Status finish();

  bool identity() const { return stages_.empty(); }
  bool failed() const { return failed_; }
  // Decoded bytes handed to sinks so far.
  uint64_t output_bytes() const { return output_bytes_; }

  class Stage;

 private:
  ContentDecoder() = default;
  Status run(size_t stage, std::string_view bytes, const Sink& sink);

  std::vector<std::unique_ptr<Stage>> stages_;  // in decoding order
  uint64_t max_output_ = kMaxDecodedBody;
  uint64_t output_bytes_ = 0;
  bool failed_ = false;
};

}  // namespace km::meter
