// TLS plaintext observation (profile `observability.tlsCapture`; bpf/progs/tls_capture.bpf.c):
// what processes in sandboxes send and receive through OpenSSL, before encryption and after
// decryption, as records of HTTP/1.x heads and byte counts. Observe only: nothing is blocked
// or changed, and a process can avoid it (see docs/tls-capture.md, and TlsStackReport below
// for the stacks it cannot see, which callers should report rather than miss silently).
//
// Contract.
// - TlsCapture::open loads the program and attaches uprobes (entry and return) to SSL_write,
//   SSL_read, SSL_write_ex, SSL_read_ex (OpenSSL) and gnutls_record_send(2), gnutls_record_recv
//   (GnuTLS), and entry probes to SSL_free / gnutls_deinit, in each library given (default: the
//   libssl.so.3 the host's dynamic linker resolves, from /etc/ld.so.cache). A "library" is any
//   ELF object with those symbols: a libssl or libgnutls, or an executable that bundles OpenSSL
//   and keeps its symbols (Node.js as nodesource builds it). SSL_read and SSL_write (or the two
//   GnuTLS record calls) are required; the rest are used where present. Objects are identified
//   by inode: attaching the same file twice (two paths, a symlink) is a no-op, never double
//   counts.
// - When a connection that had calls in a watched process is freed (SSL_free, gnutls_deinit),
//   a record with `closed` set ends it, so a reader can summarise a connection when it ends.
// - Uprobes are on the file, so every process on the host that maps it traps into the program;
//   only processes in cgroups added with watch() produce records. The cgroup is the v2 cgroup
//   the process runs in (its own, not an ancestor: watch each sandbox's cgroup).
// - Each SSL_* call that transferred bytes gives one TlsRecord. `bytes` is the count the call
//   reported (the return value, or *written / *readbytes of the _ex variants, read at return),
//   so records of a connection add up to exactly what crossed it. Failed and retried calls
//   (WANT_READ/WANT_WRITE) give none.
// - HTTP/1.x: a record that starts a message (the first call in a direction on a connection)
//   is parsed from the first KM_TLS_DATA_MAX (4 KiB) bytes: requests give method, path and
//   Host, responses their status. HTTP/2 is recognised by its preface (protocol "h2") and not
//   decoded further. Only heads carry plaintext from the kernel unless the sandbox is watched
//   with capture_payloads; the plaintext prefix reaches TlsRecord::payload only then, and is
//   dropped after parsing otherwise.
// - The socket (fd, remote and local address) is learnt in the kernel on a connection's first
//   calls (the one TCP socket of the process that moved during the call) and kept for the
//   connection; it is absent when the process does no socket I/O inside SSL_* (memory BIOs:
//   node) or Options::resolve_sockets is off. No system call is hooked.
// - Overhead falls on every process mapping a probed file; attach a private_library_copy bound
//   into sandboxes to keep it off the host (docs/tls-capture.md).
// Ownership: the object owns the program, its links and maps; destroying it detaches everything
// (nothing is pinned). Thread-safety: watch/unwatch/attach may be called from any thread
// concurrently with poll, which must be called from one thread at a time.
// Errors: Result values naming what is missing (uprobe support, a symbol, the library) with the
// libbpf log's tail; the verifier log on a failed load.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"

struct ring_buffer;
struct bpf_link;
struct tls_capture;

namespace km::bpf {

enum class TlsDirection : uint8_t {
  kWrite,  // the process sent the plaintext (SSL_write, SSL_write_ex, gnutls_record_send)
  kRead,   // the process received it (SSL_read, SSL_read_ex, gnutls_record_recv)
};
std::string_view tls_direction_name(TlsDirection d);  // "write", "read"

struct TlsEndpoint {
  int family = 0;                 // AF_INET or AF_INET6
  std::array<uint8_t, 16> addr{};  // network order; IPv4 in the first 4 bytes
  uint16_t port = 0;
  // "127.0.0.1:443", "[2001:db8::1]:443"; IPv4-mapped IPv6 shown as IPv4.
  std::string to_string() const;
};

// HTTP/1.x (or the HTTP/2 preface) at the start of a message's first bytes. The bytes may be
// cut anywhere: what was complete is filled, the rest left empty.
struct HttpHead {
  std::string protocol;  // "HTTP/1.1", "HTTP/1.0", "h2", or "" when not HTTP
  std::string method;    // requests
  std::string path;      // the request target as sent
  std::string host;      // the Host header, when it was in the bytes
  int status = 0;        // responses (the final one when 1xx heads come first)
};
HttpHead parse_http_request_head(std::string_view data);
HttpHead parse_http_response_head(std::string_view data);

struct TlsRecord {
  uint32_t sandbox = 0;    // the index given to watch()
  uint64_t cgroup_id = 0;
  uint64_t boot_ns = 0;    // CLOCK_BOOTTIME at the call's return
  uint32_t pid = 0, tid = 0;  // host pid namespace
  std::string comm;
  TlsDirection direction = TlsDirection::kWrite;
  std::string function;    // "SSL_write", "SSL_read_ex", "gnutls_record_recv", ...
  uint64_t conn = 0;       // the SSL* or gnutls_session_t: with pid, names the connection
  int fd = -1;             // the socket, -1 when not seen
  std::optional<TlsEndpoint> remote;
  uint16_t local_port = 0;
  uint64_t bytes = 0;      // plaintext bytes the call transferred
  bool head = false;       // first call of a message (in this direction, on this connection)
  // The connection ended (SSL_free, gnutls_deinit): function "free", bytes 0, no plaintext.
  // Sent once for each connection that had calls in a watched process.
  bool closed = false;
  HttpHead http;           // parsed from heads
  // The first <= 4 KiB of the plaintext: only from sandboxes watched with capture_payloads.
  std::optional<std::string> payload;
  bool payload_unreadable = false;  // the kernel could not read the buffer (not resident)
};

// Decodes one ring-buffer record and parses HTTP from heads; an error for a malformed record.
Result<TlsRecord> decode_tls_event(const void* data, size_t size);

// A file by identity, as uprobes see it.
struct FileId {
  uint64_t dev = 0, ino = 0;
  bool operator==(const FileId& o) const { return dev == o.dev && ino == o.ino; }
};
Result<FileId> file_id(const std::string& path);

struct TlsLibrary {
  std::string path;
  FileId id;
  std::vector<std::string> functions;  // the ones probed
};

class TlsCapture {
 public:
  struct Options {
    std::vector<std::string> libraries;  // empty: default_libssl()
    bool resolve_sockets = true;         // learn each connection's socket (fd, peer)
  };

  // Checks uprobe support, loads the program and attaches every library. Fails as a whole if
  // any library cannot be attached (setup fails closed).
  static Result<std::unique_ptr<TlsCapture>> open(const Options& options);
  ~TlsCapture();
  TlsCapture(const TlsCapture&) = delete;
  TlsCapture& operator=(const TlsCapture&) = delete;

  // Attaches one more object (a sandbox image's own libssl, an executable bundling OpenSSL).
  Status attach(const std::string& path);
  std::vector<TlsLibrary> libraries() const;
  bool attached(const FileId& id) const;

  // Starts (or updates) recording the processes of a v2 cgroup as sandbox `sandbox`.
  Status watch(uint64_t cgroup_id, uint32_t sandbox, bool capture_payloads);
  Status unwatch(uint64_t cgroup_id);

  // Delivers what is in the ring buffer, waiting up to `timeout_ms` for the first record.
  // Returns the number delivered.
  Result<int> poll(int timeout_ms, const std::function<void(const TlsRecord&)>& deliver);
  // Records the kernel could not queue because the reader was behind.
  uint64_t lost() const;

 private:
  TlsCapture() = default;
  static int on_record(void* self, void* data, size_t size);

  ::tls_capture* skel_ = nullptr;
  mutable std::mutex mu_;  // libraries_, links_
  std::vector<TlsLibrary> libraries_;
  std::vector<::bpf_link*> links_;
  ring_buffer* rb_ = nullptr;
  const std::function<void(const TlsRecord&)>* deliver_ = nullptr;
  int delivered_ = 0;
};

// Whether this kernel can attach uprobes without tracefs (the uprobe PMU under `sysfs`); names
// what is missing otherwise.
Status probe_uprobe_support(const std::string& sysfs = "/sys");

// Copies `library` into `dir` (created if missing) as a file of its own, a new inode, for
// sandboxes to map instead of the host's. Uprobes trap only processes that map the probed
// file, so with the capture attached to the copy, and the copy bound read-only over `library`
// in the sandbox's mount namespace, processes outside sandboxes never pay for the capture.
// Returns `dir`/<name>.<dev>-<ino>-<mtime>: a new name when the host's file changes (an
// upgrade), the existing copy when it does not.
Result<std::string> private_library_copy(const std::string& library, const std::string& dir);

// The path the dynamic linker resolves `soname` to, from /etc/ld.so.cache (x86-64 entries).
Result<std::string> resolve_library(std::string_view soname);
// The default library: resolve_library("libssl.so.3").
Result<std::string> default_libssl();
// Looks `soname` up in the bytes of an ld.so.cache ("glibc-ld.so.cache1.1" format, alone or
// after the old format); nullopt when absent or the bytes are malformed.
std::optional<std::string> ld_cache_lookup(std::string_view cache, std::string_view soname);

// TLS stacks a program uses, and whether this capture can see them.
enum class TlsStack {
  kOpenSsl,         // libssl.so (dynamic): observable when that file is attached
  kOpenSslBundled,  // SSL_read/SSL_write symbols in the executable (node): attach the executable
  kGnuTls,          // libgnutls (Debian's git over https, via libcurl-gnutls): observable when attached
  kNss,             // libnss3 / libssl3.so
  kGo,              // Go's crypto/tls
  kRustls,          // rustls, statically linked
  kStaticTls,       // an SSL library compiled in without symbols (BoringSSL, stripped OpenSSL)
  kOtherLibrary,    // another TLS library (wolfSSL, mbedTLS)
};
std::string_view tls_stack_name(TlsStack s);

struct TlsStackFinding {
  TlsStack stack = TlsStack::kOpenSsl;
  std::string object;  // the library or executable holding it
  FileId id;           // its identity (compare with TlsCapture::attached)
  bool supported = false;  // observable once `object` is attached
  std::string reason;      // for unsupported stacks: why, in a sentence
};

struct TlsStackReport {
  std::vector<TlsStackFinding> findings;  // empty: no TLS library linked (it may be loaded later)
  bool any_supported() const;
  std::vector<TlsStackFinding> unsupported() const;
};

// From the executable file: its ELF symbols and sections, and the libraries it needs
// (DT_NEEDED, transitively, resolved like the dynamic linker: RUNPATH/RPATH, ld.so.cache, the
// default directories). Reads bounded amounts of untrusted files, never maps them. Libraries a
// program loads with dlopen (Python's _ssl module) are not found this way; use the process form.
// root_fd >= 0: the program runs in that tree (a sandbox's root, opened O_PATH): its libraries,
// search paths, $ORIGIN (from path_in_root, where the program is in that tree) and ld.so.cache
// are looked up there, resolved in it (RESOLVE_IN_ROOT), and only regular files are opened.
Result<TlsStackReport> inspect_executable_tls(const std::string& path, int root_fd = -1, const std::string& path_in_root = "");
// From a running process: the objects it maps now (/proc/<pid>/maps) and its executable.
Result<TlsStackReport> inspect_process_tls(pid_t pid);

// What the profile's `observability.tlsCapture.libraries` asks for: "openssl" (and an empty
// list) gives the host's libssl.so.3 and, when it bundles OpenSSL with its symbols, the host's
// node (Claude Code's runtime); "gnutls" the host's libgnutls.so.30; "all" both, listing the
// other stacks as unsupported; "nss", "go" and "rustls" are unsupported, each with the reason
// (callers decide whether that fails the sandbox or is reported).
struct TlsTargets {
  std::vector<std::string> objects;  // for TlsCapture::Options::libraries / attach
  std::vector<std::pair<std::string, std::string>> unsupported;  // stack name, reason
};
Result<TlsTargets> tls_targets_for_profile(const std::vector<std::string>& stacks);

// Exposed for the fuzz target and unit tests: classifies one ELF image held in memory.
struct ElfTlsFacts {
  bool elf = false;
  std::vector<std::string> needed;   // DT_NEEDED
  std::vector<std::string> runpath;  // DT_RUNPATH, else DT_RPATH entries
  bool ssl_symbols = false;          // SSL_read and SSL_write defined
  bool go = false;                   // a Go program
  bool go_tls = false;               // ... that has crypto/tls
  bool rustls = false, boringssl = false, openssl_strings = false;
};
ElfTlsFacts elf_tls_facts_of_image(std::string_view image);
// Which of the probed functions (SSL_*, gnutls_record_*, gnutls_deinit) an ELF file defines.
Result<std::set<std::string>> elf_defined_functions(const std::string& path);

}  // namespace km::bpf
