#include "km/sandbox/egress.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <nftables/libnftables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "km/base/file.h"
#include "km/sys/netlink.h"

namespace km::sandbox {

std::string link_ruleset(const NetSpec& net) {
  std::string peer = net.peer_address;
  std::string dns = std::to_string(kEnforcerDnsPort);
  std::string proxy = std::to_string(net.proxy_port);
  std::string in = std::string("iifname \"") + kLinkIfname + "\" ";
  return "table inet km {\n"
         "  chain prerouting {\n"
         "    type nat hook prerouting priority dstnat; policy accept;\n"
         "    " + in + "ip daddr " + peer + " tcp dport { " + dns + ", " + proxy + " } accept\n"
         "    " + in + "ip daddr " + peer + " udp dport " + dns + " accept\n"
         "    " + in + "udp dport 53 redirect to :" + dns + "\n"
         "    " + in + "tcp dport 53 redirect to :" + dns + "\n"
         "    " + in + "meta l4proto tcp redirect to :" + proxy + "\n"
         "  }\n"
         "  chain input {\n"
         "    type filter hook input priority filter; policy drop;\n"
         "    iifname \"lo\" accept\n"
         "    " + in + "ip daddr " + peer + " tcp dport { " + dns + ", " + proxy + " } accept\n"
         "    " + in + "ip daddr " + peer + " udp dport " + dns + " accept\n"
         "    " + in + "ct state related meta l4proto icmp accept\n"
         "  }\n"
         "  chain guard {\n"
         "    type filter hook prerouting priority raw; policy accept;\n"
         "    " + in + "meta l4proto tcp accept\n"
         "    " + in + "udp dport 53 accept\n"
         "    " + in + "limit rate 200/second burst 200 packets log group " + std::to_string(kNflogGroup) + " snaplen 64\n"
         "    " + in + "drop\n"
         "  }\n"
         "  chain forward {\n"
         "    type filter hook forward priority filter; policy drop;\n"
         "  }\n"
         "}\n";
}

Status apply_ruleset(int netns_fd, const std::string& ruleset) {
  Status out = ok();
  std::thread t([&] {
    auto guard = sys::NetnsGuard::enter(netns_fd);
    if (!guard) {
      out = fail(std::move(guard).error());
      return;
    }
    nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!ctx) {
      out = fail(ErrorCode::kUnavailable, "libnftables: cannot create a context");
      return;
    }
    nft_ctx_buffer_error(ctx);
    std::string text = "flush ruleset\n" + ruleset;
    if (nft_run_cmd_from_buffer(ctx, text.c_str()) != 0) {
      const char* err = nft_ctx_get_error_buffer(ctx);
      out = fail(Error(ErrorCode::kUnavailable, std::string("nftables: ") + (err ? err : "failed"))
                     .with_hint("km needs nf_tables with NAT (CONFIG_NF_TABLES, CONFIG_NFT_NAT, CONFIG_NFT_REDIR)"));
    }
    nft_ctx_free(ctx);
  });
  t.join();
  return out;
}

namespace {

Result<UniqueFd> bound_socket(int type, const std::string& address, uint16_t port) {
  UniqueFd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
  if (!fd) return fail(Error::from_errno("socket"));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1) return fail(ErrorCode::kInvalidArgument, "bad link address " + address);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    return fail(Error::from_errno("bind " + address + ":" + std::to_string(port)));
  }
  if (type == SOCK_STREAM && ::listen(fd.get(), 1024) != 0) return fail(Error::from_errno("listen"));
  return fd;
}

}  // namespace

namespace {

// A netlink socket subscribed to the link rules' NFLOG group, so the enforcer hears about the
// packets the rules drop (UDP other than DNS, ICMP, ...) and can audit them.
Result<UniqueFd> nflog_socket() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER));
  if (!fd) return fail(Error::from_errno("socket(NETLINK_NETFILTER)"));
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return fail(Error::from_errno("bind(nflog)"));
  auto config = [&](uint16_t attr_type, const void* data, size_t len, uint32_t seq) -> Status {
    alignas(nlmsghdr) char buf[128] = {};
    auto* h = reinterpret_cast<nlmsghdr*>(buf);
    h->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    h->nlmsg_seq = seq;
    auto* g = reinterpret_cast<nfgenmsg*>(buf + NLMSG_HDRLEN);
    g->nfgen_family = AF_UNSPEC;
    g->version = NFNETLINK_V0;
    g->res_id = htons(kNflogGroup);
    size_t off = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
    auto* a = reinterpret_cast<nlattr*>(buf + off);
    a->nla_type = attr_type;
    a->nla_len = static_cast<uint16_t>(NLA_HDRLEN + len);
    std::memcpy(buf + off + NLA_HDRLEN, data, len);
    h->nlmsg_len = static_cast<uint32_t>(off + NLA_ALIGN(a->nla_len));
    if (::send(fd.get(), buf, h->nlmsg_len, 0) < 0) return fail(Error::from_errno("nflog config"));
    char reply[256];
    ssize_t n = ::recv(fd.get(), reply, sizeof reply, 0);
    if (n < static_cast<ssize_t>(NLMSG_HDRLEN + sizeof(nlmsgerr))) return fail(Error::from_errno("nflog config reply"));
    auto* r = reinterpret_cast<nlmsghdr*>(reply);
    if (r->nlmsg_type == NLMSG_ERROR) {
      auto* e = static_cast<nlmsgerr*>(NLMSG_DATA(r));
      if (e->error != 0) return fail(Error::from_errno("nflog config", -e->error));
    }
    return ok();
  };
  nfulnl_msg_config_cmd cmd{NFULNL_CFG_CMD_BIND};
  KM_TRY(config(NFULA_CFG_CMD, &cmd, sizeof cmd, 1));
  nfulnl_msg_config_mode mode{};
  mode.copy_range = htonl(64);
  mode.copy_mode = NFULNL_COPY_PACKET;
  KM_TRY(config(NFULA_CFG_MODE, &mode, sizeof mode, 2));
  return fd;
}

}  // namespace

Result<EnforcerSockets> open_enforcer_sockets(int netns_fd, const NetSpec& net) {
  Result<EnforcerSockets> out = fail(ErrorCode::kInternal, "socket thread did not run");
  std::thread t([&] {
    auto guard = sys::NetnsGuard::enter(netns_fd);
    if (!guard) {
      out = fail(std::move(guard).error());
      return;
    }
    EnforcerSockets s;
    auto u = bound_socket(SOCK_DGRAM, net.peer_address, kEnforcerDnsPort);
    auto d = bound_socket(SOCK_STREAM, net.peer_address, kEnforcerDnsPort);
    auto p = bound_socket(SOCK_STREAM, net.peer_address, net.proxy_port);
    auto l = nflog_socket();
    if (!u) out = fail(std::move(u).error().wrap("enforcer DNS socket (udp)"));
    else if (!d) out = fail(std::move(d).error().wrap("enforcer DNS socket (tcp)"));
    else if (!p) out = fail(std::move(p).error().wrap("enforcer proxy socket"));
    else if (!l) out = fail(std::move(l).error().wrap("enforcer packet log").with_hint("km needs nfnetlink_log (CONFIG_NETFILTER_NETLINK_LOG)"));
    else out = EnforcerSockets{std::move(*u), std::move(*d), std::move(*p), std::move(*l)};
  });
  t.join();
  return out;
}

Result<EnforcerProcess> spawn_enforcer(const std::string& exe, const std::string& config_path, const EnforcerSockets& s,
                                       int audit_fd, int log_fd, const std::vector<int>& extra_fds) {
  if (extra_fds.size() > 8) return fail(ErrorCode::kInvalidArgument, "too many descriptors for the enforcer");
  int extra[8];
  size_t nextra = extra_fds.size();
  for (size_t i = 0; i < nextra; ++i) extra[i] = extra_fds[i];
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) return fail(Error::from_errno("pipe"));
  UniqueFd ready_r(ready[0]), ready_w(ready[1]);
  int fds[7] = {s.dns_udp.get(), s.dns_tcp.get(), s.proxy.get(), audit_fd, ready_w.get(), s.nflog.get(), log_fd};
  std::string arg0 = "km-enforcer", arg1 = "--config";
  char* argv[] = {arg0.data(), arg1.data(), const_cast<char*>(config_path.c_str()), nullptr};
  char* envp[] = {nullptr};
  pid_t pid = ::fork();
  if (pid < 0) return fail(Error::from_errno("fork (enforcer)"));
  if (pid == 0) {
    // Child of a multithreaded parent: async-signal-safe calls only until exec.
    // Until it has recorded itself and said so, it dies with kmd (no unrecorded orphans).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    ::setsid();
    int high[7];
    int xhigh[8];
    for (int i = 0; i < 7; ++i) high[i] = ::fcntl(fds[i], F_DUPFD_CLOEXEC, 100);
    for (size_t i = 0; i < nextra; ++i) xhigh[i] = ::fcntl(extra[i], F_DUPFD_CLOEXEC, 100);
    for (int i = 0; i < 6; ++i) ::dup2(high[i], 3 + i);
    for (size_t i = 0; i < nextra; ++i) ::dup2(xhigh[i], 9 + static_cast<int>(i));
    ::dup2(high[6], 1);
    ::dup2(high[6], 2);
    int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) ::dup2(devnull, 0);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(exe.c_str(), argv, envp);
    ::_exit(127);
  }
  ready_w.reset();
  EnforcerProcess p{pid, sys::process_start_time(pid)};
  // Reap it if it ends while this kmd lives; after a kmd restart, init does.
  std::thread([pid] { ::waitpid(pid, nullptr, 0); }).detach();
  pollfd pfd{ready_r.get(), POLLIN, 0};
  int n;
  do {
    n = ::poll(&pfd, 1, 10000);
  } while (n < 0 && errno == EINTR);
  char byte = 0;
  if (n == 1 && ::read(ready_r.get(), &byte, 1) == 1 && byte == '1') return p;
  sys::kill_process(p);
  return fail(Error(ErrorCode::kUnavailable, n == 0 ? "the enforcer did not become ready within 10 s"
                                                    : "the enforcer exited while starting")
                  .with_hint("see the sandbox's enforcer.log"));
}

}  // namespace km::sandbox
