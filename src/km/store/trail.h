// A sandbox's audit trail on disk: append-only NDJSON of sealed km::audit events (one chain per
// sandbox), in numbered files that rotate at a size and are then compressed:
//
//   <dir>/events-1.jsonl.gz  events-2.jsonl.gz  ...  events-<n>.jsonl   (the one being written)
//
// A rotated file is compressed (gzip) by whoever calls take_rotated() and compress_trail_file(),
// off the write path; until then it stays plain, and readers take either form. Positions
// (file number, byte offset and length of a line) are in the uncompressed text, so an index of
// them stays valid after compression.
//
// Durability: lines are written with one write(2) per batch and no fsync per event (a batch of
// thousands of events costs one system call); a crash of the host can lose the newest lines, and
// a line torn by it is cut off when the trail is next opened (open() says so in recovery()).
// Files are created 0600.
//
// Thread-safety: a TrailWriter is used by one thread at a time. The free functions read files
// and may run concurrently with a writer (they see a prefix of what it writes).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "km/audit/event.h"
#include "km/base/result.h"
#include "km/base/unique_fd.h"

namespace km::store {

struct TrailFile {
  uint32_t number = 0;
  std::string path;
  bool compressed = false;
};

// The trail's files, by number. A number found both plain and compressed (a compression that
// was under way) is listed plain.
std::vector<TrailFile> trail_files(const std::string& dir);
std::string trail_file_name(uint32_t number, bool compressed);

struct TrailPosition {
  uint32_t file = 0;
  uint64_t offset = 0;
  uint32_t length = 0;  // without the newline
};

class TrailWriter {
 public:
  struct Options {
    uint64_t rotate_bytes = uint64_t{16} << 20;
  };

  // Opens the trail in `dir` (made, 0700, if missing) and finds its head (the last event's seq
  // and hash) in the newest file that has one. A torn last line is cut off; plain files other
  // than the newest are queued for compression; leftovers of an interrupted compression are
  // removed.
  static Result<std::unique_ptr<TrailWriter>> open(const std::string& dir, const std::string& sandbox, Options options);
  static Result<std::unique_ptr<TrailWriter>> open(const std::string& dir, const std::string& sandbox) {
    return open(dir, sandbox, Options{});
  }
  ~TrailWriter() = default;

  struct Appended {
    uint64_t seq = 0;
    std::string hash;
    TrailPosition at;
  };
  // Seals the events (next seqs, chained) and appends them with one write, rotating first if
  // the current file has reached the rotation size. If the write fails, the file is cut back to
  // where it was and the chain is unchanged: nothing was appended.
  Result<std::vector<Appended>> append(const std::vector<audit::Event>& events);

  // Rotated files (paths) not yet handed out for compression.
  std::vector<std::string> take_rotated();

  // Moves every file of the trail to `to` (made if missing; a rename, so the same filesystem)
  // and goes on writing there. All or nothing: on failure the files are where they were and
  // the writer goes on writing there.
  Status move_to(const std::string& to);

  const std::string& dir() const { return dir_; }
  const audit::Chain& chain() const { return chain_; }
  uint32_t file_number() const { return number_; }
  uint64_t file_size() const { return size_; }
  // What open() repaired ("" when nothing), for the trail's own record.
  const std::string& recovery() const { return recovery_; }

 private:
  TrailWriter(std::string dir, audit::Chain chain, Options o) : dir_(std::move(dir)), chain_(std::move(chain)), options_(o) {}
  Status open_file(uint32_t number);
  std::string dir_;
  audit::Chain chain_;
  Options options_;
  uint32_t number_ = 0;
  uint64_t size_ = 0;
  UniqueFd fd_;
  std::vector<std::string> rotated_;
  std::string recovery_;
};

// Compresses a rotated file: <path>.gz is written (through a temporary, synced, renamed) and
// <path> removed.
Status compress_trail_file(const std::string& path);

// Every line of the trail, in order: the file, the line's offset in the file's uncompressed
// text, and the line without its newline. Stops when `line` returns false.
using TrailLineSink = std::function<bool(const TrailFile& file, uint64_t offset, std::string_view line)>;
Status scan_trail(const std::string& dir, const TrailLineSink& line);
// The same over one file.
Status scan_trail_file(const TrailFile& file, const TrailLineSink& line);

// The lines at `positions`, in the order given (each file is read, or decompressed, once).
Result<std::vector<std::string>> read_trail_lines(const std::string& dir, const std::vector<TrailPosition>& positions);

}  // namespace km::store
