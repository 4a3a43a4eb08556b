#include "km/meter/content_decoding.h"

#include <brotli/decode.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>

#include "km/base/strings.h"

namespace km::meter {

using Emit = std::function<Status(std::string_view)>;

// One content coding's decoder. feed() hands every byte it can produce to `emit` before it
// returns; finish() only checks that the stream ended.
class ContentDecoder::Stage {
 public:
  explicit Stage(uint64_t max_output) : max_output_(max_output), buf_(new char[kDecodeChunk]) {}
  virtual ~Stage() = default;
  virtual Status feed(std::string_view in, const Emit& emit) = 0;
  virtual Status finish() = 0;

 protected:
  // Passes on `n` bytes of buf_, enforcing the output cap.
  Status produce(size_t n, const Emit& emit, std::string_view coding) {
    if (n == 0) return ok();
    produced_ += n;
    if (produced_ > max_output_) {
      return fail(ErrorCode::kResourceExhausted,
                  std::string(coding) + " body decodes to more than " + std::to_string(max_output_) + " bytes");
    }
    return emit(std::string_view(buf_.get(), n));
  }

  uint64_t max_output_;
  uint64_t produced_ = 0;
  bool saw_input_ = false;
  std::unique_ptr<char[]> buf_;
};

namespace {

Unexpected<Error> corrupt(std::string_view coding, std::string_view what) {
  return fail(ErrorCode::kInvalidArgument, "corrupt " + std::string(coding) + " body: " + std::string(what));
}

// gzip, and deflate in either its zlib-wrapped (RFC 1950) or raw (RFC 1951) form.
class ZlibStage final : public ContentDecoder::Stage {
 public:
  ZlibStage(bool gzip, uint64_t max_output) : Stage(max_output), gzip_(gzip) {}
  ~ZlibStage() override {
    if (initialised_) inflateEnd(&zs_);
  }

  Status feed(std::string_view in, const Emit& emit) override {
    if (in.empty()) return ok();
    saw_input_ = true;
    if (!initialised_) {
      int window = 15 + 16;
      if (!gzip_) {
        // A zlib header is CMF FLG with CM = 8, CINFO <= 7 and (CMF*256 + FLG) % 31 == 0; raw
        // deflate data can look like one only by a coincidence the header check rules out
        // in practice. Two bytes are needed to tell.
        size_t take = std::min(2 - head_.size(), in.size());
        head_.append(in.substr(0, take));
        in.remove_prefix(take);
        if (head_.size() < 2) return ok();
        auto b0 = static_cast<unsigned char>(head_[0]), b1 = static_cast<unsigned char>(head_[1]);
        bool zlib_wrapped = (b0 & 0x0f) == 8 && (b0 >> 4) <= 7 && ((b0 << 8) | b1) % 31 == 0;
        window = zlib_wrapped ? 15 : -15;
      }
      if (inflateInit2(&zs_, window) != Z_OK) return fail(ErrorCode::kInternal, "inflateInit2 failed");
      initialised_ = true;
      if (!gzip_) {
        std::string head = std::move(head_);
        KM_TRY(inflate_all(head, emit));
      }
    }
    return inflate_all(in, emit);
  }

  Status finish() override {
    if (!saw_input_ || ended_) return ok();
    return fail(ErrorCode::kInvalidArgument, std::string(name()) + " body truncated");
  }

 private:
  std::string_view name() const { return gzip_ ? "gzip" : "deflate"; }

  Status inflate_all(std::string_view in, const Emit& emit) {
    if (in.empty()) return ok();
    if (ended_) {
      // Another gzip member may follow; anything else after the end is not part of the body.
      if (!gzip_) return corrupt(name(), "data after the end of the stream");
      if (inflateReset(&zs_) != Z_OK) return fail(ErrorCode::kInternal, "inflateReset failed");
      ended_ = false;
    }
    zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    zs_.avail_in = static_cast<uInt>(in.size());
    for (;;) {
      zs_.next_out = reinterpret_cast<Bytef*>(buf_.get());
      zs_.avail_out = static_cast<uInt>(kDecodeChunk);
      int r = inflate(&zs_, Z_NO_FLUSH);
      size_t produced = kDecodeChunk - zs_.avail_out;
      // Bytes decoded before a corrupt spot are passed on first, so what is read does not
      // depend on how the body was split.
      KM_TRY(produce(produced, emit, name()));
      if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) {
        return corrupt(name(), zs_.msg ? zs_.msg : "inflate failed");
      }
      if (r == Z_STREAM_END) {
        ended_ = true;
        if (zs_.avail_in == 0) return ok();
        if (!gzip_) return corrupt(name(), "data after the end of the stream");
        if (inflateReset(&zs_) != Z_OK) return fail(ErrorCode::kInternal, "inflateReset failed");
        ended_ = false;
        continue;
      }
      if (zs_.avail_in == 0 && zs_.avail_out != 0) return ok();
      if (r == Z_BUF_ERROR && produced == 0) return ok();  // no progress possible: needs input
    }
  }

  bool gzip_;
  bool initialised_ = false;
  bool ended_ = false;
  std::string head_;  // deflate: first bytes, until the wrapping is known
  z_stream zs_{};
};

class BrotliStage final : public ContentDecoder::Stage {
 public:
  explicit BrotliStage(uint64_t max_output)
      : Stage(max_output), state_(BrotliDecoderCreateInstance(nullptr, nullptr, nullptr)) {}
  ~BrotliStage() override {
    if (state_) BrotliDecoderDestroyInstance(state_);
  }

  Status feed(std::string_view in, const Emit& emit) override {
    if (in.empty()) return ok();
    saw_input_ = true;
    if (!state_) return fail(ErrorCode::kInternal, "brotli decoder could not be created");
    if (BrotliDecoderIsFinished(state_)) return corrupt("br", "data after the end of the stream");
    size_t avail_in = in.size();
    auto next_in = reinterpret_cast<const uint8_t*>(in.data());
    for (;;) {
      size_t avail_out = kDecodeChunk;
      auto next_out = reinterpret_cast<uint8_t*>(buf_.get());
      BrotliDecoderResult r =
          BrotliDecoderDecompressStream(state_, &avail_in, &next_in, &avail_out, &next_out, nullptr);
      KM_TRY(produce(kDecodeChunk - avail_out, emit, "br"));
      if (r == BROTLI_DECODER_RESULT_ERROR) {
        return corrupt("br", BrotliDecoderErrorString(BrotliDecoderGetErrorCode(state_)));
      }
      if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT) continue;
      if (r == BROTLI_DECODER_RESULT_SUCCESS && avail_in > 0) {
        return corrupt("br", "data after the end of the stream");
      }
      return ok();  // needs more input, or done
    }
  }

  Status finish() override {
    if (!saw_input_ || (state_ && BrotliDecoderIsFinished(state_))) return ok();
    return fail(ErrorCode::kInvalidArgument, "br body truncated");
  }

 private:
  BrotliDecoderState* state_;
};

class ZstdStage final : public ContentDecoder::Stage {
 public:
  // RFC 9659: HTTP zstd decoders need not accept windows over 8 MiB, and should not.
  static constexpr int kWindowLogMax = 23;

  explicit ZstdStage(uint64_t max_output) : Stage(max_output), ds_(ZSTD_createDStream()) {
    if (ds_) ZSTD_DCtx_setParameter(ds_, ZSTD_d_windowLogMax, kWindowLogMax);
  }
  ~ZstdStage() override {
    if (ds_) ZSTD_freeDStream(ds_);
  }

  Status feed(std::string_view in, const Emit& emit) override {
    if (in.empty()) return ok();
    saw_input_ = true;
    if (!ds_) return fail(ErrorCode::kInternal, "zstd decoder could not be created");
    ZSTD_inBuffer input{in.data(), in.size(), 0};
    for (;;) {
      ZSTD_outBuffer output{buf_.get(), kDecodeChunk, 0};
      size_t r = ZSTD_decompressStream(ds_, &output, &input);
      if (ZSTD_isError(r)) return corrupt("zstd", ZSTD_getErrorName(r));
      KM_TRY(produce(output.pos, emit, "zstd"));
      last_ = r;
      if (input.pos == input.size && output.pos < output.size) return ok();
    }
  }

  Status finish() override {
    if (!saw_input_ || last_ == 0) return ok();
    return fail(ErrorCode::kInvalidArgument, "zstd body truncated");
  }

 private:
  ZSTD_DStream* ds_;
  size_t last_ = 0;  // ZSTD_decompressStream's last hint: 0 once a frame is complete
};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

ContentDecoder::ContentDecoder(ContentDecoder&&) noexcept = default;
ContentDecoder& ContentDecoder::operator=(ContentDecoder&&) noexcept = default;
ContentDecoder::~ContentDecoder() = default;

Result<ContentDecoder> ContentDecoder::create(std::string_view content_encoding, uint64_t max_output) {
  ContentDecoder d;
  d.max_output_ = max_output;
  std::vector<std::string> codings;
  for (const std::string& part : split(content_encoding, ',')) {
    std::string c = to_lower(trim(part));
    if (c.empty() || c == "identity") continue;
    if (c != "gzip" && c != "x-gzip" && c != "deflate" && c != "br" && c != "zstd") {
      return fail(ErrorCode::kInvalidArgument, "unsupported content coding " + quoted(c, 40));
    }
    codings.push_back(std::move(c));
  }
  if (codings.size() > kMaxContentCodings) {
    return fail(ErrorCode::kInvalidArgument, "more than " + std::to_string(kMaxContentCodings) +
                                                 " content codings stacked");
  }
  // The last coding applied is the first to undo.
  for (auto it = codings.rbegin(); it != codings.rend(); ++it) {
    if (*it == "gzip" || *it == "x-gzip") {
      d.stages_.push_back(std::make_unique<ZlibStage>(true, max_output));
    } else if (*it == "deflate") {
      d.stages_.push_back(std::make_unique<ZlibStage>(false, max_output));
    } else if (*it == "br") {
      d.stages_.push_back(std::make_unique<BrotliStage>(max_output));
    } else {
      d.stages_.push_back(std::make_unique<ZstdStage>(max_output));
    }
  }
  return d;
}

Status ContentDecoder::run(size_t stage, std::string_view bytes, const Sink& sink) {
  if (stage == stages_.size()) {
    output_bytes_ += bytes.size();
    if (output_bytes_ > max_output_) {
      return fail(ErrorCode::kResourceExhausted,
                  "body decodes to more than " + std::to_string(max_output_) + " bytes");
    }
    if (!bytes.empty()) sink(bytes);
    return ok();
  }
  return stages_[stage]->feed(bytes, [&](std::string_view out) { return run(stage + 1, out, sink); });
}

Status ContentDecoder::feed(std::string_view bytes, const Sink& sink) {
  if (failed_) return fail(ErrorCode::kFailedPrecondition, "content decoder failed earlier");
  Status s = run(0, bytes, sink);
  if (!s) failed_ = true;
  return s;
}

Status ContentDecoder::finish() {
  if (failed_) return fail(ErrorCode::kFailedPrecondition, "content decoder failed earlier");
  for (auto& stage : stages_) {
    Status s = stage->finish();
    if (!s) {
      failed_ = true;
      return s;
    }
  }
  return ok();
}

}  // namespace km::meter
