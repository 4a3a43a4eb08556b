#include "km/store/trail.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include <nlohmann/json.hpp>

namespace km::store {

namespace {

using Json = nlohmann::json;

constexpr size_t kReadChunk = 256 * 1024;
// No stored line comes near this; a larger one is damage, and reading stops rather than
// exhausting memory on it.
constexpr size_t kMaxStoredLine = 64u << 20;

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(Error::from_errno("write"));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return ok();
}

Status mkdirs(const std::string& dir, mode_t mode) {
  if (::mkdir(dir.c_str(), mode) == 0 || errno == EEXIST) return ok();
  if (errno != ENOENT) return fail(Error::from_errno("mkdir " + dir));
  size_t slash = dir.rfind('/');
  if (slash == std::string::npos || slash == 0) return fail(Error::from_errno("mkdir " + dir));
  KM_TRY(mkdirs(dir.substr(0, slash), 0711));
  if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) return fail(Error::from_errno("mkdir " + dir));
  return ok();
}

// Reads a plain or gzip file (zlib reads plain files through unchanged) chunk by chunk.
class FileReader {
 public:
  static Result<FileReader> open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return fail(Error::from_errno("open " + path));
    gzFile gz = gzdopen(fd, "rb");
    if (!gz) {
      ::close(fd);
      return fail(ErrorCode::kInternal, "gzdopen " + path);
    }
    gzbuffer(gz, kReadChunk);
    return FileReader(gz, path);
  }
  FileReader(FileReader&& o) noexcept : gz_(std::exchange(o.gz_, nullptr)), path_(std::move(o.path_)) {}
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;
  FileReader& operator=(FileReader&&) = delete;
  ~FileReader() {
    if (gz_) gzclose(gz_);
  }
  // Bytes read into buf (0 at the end).
  Result<size_t> read(char* buf, size_t n) {
    int got = gzread(gz_, buf, static_cast<unsigned>(n));
    if (got < 0) {
      int err = 0;
      const char* msg = gzerror(gz_, &err);
      return fail(ErrorCode::kFailedPrecondition, "reading " + path_ + ": " + (msg ? msg : "error"));
    }
    return static_cast<size_t>(got);
  }

 private:
  FileReader(gzFile gz, std::string path) : gz_(gz), path_(std::move(path)) {}
  gzFile gz_;
  std::string path_;
};

std::string file_path(const std::string& dir, uint32_t n, bool compressed) { return dir + "/" + trail_file_name(n, compressed); }

}  // namespace

std::string trail_file_name(uint32_t number, bool compressed) {
  return "events-" + std::to_string(number) + (compressed ? ".jsonl.gz" : ".jsonl");
}

std::vector<TrailFile> trail_files(const std::string& dir) {
  std::map<uint32_t, TrailFile> by_number;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return {};
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name.rfind("events-", 0) != 0) continue;
    std::string_view rest = name.substr(7);
    size_t digits = 0;
    while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
    if (digits == 0 || digits > 9 || rest[0] == '0') continue;
    std::string_view suffix = rest.substr(digits);
    bool gz = suffix == ".jsonl.gz";
    if (!gz && suffix != ".jsonl") continue;
    uint32_t n = static_cast<uint32_t>(std::stoul(std::string(rest.substr(0, digits))));
    auto it = by_number.find(n);
    if (it != by_number.end() && !it->second.compressed) continue;  // plain wins
    by_number[n] = TrailFile{n, dir + "/" + std::string(name), gz};
  }
  ::closedir(d);
  std::vector<TrailFile> out;
  for (auto& [n, f] : by_number) out.push_back(std::move(f));
  return out;
}

namespace {
// A plain file listed a moment ago may have been compressed since (the compressor writes the
// .gz, then unlinks the plain file): its .gz is the same lines at the same offsets.
TrailFile settled(const TrailFile& f) {
  if (f.compressed || ::access(f.path.c_str(), F_OK) == 0 || errno != ENOENT) return f;
  TrailFile gz{f.number, f.path + ".gz", true};
  return ::access(gz.path.c_str(), F_OK) == 0 ? gz : f;
}
}  // namespace

Status scan_trail_file(const TrailFile& listed, const TrailLineSink& line) {
  TrailFile file = settled(listed);
  KM_ASSIGN_OR_RETURN(FileReader r, FileReader::open(file.path));
  std::string carry;
  std::string buf(kReadChunk, '\0');
  uint64_t line_start = 0;  // offset of the line being read
  for (;;) {
    KM_ASSIGN_OR_RETURN(size_t n, r.read(buf.data(), buf.size()));
    if (n == 0) return ok();  // a last line without its newline is still being written
    std::string_view data(buf.data(), n);
    while (!data.empty()) {
      size_t nl = data.find('\n');
      if (nl == std::string_view::npos) {
        carry.append(data);
        if (carry.size() > kMaxStoredLine) {
          return fail(ErrorCode::kFailedPrecondition, file.path + ": the line at offset " + std::to_string(line_start) + " is longer than " +
                                                std::to_string(kMaxStoredLine >> 20) + " MiB");
        }
        break;
      }
      bool go;
      size_t length;
      if (carry.empty()) {
        length = nl;
        go = line(file, line_start, data.substr(0, nl));
      } else {
        carry.append(data.substr(0, nl));
        length = carry.size();
        go = line(file, line_start, carry);
        carry.clear();
      }
      if (!go) return ok();
      line_start += length + 1;
      data.remove_prefix(nl + 1);
    }
  }
}

Status scan_trail(const std::string& dir, const TrailLineSink& line) {
  bool go = true;
  for (const TrailFile& f : trail_files(dir)) {
    KM_TRY(scan_trail_file(f, [&](const TrailFile& file, uint64_t offset, std::string_view text) {
      go = line(file, offset, text);
      return go;
    }));
    if (!go) break;
  }
  return ok();
}

Result<std::vector<std::string>> read_trail_lines(const std::string& dir, const std::vector<TrailPosition>& positions) {
  std::vector<std::string> out(positions.size());
  // Per file, the wanted positions by offset.
  std::map<uint32_t, std::vector<size_t>> by_file;
  for (size_t i = 0; i < positions.size(); ++i) by_file[positions[i].file].push_back(i);
  std::map<uint32_t, TrailFile> files;
  for (auto& f : trail_files(dir)) files[f.number] = f;
  for (auto& [number, wanted] : by_file) {
    auto it = files.find(number);
    if (it == files.end()) return fail(ErrorCode::kFailedPrecondition, dir + ": " + trail_file_name(number, false) + " is missing");
    const TrailFile f = settled(it->second);
    std::sort(wanted.begin(), wanted.end(), [&](size_t a, size_t b) { return positions[a].offset < positions[b].offset; });
    if (!f.compressed) {
      UniqueFd fd(::open(f.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
      if (!fd) return fail(Error::from_errno("open " + f.path));
      // Lines close together are read with one pread (a query's events are mostly neighbours).
      for (size_t i = 0; i < wanted.size();) {
        uint64_t from = positions[wanted[i]].offset, to = from + positions[wanted[i]].length;
        size_t j = i + 1;
        while (j < wanted.size() && positions[wanted[j]].offset <= to + 65536 &&
               positions[wanted[j]].offset + positions[wanted[j]].length - from <= (4u << 20)) {
          to = std::max<uint64_t>(to, positions[wanted[j]].offset + positions[wanted[j]].length);
          ++j;
        }
        std::string chunk(to - from, '\0');
        size_t got = 0;
        while (got < chunk.size()) {
          ssize_t n = ::pread(fd.get(), chunk.data() + got, chunk.size() - got, static_cast<off_t>(from + got));
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) return fail(ErrorCode::kFailedPrecondition, f.path + ": no line at offset " + std::to_string(from + got));
          got += static_cast<size_t>(n);
        }
        for (; i < j; ++i) {
          const TrailPosition& p = positions[wanted[i]];
          out[wanted[i]] = chunk.substr(p.offset - from, p.length);
        }
      }
      continue;
    }
    size_t next = 0;
    KM_TRY(scan_trail_file(f, [&](const TrailFile&, uint64_t offset, std::string_view text) {
      while (next < wanted.size() && positions[wanted[next]].offset < offset) ++next;  // not a line start: left empty
      while (next < wanted.size() && positions[wanted[next]].offset == offset) out[wanted[next++]] = std::string(text);
      return next < wanted.size();
    }));
  }
  return out;
}

Status compress_trail_file(const std::string& path) {
  std::string gz_path = path + ".gz", tmp = gz_path + ".tmp";
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!in) return fail(Error::from_errno("open " + path));
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!out) return fail(Error::from_errno("open " + tmp));
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return fail(ErrorCode::kInternal, "deflateInit2");
  std::string ibuf(kReadChunk, '\0'), obuf(kReadChunk, '\0');
  Status st = ok();
  for (bool done = false; !done && st;) {
    ssize_t n = ::read(in.get(), ibuf.data(), ibuf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = fail(Error::from_errno("read " + path));
      break;
    }
    done = n == 0;
    z.next_in = reinterpret_cast<Bytef*>(ibuf.data());
    z.avail_in = static_cast<uInt>(n);
    do {
      z.next_out = reinterpret_cast<Bytef*>(obuf.data());
      z.avail_out = static_cast<uInt>(obuf.size());
      int rc = deflate(&z, done ? Z_FINISH : Z_NO_FLUSH);
      if (rc == Z_STREAM_ERROR) {
        st = fail(ErrorCode::kInternal, "deflate " + path);
        break;
      }
      st = write_all(out.get(), std::string_view(obuf.data(), obuf.size() - z.avail_out));
    } while (st && z.avail_out == 0);
  }
  deflateEnd(&z);
  if (st && ::fsync(out.get()) != 0) st = fail(Error::from_errno("fsync " + tmp));
  if (st && ::rename(tmp.c_str(), gz_path.c_str()) != 0) st = fail(Error::from_errno("rename " + tmp));
  if (!st) {
    ::unlink(tmp.c_str());
    return st;
  }
  if (::unlink(path.c_str()) != 0) return fail(Error::from_errno("unlink " + path));
  return ok();
}

Status TrailWriter::open_file(uint32_t number) {
  std::string path = file_path(dir_, number, false);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return fail(Error::from_errno("open " + path));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(Error::from_errno("stat " + path));
  fd_ = std::move(fd);
  number_ = number;
  size_ = static_cast<uint64_t>(st.st_size);
  return ok();
}

Result<std::unique_ptr<TrailWriter>> TrailWriter::open(const std::string& dir, const std::string& sandbox, Options options) {
  KM_TRY(mkdirs(dir, 0700));
  // Leftovers of a compression that was interrupted.
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> tmp;
    while (dirent* e = ::readdir(d)) {
      std::string_view name = e->d_name;
      if (name.rfind("events-", 0) == 0 && name.size() > 4 && name.substr(name.size() - 4) == ".tmp") tmp.emplace_back(name);
    }
    ::closedir(d);
    for (const auto& t : tmp) ::unlink((dir + "/" + t).c_str());
  }
  std::vector<TrailFile> files = trail_files(dir);
  std::unique_ptr<TrailWriter> w(new TrailWriter(dir, audit::Chain(sandbox), options));
  // The newest file that holds an event gives the head. Reading stops at the first damage; what
  // follows it is left for `km logs --verify` to report.
  uint64_t seq = 0;
  std::string hash;
  for (size_t i = files.size(); i-- > 0 && seq == 0;) {
    Status st = scan_trail_file(files[i], [&](const TrailFile&, uint64_t, std::string_view text) {
      Json j = Json::parse(text, nullptr, false);
      if (j.is_object() && j.contains("seq") && j["seq"].is_number_unsigned() && j.contains("hash") && j["hash"].is_string()) {
        seq = j["seq"].get<uint64_t>();
        hash = j["hash"].get<std::string>();
      }
      return true;
    });
    if (!st) return fail(std::move(st).error().wrap("opening the audit trail in " + dir));
  }
  w->chain_ = audit::Chain(sandbox, seq, hash);
  uint32_t newest = files.empty() ? 1 : files.back().number;
  if (!files.empty() && files.back().compressed) ++newest;  // rotated and compressed: start the next
  for (const TrailFile& f : files) {
    if (!f.compressed && f.number != newest) w->rotated_.push_back(f.path);
  }
  KM_TRY(w->open_file(newest));
  // A last line without its newline was torn by a crash: cut it off.
  if (w->size_ > 0) {
    char last = 0;
    if (::pread(w->fd_.get(), &last, 1, static_cast<off_t>(w->size_ - 1)) == 1 && last != '\n') {
      uint64_t keep = 0;
      KM_TRY(scan_trail_file(TrailFile{newest, file_path(dir, newest, false), false},
                             [&](const TrailFile&, uint64_t offset, std::string_view text) {
                               keep = offset + text.size() + 1;
                               return true;
                             }));
      if (::ftruncate(w->fd_.get(), static_cast<off_t>(keep)) != 0) return fail(Error::from_errno("truncating a torn line"));
      w->recovery_ = "cut off a torn last line of " + std::to_string(w->size_ - keep) + " bytes in " + trail_file_name(newest, false);
      w->size_ = keep;
    }
  }
  return w;
}

Result<std::vector<TrailWriter::Appended>> TrailWriter::append(const std::vector<audit::Event>& events) {
  std::vector<Appended> out;
  if (events.empty()) return out;
  if (size_ >= options_.rotate_bytes) {
    // The full file is synced before it is handed to compression; the next one starts empty.
    (void)::fsync(fd_.get());
    std::string full = file_path(dir_, number_, false);
    KM_TRY(open_file(number_ + 1));
    rotated_.push_back(full);
  }
  audit::Chain before = chain_;
  std::string text;
  out.reserve(events.size());
  for (const audit::Event& e : events) {
    audit::Chain::Sealed s = chain_.seal(e);
    out.push_back(Appended{s.seq, std::move(s.hash), TrailPosition{number_, size_ + text.size(), static_cast<uint32_t>(s.line.size())}});
    text += s.line;
    text += '\n';
  }
  if (Status st = write_all(fd_.get(), text); !st) {
    // Nothing half-written stays: the file is cut back and the chain rewound.
    (void)!::ftruncate(fd_.get(), static_cast<off_t>(size_));
    chain_ = before;
    return fail(std::move(st).error().wrap("appending to the audit trail " + file_path(dir_, number_, false)));
  }
  size_ += text.size();
  return out;
}

std::vector<std::string> TrailWriter::take_rotated() { return std::exchange(rotated_, {}); }

Status TrailWriter::move_to(const std::string& to) {
  if (to == dir_) return ok();
  KM_TRY(mkdirs(to, 0700));
  // Every file moves or none does: when a rename fails, those already moved are put back and the
  // trail goes on where it was, whole and writable. The open file's descriptor follows its file.
  std::vector<std::pair<std::string, std::string>> moved;  // (from, to)
  for (const TrailFile& f : trail_files(dir_)) {
    std::string dest = to + f.path.substr(f.path.rfind('/'));
    if (::rename(f.path.c_str(), dest.c_str()) != 0) {
      Error e = Error::from_errno("moving " + f.path + " to " + to);
      size_t stuck = 0;
      for (auto it = moved.rbegin(); it != moved.rend(); ++it) {
        if (::rename(it->second.c_str(), it->first.c_str()) != 0) ++stuck;
      }
      if (stuck > 0) e.wrap(std::to_string(stuck) + " moved files could not be put back in " + dir_);
      return fail(std::move(e));
    }
    moved.emplace_back(f.path, dest);
  }
  std::vector<std::string> moved_rotated;
  for (const std::string& r : rotated_) moved_rotated.push_back(to + r.substr(r.rfind('/')));
  rotated_ = std::move(moved_rotated);
  dir_ = to;
  (void)open_file(number_);  // if this fails, the descriptor already open writes to the moved file
  return ok();
}

}  // namespace km::store
