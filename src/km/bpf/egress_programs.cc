#include "km/bpf/egress_programs.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/types.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <iterator>
#include <sys/stat.h>
#include <unistd.h>

#include "egress.skel.h"
#include "km/bpf/exec_audit.h"
#include "km/bpf_abi/egress.h"

namespace km::bpf {

static_assert(sizeof(km_egress_event) == KM_EGRESS_EVENT_SIZE, "km_egress_event layout");
static_assert(sizeof(km_allow) == KM_ALLOW_SIZE, "km_allow layout");

namespace {

Error bpf_failure(const std::string& what, int err) {
  Error e = Error::from_errno(what, err < 0 ? -err : err);
  std::string log = take_libbpf_log();  // the verifier's say, when a load failed
  if (!log.empty()) e = Error(ErrorCode::kUnavailable, e.to_string() + "\n" + log);
  return std::move(e).with_hint("kernel egress enforcement needs cgroup BPF (sock_addr, sockops, cgroup_skb), LPM tries and ring buffers");
}

uint32_t be32(const std::array<uint8_t, 4>& a) {
  uint32_t v;
  std::memcpy(&v, a.data(), 4);
  return v;
}

}  // namespace

uint64_t boot_ns_now() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Result<EgressEvent> decode_egress_event(const void* data, size_t size) {
  if (size != sizeof(km_egress_event)) return fail(ErrorCode::kInvalidArgument, "egress event of " + std::to_string(size) + " bytes");
  km_egress_event raw;
  std::memcpy(&raw, data, sizeof raw);
  EgressEvent e;
  e.type = static_cast<EgressEvent::Type>(raw.type);
  e.cgroup_id = raw.cgroup_id;
  e.pid = raw.pid;
  e.family = raw.family;
  std::memcpy(e.addr.data(), raw.addr, 16);
  e.port = raw.port;
  e.protocol = raw.protocol;
  e.comm.assign(raw.comm, strnlen(raw.comm, sizeof raw.comm));
  return e;
}

Result<std::unique_ptr<EgressPrograms>> EgressPrograms::load(const EgressSettings& s) {
  capture_libbpf_log();
  std::unique_ptr<EgressPrograms> p(new EgressPrograms());
  p->skel_ = egress__open();
  if (!p->skel_) return fail(bpf_failure("opening the egress programs", errno));
  auto* ro = p->skel_->rodata;
  ro->dns_ip4 = be32(s.dns_addr);
  ro->dns_port = htons(s.dns_port);
  ro->proxy_ip4 = be32(s.proxy_addr);
  ro->proxy_port = htons(s.proxy_port);
  ro->allow_loopback = s.allow_loopback;
  ro->allow_raw = s.allow_raw;
  ro->redirect_misses = s.redirect_misses;
  if (int err = egress__load(p->skel_); err != 0) return fail(bpf_failure("loading the egress programs", err));
  p->rb_ = ring_buffer__new(bpf_map__fd(p->skel_->maps.egress_events), &EgressPrograms::on_record, p.get(), nullptr);
  if (!p->rb_) return fail(bpf_failure("opening the egress event ring buffer", errno));
  return p;
}

EgressPrograms::~EgressPrograms() {
  if (rb_) ring_buffer__free(rb_);
  for (auto* l : links_) bpf_link__destroy(l);
  if (skel_) egress__destroy(skel_);
}

Status EgressPrograms::attach(int cgroup_fd, const std::vector<std::string>& only) {
  bpf_program* progs[] = {skel_->progs.km_connect4, skel_->progs.km_connect6, skel_->progs.km_sendmsg4,
                          skel_->progs.km_sendmsg6, skel_->progs.km_sock_create, skel_->progs.km_sockops,
                          skel_->progs.km_skb_egress};
  for (bpf_program* prog : progs) {
    if (!only.empty() && std::find(only.begin(), only.end(), bpf_program__name(prog)) == only.end()) continue;
    bpf_link* l = bpf_program__attach_cgroup(prog, cgroup_fd);
    if (!l) return fail(bpf_failure(std::string("attaching ") + bpf_program__name(prog), errno));
    links_.push_back(l);
  }
  return ok();
}

Status allow_in(int allow4_fd, int allow6_fd, const AllowEntry& e) {
  if (e.ports.size() > KM_PORT_RANGES) return fail(ErrorCode::kInvalidArgument, "at most 8 port ranges per allowlist entry");
  km_allow v{};
  v.expires_ns = e.expires_boot_ns;
  v.flags = e.redirect ? KM_ALLOW_REDIRECT : 0;
  v.nranges = static_cast<__u32>(e.ports.size());
  for (size_t i = 0; i < e.ports.size(); ++i) v.ranges[i] = {e.ports[i].lo, e.ports[i].hi};
  int rc;
  if (e.family == AF_INET) {
    km_lpm4 k{static_cast<__u32>(e.prefix_len), {}};
    std::memcpy(k.addr, e.addr.data(), 4);
    rc = bpf_map_update_elem(allow4_fd, &k, &v, BPF_ANY);
  } else {
    km_lpm6 k{static_cast<__u32>(e.prefix_len), {}};
    std::memcpy(k.addr, e.addr.data(), 16);
    rc = bpf_map_update_elem(allow6_fd, &k, &v, BPF_ANY);
  }
  if (rc != 0) return fail(bpf_failure("updating the allowlist", errno));
  return ok();
}

Status remove_in(int allow4_fd, int allow6_fd, int family, const std::array<uint8_t, 16>& addr, int prefix_len) {
  int rc;
  if (family == AF_INET) {
    km_lpm4 k{static_cast<__u32>(prefix_len), {}};
    std::memcpy(k.addr, addr.data(), 4);
    rc = bpf_map_delete_elem(allow4_fd, &k);
  } else {
    km_lpm6 k{static_cast<__u32>(prefix_len), {}};
    std::memcpy(k.addr, addr.data(), 16);
    rc = bpf_map_delete_elem(allow6_fd, &k);
  }
  if (rc != 0 && errno != ENOENT) return fail(bpf_failure("removing from the allowlist", errno));
  return ok();
}

std::optional<OriginalDestination> original_destination_in(int port_cookie_fd, int orig_dst_fd, uint16_t client_port) {
  __u32 port = client_port;
  __u64 cookie = 0;
  if (bpf_map_lookup_elem(port_cookie_fd, &port, &cookie) != 0) return std::nullopt;
  km_orig_dst o{};
  if (bpf_map_lookup_elem(orig_dst_fd, &cookie, &o) != 0) return std::nullopt;
  OriginalDestination d;
  d.family = o.family;
  std::memcpy(d.addr.data(), o.addr, 16);
  d.port = o.port;
  return d;
}

namespace {
const char* const kPinnedMaps[] = {"allow4", "allow6", "orig_dst", "port_cookie", "egress_events"};
const char* const kPinnedLinks[] = {"connect4", "connect6", "sendmsg4", "sendmsg6", "sock_create", "sockops", "skb_egress"};
}  // namespace

Status EgressPrograms::pin(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return fail(Error::from_errno("mkdir " + dir));
  for (size_t i = 0; i < links_.size() && i < std::size(kPinnedLinks); ++i) {
    std::string path = dir + "/" + kPinnedLinks[i];
    if (int err = bpf_link__pin(links_[i], path.c_str()); err != 0) return fail(bpf_failure("pinning " + path, err));
  }
  bpf_map* maps[] = {skel_->maps.allow4, skel_->maps.allow6, skel_->maps.orig_dst, skel_->maps.port_cookie, skel_->maps.egress_events};
  for (size_t i = 0; i < std::size(maps); ++i) {
    std::string path = dir + "/" + kPinnedMaps[i];
    if (int err = bpf_map__pin(maps[i], path.c_str()); err != 0) return fail(bpf_failure("pinning " + path, err));
  }
  return ok();
}

Result<EgressMaps> open_pinned_egress_maps(const std::string& dir) {
  EgressMaps m;
  UniqueFd* slots[] = {&m.allow4, &m.allow6, &m.orig_dst, &m.port_cookie, &m.events};
  for (size_t i = 0; i < std::size(slots); ++i) {
    std::string path = dir + "/" + kPinnedMaps[i];
    *slots[i] = UniqueFd(bpf_obj_get(path.c_str()));
    if (!*slots[i]) return fail(Error::from_errno("opening " + path));
  }
  return m;
}

Status unpin_egress(const std::string& dir) {
  for (const char* n : kPinnedLinks) ::unlink((dir + "/" + n).c_str());
  for (const char* n : kPinnedMaps) ::unlink((dir + "/" + n).c_str());
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) return fail(Error::from_errno("rmdir " + dir));
  return ok();
}

Status EgressPrograms::allow(const AllowEntry& e) {
  return allow_in(bpf_map__fd(skel_->maps.allow4), bpf_map__fd(skel_->maps.allow6), e);
}

Status EgressPrograms::remove(int family, const std::array<uint8_t, 16>& addr, int prefix_len) {
  return remove_in(bpf_map__fd(skel_->maps.allow4), bpf_map__fd(skel_->maps.allow6), family, addr, prefix_len);
}

std::optional<OriginalDestination> EgressPrograms::original_destination(uint16_t client_port) const {
  return original_destination_in(bpf_map__fd(skel_->maps.port_cookie), bpf_map__fd(skel_->maps.orig_dst), client_port);
}

int EgressPrograms::on_record(void* self, void* data, size_t size) {
  auto* p = static_cast<EgressPrograms*>(self);
  auto e = decode_egress_event(data, size);
  if (e && p->deliver_) {
    (*p->deliver_)(*e);
    ++p->delivered_;
  }
  return 0;
}

Result<int> EgressPrograms::poll_events(int timeout_ms, const std::function<void(const EgressEvent&)>& deliver) {
  deliver_ = &deliver;
  delivered_ = 0;
  int n = ring_buffer__poll(rb_, timeout_ms);
  deliver_ = nullptr;
  if (n < 0 && n != -EINTR) return fail(Error::from_errno("polling egress events", -n));
  return delivered_;
}

uint64_t EgressPrograms::lost() const { return sum_percpu_counter(bpf_map__fd(skel_->maps.egress_lost)); }

}  // namespace km::bpf
