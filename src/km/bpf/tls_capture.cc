#include "km/bpf/tls_capture.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/types.h>
#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>

#include "km/bpf/exec_audit.h"  // capture_libbpf_log, take_libbpf_log, sum_percpu_counter
#include "km/bpf_abi/tls_capture.h"
#include "tls_capture.skel.h"

namespace km::bpf {

static_assert(sizeof(km_tls_sandbox) == 8, "km_tls_sandbox layout");

namespace {

Error bpf_error(const std::string& what, int err) {
  std::string tail = take_libbpf_log();
  Error e = Error::from_errno(what, err < 0 ? -err : err);
  if (!tail.empty()) e = Error(ErrorCode::kUnavailable, e.to_string() + "\n" + tail);
  return std::move(e).with_hint(
      "TLS capture needs uprobes (CONFIG_UPROBE_EVENTS), BPF ring buffers (Linux 5.8+) and root");
}

}  // namespace

Result<std::unique_ptr<TlsCapture>> TlsCapture::open(const Options& options) {
  capture_libbpf_log();
  KM_TRY(probe_uprobe_support());
  std::vector<std::string> libraries = options.libraries;
  if (libraries.empty()) {
    KM_ASSIGN_OR_RETURN(std::string lib, default_libssl());
    libraries.push_back(std::move(lib));
  }
  std::unique_ptr<TlsCapture> c(new TlsCapture());
  c->skel_ = tls_capture__open();
  if (!c->skel_) {
    int err = errno;
    return fail(bpf_error("opening the TLS capture program", err));
  }
  c->skel_->rodata->resolve_sockets = options.resolve_sockets;
  if (int err = tls_capture__load(c->skel_); err != 0) return fail(bpf_error("loading the TLS capture program", err));
  c->rb_ = ring_buffer__new(bpf_map__fd(c->skel_->maps.events), &TlsCapture::on_record, c.get(), nullptr);
  if (!c->rb_) {
    int err = errno;
    return fail(bpf_error("opening the TLS capture ring buffer", err));
  }
  for (const auto& lib : libraries) KM_TRY(c->attach(lib));
  return c;
}

TlsCapture::~TlsCapture() {
  if (rb_) ring_buffer__free(rb_);
  for (auto* l : links_) bpf_link__destroy(l);
  if (skel_) tls_capture__destroy(skel_);
}

Status TlsCapture::attach(const std::string& path) {
  char real[PATH_MAX];
  if (!::realpath(path.c_str(), real)) return fail(Error::from_errno("TLS capture: library " + path));
  std::string abs = real;
  KM_ASSIGN_OR_RETURN(FileId id, file_id(abs));
  std::lock_guard<std::mutex> g(mu_);
  for (const auto& l : libraries_) {
    if (l.id == id) return ok();  // one set of probes per file, or every call would count twice
  }
  auto defined = elf_defined_functions(abs);
  if (!defined) return fail(std::move(defined).error().wrap("TLS capture: library " + path));
  bool openssl = defined->count("SSL_read") && defined->count("SSL_write");
  bool gnutls = defined->count("gnutls_record_recv") &&
                (defined->count("gnutls_record_send") || defined->count("gnutls_record_send2"));
  if (!openssl && !gnutls) {
    return fail(Error(ErrorCode::kInvalidArgument,
                      "TLS capture: " + path +
                          " defines no SSL_read/SSL_write (OpenSSL) or gnutls_record_send/recv (GnuTLS): "
                          "not a TLS library, or stripped")
                    .with_hint("name a libssl.so or libgnutls.so, or a program that bundles OpenSSL with its "
                               "symbols"));
  }
  struct Probe {
    const char* function;
    bpf_program* entry;
    bool with_return;
  };
  const Probe probes[] = {
      {"SSL_write", skel_->progs.km_ssl_write, true},
      {"SSL_read", skel_->progs.km_ssl_read, true},
      {"SSL_write_ex", skel_->progs.km_ssl_write_ex, true},
      {"SSL_read_ex", skel_->progs.km_ssl_read_ex, true},
      {"SSL_free", skel_->progs.km_tls_free, false},
      {"gnutls_record_send", skel_->progs.km_gnutls_send, true},
      {"gnutls_record_send2", skel_->progs.km_gnutls_send, true},
      {"gnutls_record_recv", skel_->progs.km_gnutls_recv, true},
      {"gnutls_deinit", skel_->progs.km_tls_free, false},
  };
  std::vector<bpf_link*> made;
  auto undo = [&] {
    for (auto* l : made) bpf_link__destroy(l);
  };
  TlsLibrary lib{abs, id, {}};
  for (const auto& p : probes) {
    if (!defined->count(p.function)) continue;
    if ((p.function[0] == 'S' && !openssl) || (p.function[0] == 'g' && !gnutls)) continue;
    for (bool ret : {false, true}) {
      if (ret && !p.with_return) continue;
      LIBBPF_OPTS(bpf_uprobe_opts, o, .retprobe = ret, .func_name = p.function);
      bpf_link* l = bpf_program__attach_uprobe_opts(ret ? skel_->progs.km_tls_return : p.entry, -1, abs.c_str(), 0, &o);
      if (!l) {
        int err = errno;
        Error e = bpf_error(std::string("TLS capture: attaching a ") + (ret ? "uretprobe" : "uprobe") + " to " +
                                p.function + " in " + abs,
                            err);
        undo();
        return fail(std::move(e));
      }
      made.push_back(l);
    }
    lib.functions.emplace_back(p.function);
  }
  links_.insert(links_.end(), made.begin(), made.end());
  libraries_.push_back(std::move(lib));
  return ok();
}

std::vector<TlsLibrary> TlsCapture::libraries() const {
  std::lock_guard<std::mutex> g(mu_);
  return libraries_;
}

bool TlsCapture::attached(const FileId& id) const {
  std::lock_guard<std::mutex> g(mu_);
  return std::any_of(libraries_.begin(), libraries_.end(), [&](const TlsLibrary& l) { return l.id == id; });
}

Status TlsCapture::watch(uint64_t cgroup_id, uint32_t sandbox, bool capture_payloads) {
  km_tls_sandbox v{sandbox, capture_payloads ? KM_TLS_SANDBOX_PAYLOADS : 0u};
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.sandboxes), &cgroup_id, &v, BPF_ANY) != 0) {
    return fail(Error::from_errno("adding cgroup " + std::to_string(cgroup_id) + " to the TLS capture"));
  }
  return ok();
}

Status TlsCapture::unwatch(uint64_t cgroup_id) {
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.sandboxes), &cgroup_id) != 0 && errno != ENOENT) {
    return fail(Error::from_errno("removing cgroup " + std::to_string(cgroup_id) + " from the TLS capture"));
  }
  return ok();
}

int TlsCapture::on_record(void* self, void* data, size_t size) {
  auto* c = static_cast<TlsCapture*>(self);
  auto r = decode_tls_event(data, size);
  if (r && c->deliver_) {
    (*c->deliver_)(*r);
    ++c->delivered_;
  }
  return 0;
}

Result<int> TlsCapture::poll(int timeout_ms, const std::function<void(const TlsRecord&)>& deliver) {
  deliver_ = &deliver;
  delivered_ = 0;
  int n = ring_buffer__poll(rb_, timeout_ms);
  deliver_ = nullptr;
  if (n < 0 && n != -EINTR) return fail(Error::from_errno("polling the TLS capture", -n));
  return delivered_;
}

uint64_t TlsCapture::lost() const { return sum_percpu_counter(bpf_map__fd(skel_->maps.lost)); }

}  // namespace km::bpf
