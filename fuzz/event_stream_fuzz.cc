// Fuzz target: km/meter/event_stream.h on untrusted bytes, with the properties the meter
// relies on:
//   - decoding is lossless: every decoded message re-encodes to exactly the bytes it came from;
//   - messages, the error state and mid_message() do not depend on how the bytes were split;
//   - a failed decoder stays failed, and nothing over the size limit is ever returned.
// Any crash, sanitizer report or abort is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "km/meter/event_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;
using km::fuzz::Rng;

using km::meter::EventStreamDecoder;
using km::meter::EventStreamMessage;

struct Outcome {
  std::vector<std::string> encoded;  // each message re-encoded
  bool failed = false;
  bool mid = false;
};

Outcome run(std::string_view in, size_t limit, int mode, Rng& rng) {
  EventStreamDecoder d(limit);
  Outcome o;
  std::vector<EventStreamMessage> msgs;
  size_t pos = 0;
  do {
    size_t n = mode == 0 ? in.size() : mode == 1 ? 1 : std::min(in.size() - pos, rng.below(2) ? rng.below(64) : rng.below(5));
    auto s = d.feed(in.substr(pos, n), msgs);
    if (!s) {
      o.failed = true;
      if (!d.failed()) die("feed failed but the decoder is not failed");
      break;
    }
    pos += n;
  } while (pos < in.size());
  if (!o.failed) o.mid = d.mid_message();
  if (o.failed) {
    std::vector<EventStreamMessage> more;
    if (d.feed(in, more) || !more.empty()) die("a failed decoder decoded more");
  }
  for (const auto& m : msgs) {
    std::string e = km::meter::encode_event_stream_message(m);
    if (e.size() > limit) die("message over the size limit returned");
    o.encoded.push_back(std::move(e));
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  Rng rng(in);
  for (size_t limit : {size_t{256}, km::meter::kMaxEventStreamMessage}) {
    Outcome whole = run(in, limit, 0, rng);
    // Lossless: the messages are the input's prefix, byte for byte.
    size_t off = 0;
    for (const auto& e : whole.encoded) {
      if (in.substr(off, e.size()) != e) die("a decoded message does not re-encode to its bytes");
      off += e.size();
    }
    if (!whole.failed && !whole.mid && off != in.size()) die("bytes left over without mid_message()");
    for (int mode : {1, 2}) {
      Outcome split = run(in, limit, mode, rng);
      if (split.failed != whole.failed || split.mid != whole.mid || split.encoded != whole.encoded) {
        die("decoding depends on how the bytes were split");
      }
    }
  }
  return 0;
}
