// Fuzz target: km/meter/sse.h on untrusted bytes, with the properties the meter relies on:
//   - the events (name, data, id), the error state and finish()'s answer do not depend on how
//     the bytes were split into feeds, including empty feeds and one byte at a time;
//   - memory held never exceeds the event size limit, and a failed parser stays failed.
// Any crash, sanitizer report or abort is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "km/meter/sse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using km::fuzz::die;
using km::fuzz::Rng;

using km::meter::SseEvent;
using km::meter::SseParser;

struct Outcome {
  std::vector<SseEvent> events;
  bool failed = false;
  bool open_at_end = false;
};

bool same(const Outcome& a, const Outcome& b) {
  if (a.failed != b.failed || a.events.size() != b.events.size()) return false;
  if (!a.failed && a.open_at_end != b.open_at_end) return false;
  for (size_t i = 0; i < a.events.size(); ++i) {
    if (a.events[i].event != b.events[i].event || a.events[i].data != b.events[i].data ||
        a.events[i].id != b.events[i].id) {
      return false;
    }
  }
  return true;
}

// mode 0: whole; 1: one byte at a time; 2: random splits with empty feeds.
Outcome run(std::string_view in, size_t limit, int mode, Rng& rng) {
  SseParser p(limit);
  Outcome o;
  size_t pos = 0;
  while (pos < in.size() || (mode == 0 && pos == 0)) {
    size_t n = mode == 0 ? in.size() : mode == 1 ? 1 : std::min(in.size() - pos, rng.below(3) == 0 ? rng.below(40) : rng.below(4));
    auto s = p.feed(in.substr(pos, n), o.events);
    if (p.buffered() > limit) die("buffered more than the event size limit");
    if (!s) {
      o.failed = true;
      if (!p.failed()) die("feed failed but the parser is not failed");
      if (p.feed("data: x\n\n", o.events)) die("a failed parser accepted more input");
      break;
    }
    pos += n;
    if (mode == 0) break;
  }
  if (!o.failed) o.open_at_end = p.finish();
  for (const auto& ev : o.events) {
    if (ev.event.empty()) die("event with an empty name");
    if (ev.data.size() > limit || ev.event.size() > limit) die("event larger than the limit");
    if (ev.event.find_first_of("\r\n") != std::string::npos) die("line break in an event name");
    if (ev.id.find('\0') != std::string::npos) die("NUL in an event id");
  }
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  Rng rng(in);
  for (size_t limit : {size_t{64}, km::meter::kMaxSseEventSize}) {
    Outcome whole = run(in, limit, 0, rng);
    if (!same(whole, run(in, limit, 1, rng))) die("byte-at-a-time differs from whole");
    if (!same(whole, run(in, limit, 2, rng))) die("random splits differ from whole");
  }
  return 0;
}
