#include "km/meter/test_payloads.h"

#include <brotli/encode.h>
#include <zlib.h>
#include <zstd.h>


#include "km/base/check.h"
#include "km/meter/event_stream.h"

namespace km::meter::testing {

std::string deflate_compress(std::string_view data, Wrap wrap, int level) {
  z_stream zs{};
  int bits = wrap == Wrap::kGzip ? 15 + 16 : wrap == Wrap::kZlib ? 15 : -15;
  KM_CHECK(deflateInit2(&zs, level, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&zs, data.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  KM_CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string brotli_compress(std::string_view data, int quality) {
  size_t size = BrotliEncoderMaxCompressedSize(data.size());
  if (size == 0) size = data.size() + 1024;
  std::string out(size, '\0');
  KM_CHECK(BrotliEncoderCompress(quality, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, data.size(),
                                 reinterpret_cast<const uint8_t*>(data.data()), &size,
                                 reinterpret_cast<uint8_t*>(out.data())));
  out.resize(size);
  return out;
}

std::string zstd_compress(std::string_view data, int level) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  KM_CHECK(!ZSTD_isError(n));
  out.resize(n);
  return out;
}

std::string encode_as(std::string_view coding, std::string_view data) {
  if (coding == "gzip" || coding == "x-gzip") return deflate_compress(data, Wrap::kGzip);
  if (coding == "deflate") return deflate_compress(data, Wrap::kZlib);
  if (coding == "br") return brotli_compress(data);
  if (coding == "zstd") return zstd_compress(data);
  if (coding == "identity" || coding.empty()) return std::string(data);
  KM_CHECK(false && "unknown content coding");
  return {};
}

std::string base64_encode(std::string_view data) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (uint32_t{static_cast<unsigned char>(data[i])} << 16) |
                 (uint32_t{static_cast<unsigned char>(data[i + 1])} << 8) | static_cast<unsigned char>(data[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  size_t rest = data.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t{static_cast<unsigned char>(data[i])} << 16;
    if (rest == 2) v |= uint32_t{static_cast<unsigned char>(data[i + 1])} << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string sse(std::string_view name, std::string_view data) {
  std::string out;
  if (!name.empty()) {
    out += "event: ";
    out += name;
    out += '\n';
  }
  out += "data: ";
  out += data;
  out += "\n\n";
  return out;
}

namespace {

EventStreamHeader string_header(std::string name, std::string value) {
  EventStreamHeader h;
  h.name = std::move(name);
  h.type = HeaderType::kString;
  h.bytes = std::move(value);
  return h;
}

}  // namespace

std::string bedrock_event(std::string_view event_type, std::string_view payload_json) {
  EventStreamMessage m;
  m.headers.push_back(string_header(":event-type", std::string(event_type)));
  m.headers.push_back(string_header(":content-type", "application/json"));
  m.headers.push_back(string_header(":message-type", "event"));
  m.payload = payload_json;
  return encode_event_stream_message(m);
}

std::string bedrock_chunk(std::string_view event_json) {
  // Bedrock pads payloads with a "p" field of varying length to hide their size.
  std::string payload = "{\"bytes\":\"" + base64_encode(event_json) + "\",\"p\":\"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ\"}";
  return bedrock_event("chunk", payload);
}

std::string bedrock_exception(std::string_view exception_type, std::string_view message) {
  EventStreamMessage m;
  m.headers.push_back(string_header(":exception-type", std::string(exception_type)));
  m.headers.push_back(string_header(":content-type", "application/json"));
  m.headers.push_back(string_header(":message-type", "exception"));
  m.payload = "{\"message\":\"" + std::string(message) + "\"}";
  return encode_event_stream_message(m);
}

}  // namespace km::meter::testing
