// The parts of km/bpf/tls_capture.h that need no BPF: decoding records, HTTP heads,
// ld.so.cache, ELF images and TLS stack classification, private library copies, and the
// uprobe feature probe. Kept apart from the loader so the fuzz target builds without the
// skeletons (which clang rejects as over-long strings).
#include "km/bpf/tls_capture.h"

#include <arpa/inet.h>
#include <elf.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <set>

#include "km/base/file.h"
#include "km/base/strings.h"
#include "km/base/unique_fd.h"
#include "km/bpf_abi/tls_capture.h"

namespace km::bpf {

static_assert(sizeof(km_tls_event) == KM_TLS_EVENT_SIZE, "km_tls_event layout");
static_assert(sizeof(km_tls_event_data) == KM_TLS_EVENT_DATA_SIZE, "km_tls_event_data layout");

namespace {

constexpr const char* kFunctionNames[] = {"SSL_write",    "SSL_read",           "SSL_write_ex",
                                          "SSL_read_ex",  "gnutls_record_send", "gnutls_record_recv",
                                          "free"};
static_assert(sizeof kFunctionNames / sizeof kFunctionNames[0] == KM_TLS_FN_MAX + 1);

// ---- HTTP heads ----

bool is_upper_token(std::string_view s) {
  if (s.empty() || s.size() > 24) return false;
  for (char c : s) {
    if (c < 'A' || c > 'Z') return false;
  }
  return true;
}

bool is_target(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

bool is_http1_version(std::string_view s) {
  return s.size() == 8 && s.substr(0, 7) == "HTTP/1." && (s[7] == '0' || s[7] == '1');
}

// The next line of `data` from `*pos` (without CR LF); false when the line is not complete.
bool next_line(std::string_view data, size_t* pos, std::string_view* line) {
  size_t nl = data.find('\n', *pos);
  if (nl == std::string_view::npos) return false;
  size_t end = nl;
  if (end > *pos && data[end - 1] == '\r') --end;
  *line = data.substr(*pos, end - *pos);
  *pos = nl + 1;
  return true;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Reads header lines from `*pos` up to the blank line that ends the head (or the end of the
// bytes); the Host header's value into `host`. Returns the position after the head, or npos
// when the bytes end inside it.
size_t read_headers(std::string_view data, size_t pos, std::string* host) {
  std::string_view line;
  while (next_line(data, &pos, &line)) {
    if (line.empty()) return pos;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    if (host && host->empty() && equals_ignore_case(line.substr(0, colon), "host")) {
      std::string_view value = trim_ows(line.substr(colon + 1));
      // A value with control characters is not a host name; it must not reach a record.
      if (std::none_of(value.begin(), value.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; })) {
        *host = std::string(value);
      }
    }
  }
  return std::string_view::npos;
}

}  // namespace

std::string_view tls_direction_name(TlsDirection d) { return d == TlsDirection::kWrite ? "write" : "read"; }

HttpHead parse_http_request_head(std::string_view data) {
  HttpHead h;
  static constexpr std::string_view kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  if (data.substr(0, kH2Preface.size()) == kH2Preface) {
    h.protocol = "h2";
    return h;
  }
  size_t pos = 0;
  std::string_view line;
  if (!next_line(data, &pos, &line)) return h;
  size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return h;
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return h;
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  if (!is_upper_token(method) || !is_target(target) || !is_http1_version(version)) return h;
  h.protocol = std::string(version);
  h.method = std::string(method);
  h.path = std::string(target);
  (void)read_headers(data, pos, &h.host);
  return h;
}

HttpHead parse_http_response_head(std::string_view data) {
  HttpHead h;
  size_t pos = 0;
  // Interim (1xx) heads may precede the final one in the same bytes.
  for (int heads = 0; heads < 8; ++heads) {
    std::string_view line;
    if (!next_line(data, &pos, &line)) return h;
    if (line.size() < 12 || !is_http1_version(line.substr(0, 8)) || line[8] != ' ') return h;
    std::string_view code = line.substr(9, 3);
    if (!std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; }) || code[0] == '0') return h;
    if (line.size() > 12 && line[12] != ' ') return h;
    h.protocol = std::string(line.substr(0, 8));
    h.status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
    if (h.status >= 200 || h.status == 101) return h;
    pos = read_headers(data, pos, nullptr);
    if (pos == std::string_view::npos || pos >= data.size()) return h;
  }
  return h;
}

std::string TlsEndpoint::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family == AF_INET) {
    ::inet_ntop(AF_INET, addr.data(), buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port);
  }
  if (family == AF_INET6 && std::memcmp(addr.data(), kMapped, sizeof kMapped) == 0) {
    ::inet_ntop(AF_INET, addr.data() + 12, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port);
  }
  ::inet_ntop(AF_INET6, addr.data(), buf, sizeof buf);
  return "[" + std::string(buf) + "]:" + std::to_string(port);
}

Result<TlsRecord> decode_tls_event(const void* data, size_t size) {
  if (size != sizeof(km_tls_event) && size != sizeof(km_tls_event_data)) {
    return fail(ErrorCode::kInvalidArgument, "TLS event of " + std::to_string(size) + " bytes");
  }
  km_tls_event raw;
  std::memcpy(&raw, data, sizeof raw);
  bool with_data = size == sizeof(km_tls_event_data);
  bool close = (raw.flags & KM_TLS_F_CLOSE) != 0;
  if (with_data != ((raw.flags & KM_TLS_F_DATA) != 0) || raw.fn > KM_TLS_FN_MAX ||
      raw.data_len > (with_data ? KM_TLS_DATA_MAX : 0u) || raw.data_len > raw.bytes ||
      close != (raw.fn == KM_TLS_FN_FREE) || (close && (with_data || raw.bytes != 0))) {
    return fail(ErrorCode::kInvalidArgument, "malformed TLS event");
  }
  TlsRecord r;
  r.sandbox = raw.sandbox;
  r.cgroup_id = raw.cgroup_id;
  r.boot_ns = raw.boot_ns;
  r.pid = raw.pid;
  r.tid = raw.tid;
  r.comm.assign(raw.comm, strnlen(raw.comm, sizeof raw.comm));
  r.direction = (raw.fn & 1) ? TlsDirection::kRead : TlsDirection::kWrite;
  r.function = kFunctionNames[raw.fn];
  r.conn = raw.ssl;
  r.fd = raw.fd;
  if (raw.fd >= 0 && (raw.family == AF_INET || raw.family == AF_INET6)) {
    TlsEndpoint ep;
    ep.family = raw.family;
    std::memcpy(ep.addr.data(), raw.remote_addr, ep.addr.size());
    ep.port = raw.remote_port;
    r.remote = ep;
    r.local_port = raw.local_port;
  }
  r.bytes = raw.bytes;
  r.closed = close;
  r.head = !close && (raw.flags & KM_TLS_F_HEAD) != 0;
  r.payload_unreadable = (raw.flags & KM_TLS_F_FAULT) != 0;
  if (with_data) {
    std::string_view text(reinterpret_cast<const char*>(data) + offsetof(km_tls_event_data, data), raw.data_len);
    if (r.head) {
      r.http = r.direction == TlsDirection::kWrite ? parse_http_request_head(text) : parse_http_response_head(text);
    }
    // Plaintext leaves this function only for sandboxes that asked for it.
    if (raw.flags & KM_TLS_F_PAYLOADS) r.payload = std::string(text);
  }
  return r;
}

Result<FileId> file_id(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fail(Error::from_errno("stat " + path));
  if (!S_ISREG(st.st_mode)) return fail(ErrorCode::kInvalidArgument, path + ": not a regular file");
  return FileId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
}

// ---- ld.so.cache ----

namespace {

template <typename T>
bool load_at(std::string_view bytes, uint64_t off, T* out) {
  if (off > bytes.size() || bytes.size() - off < sizeof(T)) return false;
  std::memcpy(out, bytes.data() + off, sizeof(T));
  return true;
}

std::string_view c_string_at(std::string_view bytes, uint64_t off) {
  if (off >= bytes.size()) return {};
  std::string_view rest = bytes.substr(off);
  size_t nul = rest.find('\0');
  if (nul == std::string_view::npos) return {};
  return rest.substr(0, nul);
}

std::string base_name_of(std::string_view path) {
  size_t slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

constexpr std::string_view kCacheOldMagic = "ld.so-1.7.0";
constexpr std::string_view kCacheNewMagic = "glibc-ld.so.cache1.1";
constexpr size_t kCacheNewHeader = 48;    // magic, version, nlibs, len_strings, flags, pad, ext, unused[3]
constexpr size_t kCacheNewEntry = 24;     // flags, key, value, osversion, hwcap
constexpr int32_t kFlagElfLibc6 = 0x0003;
constexpr int32_t kFlagX8664Lib64 = 0x0300;

}  // namespace

std::optional<std::string> ld_cache_lookup(std::string_view cache, std::string_view soname) {
  // The new format stands alone (glibc >= 2.32 writes only it) or follows the old table.
  size_t base = 0;
  if (cache.substr(0, kCacheOldMagic.size()) == kCacheOldMagic) {
    uint32_t nlibs = 0;
    if (!load_at(cache, 12, &nlibs)) return std::nullopt;
    uint64_t end = 16 + static_cast<uint64_t>(nlibs) * 12;
    base = static_cast<size_t>(std::min<uint64_t>((end + 7) & ~uint64_t{7}, cache.size()));
  }
  std::string_view c = cache.substr(base);
  if (c.substr(0, kCacheNewMagic.size()) != kCacheNewMagic) return std::nullopt;
  uint32_t nlibs = 0;
  if (!load_at(c, 20, &nlibs)) return std::nullopt;
  if (nlibs > (c.size() - kCacheNewHeader) / kCacheNewEntry) return std::nullopt;
  std::optional<std::string> hwcap_match;
  for (uint32_t i = 0; i < nlibs; ++i) {
    uint64_t at = kCacheNewHeader + static_cast<uint64_t>(i) * kCacheNewEntry;
    int32_t flags = 0;
    uint32_t key = 0, value = 0;
    uint64_t hwcap = 0;
    if (!load_at(c, at, &flags) || !load_at(c, at + 4, &key) || !load_at(c, at + 8, &value) ||
        !load_at(c, at + 16, &hwcap)) {
      return std::nullopt;
    }
    if ((flags & 0xff) != kFlagElfLibc6 || (flags & 0xff00) != kFlagX8664Lib64) continue;
    if (c_string_at(c, key) != soname) continue;
    std::string_view path = c_string_at(c, value);
    if (path.empty() || path[0] != '/') continue;
    // The baseline build first; a glibc-hwcaps variant only when there is nothing else.
    if (hwcap == 0) return std::string(path);
    if (!hwcap_match) hwcap_match = std::string(path);
  }
  return hwcap_match;
}

namespace {

// The dynamic linker's default directories, after its cache.
std::optional<std::string> in_default_dirs(std::string_view soname) {
  for (const char* dir :
       {"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}) {
    std::string path = std::string(dir) + "/" + std::string(soname);
    if (::access(path.c_str(), R_OK) == 0) return path;
  }
  return std::nullopt;
}

}  // namespace

Result<std::string> resolve_library(std::string_view soname) {
  auto cache = read_file("/etc/ld.so.cache", 64u << 20);
  if (cache) {
    if (auto path = ld_cache_lookup(*cache, soname); path && ::access(path->c_str(), R_OK) == 0) return *path;
  }
  if (auto path = in_default_dirs(soname)) return *path;
  return fail(Error(ErrorCode::kNotFound,
                    std::string(soname) + " is not in /etc/ld.so.cache or the default library directories")
                  .with_hint("install OpenSSL 3 (libssl3), or name the library in observability.tlsCapture.libraries"));
}

Result<std::string> default_libssl() { return resolve_library("libssl.so.3"); }

Result<std::string> private_library_copy(const std::string& library, const std::string& dir) {
  char real[PATH_MAX];
  if (!::realpath(library.c_str(), real)) return fail(Error::from_errno("resolving " + library));
  UniqueFd in(::open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!in) return fail(Error::from_errno(std::string("open ") + real));
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) return fail(Error::from_errno(std::string("stat ") + real));
  if (!S_ISREG(st.st_mode)) return fail(ErrorCode::kInvalidArgument, std::string(real) + ": not a regular file");
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return fail(Error::from_errno("mkdir " + dir));
  std::string name = base_name_of(real) + "." + std::to_string(st.st_dev) + "-" + std::to_string(st.st_ino) + "-" +
                     std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
  std::string path = dir + "/" + name;
  struct stat have {};
  if (::stat(path.c_str(), &have) == 0 && S_ISREG(have.st_mode) && have.st_size == st.st_size) return path;
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!out) return fail(Error::from_errno("create " + tmp));
  auto failed = [&](const std::string& what) {
    Error e = Error::from_errno(what);
    ::unlink(tmp.c_str());
    return fail(std::move(e));
  };
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failed(std::string("read ") + real);
    if (n == 0) break;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(out.get(), buf + done, static_cast<size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return failed("write " + tmp);
      done += w;
    }
  }
  if (::fchmod(out.get(), 0644) != 0 || ::fsync(out.get()) != 0) return failed("write " + tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return failed("rename " + tmp);
  return path;
}

// ---- ELF ----

namespace {

// Bounds on what one inspection reads from a (possibly hostile) file.
constexpr uint64_t kMaxSectionRead = 32u << 20;
constexpr uint64_t kMaxScan = 256u << 20;

class ElfSource {
 public:
  virtual ~ElfSource() = default;
  virtual uint64_t size() const = 0;
  // Reads exactly `len` bytes at `off`; false when they are not there.
  virtual bool read(uint64_t off, uint64_t len, std::string* out) const = 0;
};

class MemorySource : public ElfSource {
 public:
  explicit MemorySource(std::string_view image) : image_(image) {}
  uint64_t size() const override { return image_.size(); }
  bool read(uint64_t off, uint64_t len, std::string* out) const override {
    if (off > image_.size() || image_.size() - off < len) return false;
    out->assign(image_.data() + off, len);
    return true;
  }

 private:
  std::string_view image_;
};

class FileSource : public ElfSource {
 public:
  FileSource(int fd, uint64_t size) : fd_(fd), size_(size) {}
  uint64_t size() const override { return size_; }
  bool read(uint64_t off, uint64_t len, std::string* out) const override {
    if (off > size_ || size_ - off < len || len > kMaxSectionRead) return false;
    out->resize(len);
    uint64_t done = 0;
    while (done < len) {
      ssize_t n = ::pread(fd_, out->data() + done, len - done, static_cast<off_t>(off + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;  // shrank under us, or an error
      done += static_cast<uint64_t>(n);
    }
    return true;
  }

 private:
  int fd_;
  uint64_t size_;
};

struct Section {
  std::string name;
  Elf64_Shdr hdr;
};

// The section table of a 64-bit little-endian ELF file; empty when it is not one.
std::vector<Section> read_sections(const ElfSource& src) {
  std::string buf;
  Elf64_Ehdr eh;
  if (!src.read(0, sizeof eh, &buf)) return {};
  std::memcpy(&eh, buf.data(), sizeof eh);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
      eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shoff == 0) {
    return {};
  }
  uint64_t count = eh.e_shnum;
  uint64_t strndx = eh.e_shstrndx;
  if (count == 0 || strndx == SHN_XINDEX) {
    Elf64_Shdr first;
    if (!src.read(eh.e_shoff, sizeof first, &buf)) return {};
    std::memcpy(&first, buf.data(), sizeof first);
    if (count == 0) count = first.sh_size;
    if (strndx == SHN_XINDEX) strndx = first.sh_link;
  }
  if (count == 0 || count > 65536 || !src.read(eh.e_shoff, count * sizeof(Elf64_Shdr), &buf)) return {};
  std::vector<Section> out(count);
  for (uint64_t i = 0; i < count; ++i) {
    std::memcpy(&out[i].hdr, buf.data() + i * sizeof(Elf64_Shdr), sizeof(Elf64_Shdr));
  }
  if (strndx < count && out[strndx].hdr.sh_type == SHT_STRTAB && out[strndx].hdr.sh_size <= (1u << 20)) {
    std::string names;
    if (src.read(out[strndx].hdr.sh_offset, out[strndx].hdr.sh_size, &names)) {
      for (auto& s : out) s.name = std::string(c_string_at(names, s.hdr.sh_name));
    }
  }
  return out;
}

bool read_section(const ElfSource& src, const Elf64_Shdr& h, std::string* out) {
  if (h.sh_type == SHT_NOBITS || h.sh_size > kMaxSectionRead) return false;
  return src.read(h.sh_offset, h.sh_size, out);
}

// Calls `each(name, sym)` for the symbols of every SHT_SYMTAB and SHT_DYNSYM section.
template <typename F>
void for_each_symbol(const ElfSource& src, const std::vector<Section>& sections, F&& each) {
  for (const auto& s : sections) {
    if (s.hdr.sh_type != SHT_SYMTAB && s.hdr.sh_type != SHT_DYNSYM) continue;
    if (s.hdr.sh_link >= sections.size() || s.hdr.sh_entsize != sizeof(Elf64_Sym)) continue;
    std::string syms, strs;
    if (!read_section(src, s.hdr, &syms) || !read_section(src, sections[s.hdr.sh_link].hdr, &strs)) continue;
    for (size_t off = 0; off + sizeof(Elf64_Sym) <= syms.size(); off += sizeof(Elf64_Sym)) {
      Elf64_Sym sym;
      std::memcpy(&sym, syms.data() + off, sizeof sym);
      std::string_view name = c_string_at(strs, sym.st_name);
      if (!name.empty()) each(name, sym);
    }
  }
}

bool defined_function(const Elf64_Sym& sym) {
  return sym.st_shndx != SHN_UNDEF && ELF64_ST_TYPE(sym.st_info) == STT_FUNC;
}

// Markers of TLS stacks in the read-only data of a program without symbols.
void scan_markers(const ElfSource& src, const std::vector<Section>& sections, ElfTlsFacts* f) {
  static constexpr std::string_view kGoTls = "crypto/tls.", kRustls = "rustls", kBoring = "BoringSSL",
                                    kOpenSsl3 = "OpenSSL 3.", kOpenSsl11 = "OpenSSL 1.1.";
  constexpr uint64_t kChunk = 1u << 20, kOverlap = 16;
  uint64_t budget = kMaxScan;
  std::string chunk;
  for (const auto& s : sections) {
    if (s.hdr.sh_type != SHT_PROGBITS || (s.hdr.sh_flags & SHF_EXECINSTR) || !(s.hdr.sh_flags & SHF_ALLOC)) continue;
    if (s.name != ".rodata" && s.name != ".gopclntab" && s.name != ".data.rel.ro" && s.name != ".rdata") continue;
    for (uint64_t off = 0; off < s.hdr.sh_size && budget > 0;) {
      uint64_t len = std::min({kChunk, s.hdr.sh_size - off, budget});
      if (!src.read(s.hdr.sh_offset + off, len, &chunk)) break;
      std::string_view v(chunk);
      if (f->go && v.find(kGoTls) != std::string_view::npos) f->go_tls = true;
      if (v.find(kRustls) != std::string_view::npos) f->rustls = true;
      if (v.find(kBoring) != std::string_view::npos) f->boringssl = true;
      if (v.find(kOpenSsl3) != std::string_view::npos || v.find(kOpenSsl11) != std::string_view::npos) {
        f->openssl_strings = true;
      }
      budget -= len;
      if (off + len >= s.hdr.sh_size) break;
      off += len - std::min(len, kOverlap);
    }
  }
}

ElfTlsFacts facts_of(const ElfSource& src, bool scan) {
  ElfTlsFacts f;
  auto sections = read_sections(src);
  if (sections.empty()) return f;
  f.elf = true;
  for (const auto& s : sections) {
    if (s.name == ".go.buildinfo" || s.name == ".gopclntab" || s.name == ".note.go.buildid") f.go = true;
    if (s.hdr.sh_type != SHT_DYNAMIC || s.hdr.sh_link >= sections.size()) continue;
    std::string dyn, strs;
    if (!read_section(src, s.hdr, &dyn) || !read_section(src, sections[s.hdr.sh_link].hdr, &strs)) continue;
    std::vector<std::string> rpath;
    for (size_t off = 0; off + sizeof(Elf64_Dyn) <= dyn.size(); off += sizeof(Elf64_Dyn)) {
      Elf64_Dyn d;
      std::memcpy(&d, dyn.data() + off, sizeof d);
      if (d.d_tag == DT_NULL) break;
      std::string_view v = c_string_at(strs, d.d_un.d_val);
      if (v.empty()) continue;
      if (d.d_tag == DT_NEEDED) f.needed.emplace_back(v);
      if (d.d_tag == DT_RUNPATH) f.runpath = split(v, ':');
      if (d.d_tag == DT_RPATH) rpath = split(v, ':');
    }
    if (f.runpath.empty()) f.runpath = rpath;
  }
  bool read = false, write = false;
  for_each_symbol(src, sections, [&](std::string_view name, const Elf64_Sym& sym) {
    if (defined_function(sym)) {
      if (name == "SSL_read") read = true;
      if (name == "SSL_write") write = true;
      if (name.substr(0, 10) == "BORINGSSL_") f.boringssl = true;
    }
    if (name.find("rustls") != std::string_view::npos) f.rustls = true;
    if (f.go && name.substr(0, 11) == "crypto/tls.") f.go_tls = true;
  });
  f.ssl_symbols = read && write;
  if (scan && !f.ssl_symbols) scan_markers(src, sections, &f);
  return f;
}

struct OpenedFile {
  UniqueFd fd;
  FileId id;
  uint64_t size = 0;
};

// Opens a file to inspect: regular files only (a FIFO or a device in a sandbox's image must
// not block or feed the reader), without following it to somewhere else afterwards.
Result<OpenedFile> open_regular(const std::string& path) {
  int raw;
  do {
    raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  } while (raw < 0 && errno == EINTR);
  if (raw < 0) return fail(Error::from_errno("open " + path));
  OpenedFile f;
  f.fd = UniqueFd(raw);
  struct stat st {};
  if (::fstat(raw, &st) != 0) return fail(Error::from_errno("stat " + path));
  if (!S_ISREG(st.st_mode)) return fail(ErrorCode::kInvalidArgument, path + ": not a regular file");
  f.id = FileId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
  f.size = static_cast<uint64_t>(st.st_size);
  return f;
}

// `path` resolved inside the tree whose root is `root_fd` (symlinks and ".." cannot lead out,
// magic links are refused), opened only when it is a regular file: what is not one is never
// opened for reading (a device node's open can have effects). root_fd < 0: the host's tree.
Result<OpenedFile> open_regular_in(int root_fd, const std::string& path) {
  if (root_fd < 0) return open_regular(path);
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  UniqueFd at(static_cast<int>(::syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof how)));
  if (!at) return fail(Error::from_errno("open " + path + " in the sandbox's root"));
  struct stat st {};
  if (::fstat(at.get(), &st) != 0) return fail(Error::from_errno("stat " + path));
  if (!S_ISREG(st.st_mode)) return fail(ErrorCode::kInvalidArgument, path + ": not a regular file");
  UniqueFd rd(::open(("/proc/self/fd/" + std::to_string(at.get())).c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!rd) return fail(Error::from_errno("open " + path));
  OpenedFile f;
  f.fd = std::move(rd);
  f.id = FileId{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino)};
  f.size = static_cast<uint64_t>(st.st_size);
  return f;
}

bool readable_in(int root_fd, const std::string& path) {
  if (root_fd < 0) return ::access(path.c_str(), R_OK) == 0;
  return static_cast<bool>(open_regular_in(root_fd, path));
}

}  // namespace

Result<std::set<std::string>> elf_defined_functions(const std::string& path) {
  KM_ASSIGN_OR_RETURN(OpenedFile f, open_regular(path));
  FileSource src(f.fd.get(), f.size);
  auto sections = read_sections(src);
  if (sections.empty()) return fail(ErrorCode::kInvalidArgument, path + ": not a 64-bit little-endian ELF file");
  std::set<std::string> out;
  for_each_symbol(src, sections, [&](std::string_view name, const Elf64_Sym& sym) {
    if (!defined_function(sym)) return;
    for (const char* want : {"SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex", "SSL_free", "gnutls_record_send",
                             "gnutls_record_send2", "gnutls_record_recv", "gnutls_deinit"}) {
      if (name == want) out.insert(want);
    }
  });
  return out;
}

ElfTlsFacts elf_tls_facts_of_image(std::string_view image) { return facts_of(MemorySource(image), true); }

// ---- TLS stacks ----

std::string_view tls_stack_name(TlsStack s) {
  switch (s) {
    case TlsStack::kOpenSsl: return "openssl";
    case TlsStack::kOpenSslBundled: return "openssl-bundled";
    case TlsStack::kGnuTls: return "gnutls";
    case TlsStack::kNss: return "nss";
    case TlsStack::kGo: return "go";
    case TlsStack::kRustls: return "rustls";
    case TlsStack::kStaticTls: return "static-tls";
    case TlsStack::kOtherLibrary: return "other";
  }
  return "other";
}

bool TlsStackReport::any_supported() const {
  return std::any_of(findings.begin(), findings.end(), [](const TlsStackFinding& f) { return f.supported; });
}

std::vector<TlsStackFinding> TlsStackReport::unsupported() const {
  std::vector<TlsStackFinding> out;
  for (const auto& f : findings) {
    if (!f.supported) out.push_back(f);
  }
  return out;
}

namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

std::string unsupported_reason(std::string_view stack) {
  if (stack == "nss") return "NSS (PR_Read/PR_Write) is not probed; only OpenSSL's and GnuTLS's record calls are";
  if (stack == "go") {
    return "Go's crypto/tls is compiled into each program, and Go moves goroutine stacks, so return probes are "
           "unsafe";
  }
  if (stack == "rustls") return "rustls is compiled into each program, without stable symbols to probe";
  return "";
}


// A TLS library by its file name, as linked or mapped.
std::optional<TlsStackFinding> library_finding(const std::string& path, FileId id) {
  std::string name = base_name_of(path);
  TlsStackFinding f;
  f.object = path;
  f.id = id;
  if (starts_with(name, "libssl3.so") || starts_with(name, "libnss3.so")) {
    f.stack = TlsStack::kNss;
    f.reason = unsupported_reason("nss");
  } else if (starts_with(name, "libssl.so") ||
             (starts_with(name, "libssl-") && name.find(".so") != std::string::npos)) {  // vendored in wheels
    f.stack = TlsStack::kOpenSsl;
    f.supported = true;
  } else if (starts_with(name, "libgnutls.so")) {
    f.stack = TlsStack::kGnuTls;
    f.supported = true;
  } else if (starts_with(name, "libwolfssl.so") || starts_with(name, "libmbedtls.so") ||
             starts_with(name, "libbearssl.so")) {
    f.stack = TlsStack::kOtherLibrary;
    f.reason = name.substr(0, name.find(".so")) + " is not probed; only OpenSSL's and GnuTLS's record calls are";
  } else {
    return std::nullopt;
  }
  return f;
}

// What an executable's own image says (compiled-in stacks).
void add_executable_findings(const std::string& path, FileId id, const ElfTlsFacts& facts, TlsStackReport* r) {
  auto add = [&](TlsStack s, bool supported, std::string reason) {
    r->findings.push_back(TlsStackFinding{s, path, id, supported, std::move(reason)});
  };
  if (facts.ssl_symbols) {
    add(TlsStack::kOpenSslBundled, true, "");  // the executable itself can be attached
  } else if (facts.go_tls) {
    add(TlsStack::kGo, false, unsupported_reason("go"));
  } else if (facts.rustls) {
    add(TlsStack::kRustls, false, unsupported_reason("rustls"));
  } else if (facts.boringssl || facts.openssl_strings) {
    add(TlsStack::kStaticTls, false,
        std::string(facts.boringssl ? "BoringSSL" : "OpenSSL") +
            " is compiled into the program without symbols to probe");
  }
}

void add_library_findings(const std::string& path, FileId id, const ElfTlsFacts& facts, TlsStackReport* r) {
  if (auto f = library_finding(path, id)) {
    r->findings.push_back(*f);
  } else if (facts.ssl_symbols) {
    r->findings.push_back(TlsStackFinding{TlsStack::kOpenSslBundled, path, id, true, ""});
  }
}

std::string expand_origin(std::string dir, const std::string& object) {
  std::string origin = object.substr(0, object.rfind('/'));
  for (const char* token : {"$ORIGIN", "${ORIGIN}"}) {
    for (size_t at; (at = dir.find(token)) != std::string::npos;) dir.replace(at, std::strlen(token), origin);
  }
  return dir;
}

}  // namespace

Result<TlsStackReport> inspect_executable_tls(const std::string& path, int root_fd, const std::string& path_in_root) {
  KM_ASSIGN_OR_RETURN(OpenedFile exe, open_regular(path));
  ElfTlsFacts facts = facts_of(FileSource(exe.fd.get(), exe.size), true);
  if (!facts.elf) return fail(ErrorCode::kInvalidArgument, path + ": not a 64-bit little-endian ELF file");
  TlsStackReport r;
  add_executable_findings(path, exe.id, facts, &r);
  // The libraries it needs, transitively, found the way the dynamic linker finds them
  // (LD_LIBRARY_PATH aside: the environment of a future process is not known here), in the
  // tree the program runs in: every name, search directory and $ORIGIN is resolved in
  // root_fd's tree, never in the caller's (a sandbox's program names what it likes).
  std::string cache;
  if (auto c = open_regular_in(root_fd, "/etc/ld.so.cache"); c && c->size <= (64u << 20)) {
    cache.resize(c->size);
    size_t got = 0;
    while (got < cache.size()) {
      ssize_t n = ::pread(c->fd.get(), cache.data() + got, cache.size() - got, static_cast<off_t>(got));
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    cache.resize(got);
  }
  std::set<std::string> seen;
  std::deque<std::pair<std::string, std::vector<std::string>>> todo;  // (name, search dirs)
  auto enqueue = [&](const ElfTlsFacts& f, const std::string& object) {
    std::vector<std::string> dirs;
    for (const auto& d : f.runpath) dirs.push_back(expand_origin(d, object));
    for (const auto& n : f.needed) todo.emplace_back(n, dirs);
  };
  enqueue(facts, root_fd >= 0 && !path_in_root.empty() ? path_in_root : path);
  while (!todo.empty() && seen.size() < 512) {
    auto [name, dirs] = std::move(todo.front());
    todo.pop_front();
    if (!seen.insert(name).second) continue;
    std::string found;
    if (name.find('/') != std::string::npos) {
      found = name;
    } else {
      for (const auto& d : dirs) {
        if (readable_in(root_fd, d + "/" + name)) {
          found = d + "/" + name;
          break;
        }
      }
      if (found.empty()) {
        if (auto c = ld_cache_lookup(cache, name)) found = *c;
      }
      if (found.empty()) {
        for (const char* dir :
             {"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}) {
          if (readable_in(root_fd, std::string(dir) + "/" + name)) {
            found = std::string(dir) + "/" + name;
            break;
          }
        }
      }
    }
    if (found.empty()) continue;  // the loader would fail too; not a TLS question
    auto lib = open_regular_in(root_fd, found);
    if (!lib) continue;
    ElfTlsFacts lf = facts_of(FileSource(lib->fd.get(), lib->size), false);
    add_library_findings(found, lib->id, lf, &r);
    enqueue(lf, found);
  }
  return r;
}

Result<TlsTargets> tls_targets_for_profile(const std::vector<std::string>& stacks) {
  TlsTargets t;
  bool openssl = stacks.empty(), gnutls = false;
  for (const auto& s : stacks) {
    if (s == "openssl") {
      openssl = true;
    } else if (s == "gnutls") {
      gnutls = true;
    } else if (s == "all") {
      openssl = gnutls = true;
      for (const char* other : {"nss", "go", "rustls"}) t.unsupported.emplace_back(other, unsupported_reason(other));
    } else if (std::string reason = unsupported_reason(s); !reason.empty()) {
      t.unsupported.emplace_back(s, std::move(reason));
    } else {
      return fail(ErrorCode::kInvalidArgument,
                  "unknown TLS stack " + quoted(s) + " in observability.tlsCapture.libraries");
    }
  }
  if (openssl) {
    KM_ASSIGN_OR_RETURN(std::string libssl, default_libssl());
    t.objects.push_back(std::move(libssl));
    for (const char* node : {"/usr/local/bin/node", "/usr/bin/node"}) {
      auto opened = open_regular(node);
      if (!opened) continue;
      if (facts_of(FileSource(opened->fd.get(), opened->size), false).ssl_symbols) t.objects.emplace_back(node);
      break;  // the first on the default PATH is the one sandboxes run
    }
  }
  if (gnutls) {
    KM_ASSIGN_OR_RETURN(std::string lib, resolve_library("libgnutls.so.30"));
    t.objects.push_back(std::move(lib));
  }
  // The same stack named twice is listed once.
  std::sort(t.unsupported.begin(), t.unsupported.end());
  t.unsupported.erase(std::unique(t.unsupported.begin(), t.unsupported.end()), t.unsupported.end());
  return t;
}

Result<TlsStackReport> inspect_process_tls(pid_t pid) {
  std::string proc = "/proc/" + std::to_string(pid);
  KM_ASSIGN_OR_RETURN(std::string maps, read_file(proc + "/maps", 16u << 20));
  TlsStackReport r;
  char exe_path[4096] = {};
  ssize_t n = ::readlink((proc + "/exe").c_str(), exe_path, sizeof exe_path - 1);
  std::string exe_name = n > 0 ? std::string(exe_path, static_cast<size_t>(n)) : proc + "/exe";
  if (auto exe = open_regular(proc + "/exe")) {
    ElfTlsFacts facts = facts_of(FileSource(exe->fd.get(), exe->size), true);
    add_executable_findings(exe_name, exe->id, facts, &r);
  }
  std::set<std::pair<uint64_t, uint64_t>> seen;
  for (const auto& line : split(maps, '\n')) {
    // start-end perms offset major:minor inode path
    char dev[32] = {};
    unsigned long long inode = 0;
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%*s %*s %*s %31s %llu %n", dev, &inode, &path_at) < 2 || inode == 0 ||
        path_at <= 0) {
      continue;
    }
    std::string path = line.substr(static_cast<size_t>(path_at));
    unsigned major = 0, minor = 0;
    if (std::sscanf(dev, "%x:%x", &major, &minor) != 2) continue;
    FileId id{static_cast<uint64_t>(makedev(major, minor)), inode};
    if (!seen.insert({id.dev, id.ino}).second) continue;
    if (auto f = library_finding(path, id)) r.findings.push_back(*f);
  }
  return r;
}

// ---- kernel support ----

Status probe_uprobe_support(const std::string& sysfs) {
  // libbpf attaches uprobes through perf_event_open with this PMU (no tracefs needed); without
  // it libbpf would try the legacy tracefs interface, which km does not rely on.
  const std::string pmu_type = sysfs + "/bus/event_source/devices/uprobe/type";
  auto type = read_file(pmu_type, 64);
  if (!type || type->empty() || std::atoi(type->c_str()) <= 0) {
    return fail(Error(ErrorCode::kUnavailable,
                      "uprobes are not available: " + pmu_type + " is missing or unreadable")
                    .with_hint("TLS capture needs a kernel with CONFIG_UPROBE_EVENTS (and /sys mounted); "
                               "turn observability.tlsCapture off on this host"));
  }
  return ok();
}

}  // namespace km::bpf
