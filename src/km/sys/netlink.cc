#include "km/sys/netlink.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

namespace km::sys {

namespace {

// NLMSG_NEXT without its cast from char* (which clang's -Wcast-align reports): messages in a
// reply are NLMSG_ALIGNTO-aligned within a buffer aligned for nlmsghdr.
nlmsghdr* next_message(nlmsghdr* r, ssize_t& len) {
  size_t step = NLMSG_ALIGN(r->nlmsg_len);
  len -= static_cast<ssize_t>(step);
  return reinterpret_cast<nlmsghdr*>(reinterpret_cast<uintptr_t>(r) + step);
}

// Builds one netlink request with nested attributes.
class Builder {
 public:
  Builder(uint16_t type, uint16_t flags) {
    buf_.resize(NLMSG_HDRLEN);
    auto* h = hdr();
    h->nlmsg_type = type;
    h->nlmsg_flags = static_cast<uint16_t>(flags | NLM_F_REQUEST | NLM_F_ACK);
  }
  template <typename T>
  void put(const T& v) {
    append(&v, sizeof v);
  }
  void attr(uint16_t type, const void* data, size_t len) {
    rtattr a{};
    a.rta_type = type;
    a.rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
    size_t start = buf_.size();
    append(&a, sizeof a);
    append(data, len);
    buf_.resize(start + RTA_ALIGN(a.rta_len), 0);
  }
  void attr_str(uint16_t type, const std::string& s) { attr(type, s.c_str(), s.size() + 1); }
  void attr_u32(uint16_t type, uint32_t v) { attr(type, &v, sizeof v); }
  size_t begin_nest(uint16_t type) {
    size_t start = buf_.size();
    rtattr a{};
    a.rta_type = type;
    append(&a, sizeof a);
    return start;
  }
  void end_nest(size_t start) {
    reinterpret_cast<rtattr*>(buf_.data() + start)->rta_len = static_cast<uint16_t>(buf_.size() - start);
  }
  void* data() {
    hdr()->nlmsg_len = static_cast<uint32_t>(buf_.size());
    return buf_.data();
  }
  size_t size() const { return buf_.size(); }

 private:
  nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }
  // insert + pad rather than resize + memcpy: GCC 12 -O3 reports a false -Wstringop-overflow
  // for the memcpy form once add_default_route_v4 inlines it.
  void append(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    buf_.insert(buf_.end(), c, c + n);
    buf_.insert(buf_.end(), NLMSG_ALIGN(n) - n, '\0');
  }
  std::vector<char> buf_;
};

}  // namespace

Result<Netlink> Netlink::open() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return fail(Error::from_errno("socket(AF_NETLINK)"));
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    return fail(Error::from_errno("bind netlink"));
  }
  return Netlink(std::move(fd));
}

Result<Netlink> Netlink::open_in(int netns_fd) {
  KM_ASSIGN_OR_RETURN(NetnsGuard guard, NetnsGuard::enter(netns_fd));
  return open();
}

Status Netlink::request(void* msg, size_t len) {
  auto* h = static_cast<nlmsghdr*>(msg);
  h->nlmsg_seq = seq_++;
  ssize_t n;
  do {
    n = ::send(fd_.get(), msg, len, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return fail(Error::from_errno("netlink send"));
  alignas(nlmsghdr) char buf[8192];
  for (;;) {
    do {
      n = ::recv(fd_.get(), buf, sizeof buf, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return fail(Error::from_errno("netlink recv"));
    for (auto* r = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(r, static_cast<unsigned>(n)); r = next_message(r, n)) {
      if (r->nlmsg_seq != h->nlmsg_seq) continue;
      if (r->nlmsg_type == NLMSG_ERROR) {
        auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(r));
        if (e->error == 0) return ok();
        return fail(Error::from_errno("rtnetlink", -e->error));
      }
    }
  }
}

Status Netlink::create_veth(const std::string& name, const std::string& peer_name, int peer_netns_fd) {
  Builder b(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  b.put(ifi);
  b.attr_str(IFLA_IFNAME, name);
  size_t linkinfo = b.begin_nest(IFLA_LINKINFO);
  b.attr_str(IFLA_INFO_KIND, "veth");
  size_t data = b.begin_nest(IFLA_INFO_DATA);
  size_t peer = b.begin_nest(VETH_INFO_PEER);
  ifinfomsg pifi{};
  pifi.ifi_family = AF_UNSPEC;
  b.put(pifi);
  b.attr_str(IFLA_IFNAME, peer_name);
  b.attr_u32(IFLA_NET_NS_FD, static_cast<uint32_t>(peer_netns_fd));
  b.end_nest(peer);
  b.end_nest(data);
  b.end_nest(linkinfo);
  Status s = request(b.data(), b.size());
  if (!s) return fail(std::move(s).error().wrap("creating veth " + name));
  return ok();
}

Result<int> Netlink::link_index(const std::string& name) {
  Builder b(RTM_GETLINK, 0);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  b.put(ifi);
  b.attr_str(IFLA_IFNAME, name);
  auto* h = static_cast<nlmsghdr*>(b.data());
  h->nlmsg_flags = NLM_F_REQUEST;
  h->nlmsg_seq = seq_++;
  if (::send(fd_.get(), h, b.size(), 0) < 0) return fail(Error::from_errno("netlink send"));
  alignas(nlmsghdr) char buf[16384];
  ssize_t n;
  do {
    n = ::recv(fd_.get(), buf, sizeof buf, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return fail(Error::from_errno("netlink recv"));
  for (auto* r = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(r, static_cast<unsigned>(n)); r = next_message(r, n)) {
    if (r->nlmsg_type == NLMSG_ERROR) {
      auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(r));
      return fail(Error::from_errno("rtnetlink getlink " + name, -e->error));
    }
    if (r->nlmsg_type == RTM_NEWLINK) {
      return static_cast<ifinfomsg*>(NLMSG_DATA(r))->ifi_index;
    }
  }
  return fail(ErrorCode::kNotFound, "no link named " + name);
}

Status Netlink::set_up(int ifindex) {
  Builder b(RTM_NEWLINK, 0);
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = ifindex;
  ifi.ifi_flags = IFF_UP;
  ifi.ifi_change = IFF_UP;
  b.put(ifi);
  return request(b.data(), b.size());
}

Status Netlink::add_ipv4(int ifindex, uint32_t addr_be, int prefix_len) {
  Builder b(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
  ifaddrmsg ifa{};
  ifa.ifa_family = AF_INET;
  ifa.ifa_prefixlen = static_cast<unsigned char>(prefix_len);
  ifa.ifa_index = static_cast<unsigned>(ifindex);
  b.put(ifa);
  b.attr(IFA_LOCAL, &addr_be, 4);
  b.attr(IFA_ADDRESS, &addr_be, 4);
  return request(b.data(), b.size());
}

Status Netlink::add_default_route_v4(int ifindex, uint32_t gateway_be) {
  Builder b(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
  rtmsg rt{};
  rt.rtm_family = AF_INET;
  rt.rtm_dst_len = 0;
  rt.rtm_table = RT_TABLE_MAIN;
  rt.rtm_protocol = RTPROT_STATIC;
  rt.rtm_scope = RT_SCOPE_UNIVERSE;
  rt.rtm_type = RTN_UNICAST;
  b.put(rt);
  b.attr(RTA_GATEWAY, &gateway_be, 4);
  auto oif = static_cast<uint32_t>(ifindex);
  b.attr(RTA_OIF, &oif, 4);
  return request(b.data(), b.size());
}

Result<NetnsGuard> NetnsGuard::enter(int netns_fd) {
  UniqueFd home(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!home) return fail(Error::from_errno("open /proc/thread-self/ns/net"));
  if (::setns(netns_fd, CLONE_NEWNET) != 0) return fail(Error::from_errno("setns(net)"));
  return NetnsGuard(std::move(home));
}

NetnsGuard::~NetnsGuard() {
  if (home_) {
    // Failing to return would leave this thread in a sandbox's namespace: never continue.
    if (::setns(home_.get(), CLONE_NEWNET) != 0) std::abort();
  }
}

Result<UniqueFd> create_pinned_netns(const std::string& pin_path) {
  Result<UniqueFd> out = fail(ErrorCode::kInternal, "netns thread did not run");
  // unshare(CLONE_NEWNET) affects only the calling thread; do it in a throwaway thread.
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      out = fail(Error::from_errno("unshare(CLONE_NEWNET)"));
      return;
    }
    int fd = ::open(pin_path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      out = fail(Error::from_errno("creating " + pin_path));
      return;
    }
    ::close(fd);
    if (::mount("/proc/thread-self/ns/net", pin_path.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      out = fail(Error::from_errno("bind-mounting netns at " + pin_path));
      ::unlink(pin_path.c_str());
      return;
    }
    auto nl = Netlink::open();
    if (!nl) {
      out = fail(std::move(nl).error());
      return;
    }
    auto lo = nl->link_index("lo");
    if (!lo || !nl->set_up(*lo)) {
      out = fail(ErrorCode::kInternal, "cannot bring up lo in the link namespace");
      return;
    }
    UniqueFd ns(::open(pin_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns) {
      out = fail(Error::from_errno("open " + pin_path));
      return;
    }
    out = std::move(ns);
  });
  t.join();
  return out;
}

Status remove_pinned_netns(const std::string& pin_path) {
  if (::umount2(pin_path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return fail(Error::from_errno("umount " + pin_path));
  }
  if (::unlink(pin_path.c_str()) != 0 && errno != ENOENT) return fail(Error::from_errno("unlink " + pin_path));
  return ok();
}

}  // namespace km::sys
