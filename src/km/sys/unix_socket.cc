#include "km/sys/unix_socket.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace km::sys {

namespace {

Result<sockaddr_un> address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return fail(ErrorCode::kInvalidArgument, "socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

}  // namespace

Result<UniqueFd> listen_unix(const std::string& path, mode_t mode, int backlog) {
  KM_ASSIGN_OR_RETURN(sockaddr_un addr, address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return fail(Error::from_errno("socket"));
  ::unlink(path.c_str());
  // Bind with a restrictive umask so the socket never exists with wider permissions.
  mode_t old = ::umask(0777 & ~mode);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = errno;
  ::umask(old);
  if (rc != 0) return fail(Error::from_errno("bind " + path, err));
  if (::chmod(path.c_str(), mode) != 0) return fail(Error::from_errno("chmod " + path));
  if (::listen(fd.get(), backlog) != 0) return fail(Error::from_errno("listen " + path));
  return fd;
}

Result<UniqueFd> connect_unix(const std::string& path) {
  KM_ASSIGN_OR_RETURN(sockaddr_un addr, address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return fail(Error::from_errno("socket"));
  int rc;
  do {
    rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) return fail(Error::from_errno("connect " + path));
  return fd;
}

Result<UniqueFd> accept_unix(int listen_fd) {
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    if (errno == EINTR || errno == ECONNABORTED) continue;
    return fail(Error::from_errno("accept"));
  }
}

Result<std::pair<UniqueFd, UniqueFd>> seqpacket_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return fail(Error::from_errno("socketpair"));
  }
  return std::make_pair(UniqueFd(sv[0]), UniqueFd(sv[1]));
}

Status send_message(int sock, std::string_view data, const std::vector<int>& fds) {
  if (data.size() > kMaxMessage) return fail(ErrorCode::kInvalidArgument, "message too large");
  if (fds.size() > kMaxFds) return fail(ErrorCode::kInvalidArgument, "too many descriptors");
  iovec iov{const_cast<char*>(data.data()), data.size()};
  char dummy = 0;
  if (data.empty()) iov = iovec{&dummy, 1};  // a zero-length datagram cannot carry fds
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) return ok();
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) {
      return fail(Error(ErrorCode::kUnavailable, "peer closed the connection"));
    }
    return fail(Error::from_errno("sendmsg"));
  }
}

Result<Message> recv_message(int sock) {
  // Learn the datagram's size first, so a small message costs a small buffer.
  char probe;
  ssize_t size;
  do {
    size = ::recv(sock, &probe, 1, MSG_PEEK | MSG_TRUNC);
  } while (size < 0 && errno == EINTR);
  if (size < 0) {
    if (errno == ECONNRESET) return fail(Error(ErrorCode::kUnavailable, "peer closed the connection"));
    return fail(Error::from_errno("recv"));
  }
  if (size == 0) return fail(Error(ErrorCode::kUnavailable, "peer closed the connection"));
  if (static_cast<size_t>(size) > kMaxMessage) {
    (void)::recv(sock, &probe, 1, 0);  // drop it
    return fail(ErrorCode::kInvalidArgument, "message of " + std::to_string(size) + " bytes is over the limit");
  }
  Message out;
  out.data.resize(static_cast<size_t>(size));
  iovec iov{out.data.data(), out.data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == ECONNRESET) return fail(Error(ErrorCode::kUnavailable, "peer closed the connection"));
    return fail(Error::from_errno("recvmsg"));
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int fds[kMaxFds + 1];
      std::memcpy(fds, CMSG_DATA(c), sizeof(int) * std::min(count, kMaxFds + 1));
      for (size_t i = 0; i < count && i <= kMaxFds; ++i) out.fds.emplace_back(fds[i]);
    }
  }
  if (n == 0) return fail(Error(ErrorCode::kUnavailable, "peer closed the connection"));
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    return fail(ErrorCode::kInvalidArgument, "message truncated");
  }
  out.data.resize(static_cast<size_t>(n));
  if (out.data.size() == 1 && out.data[0] == 0) out.data.clear();
  return out;
}

Result<Message> recv_message_timeout(int sock, int timeout_ms) {
  pollfd p{sock, POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, timeout_ms);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) return fail(Error::from_errno("poll"));
  if (rc == 0) return fail(Error(ErrorCode::kUnavailable, "timed out"));
  return recv_message(sock);
}

Status allow_large_messages(int sock) {
  int size = static_cast<int>(kMaxMessage + (64u << 10));
  if (::setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0) {
    return fail(Error::from_errno("setsockopt SO_SNDBUFFORCE"));
  }
  return ok();
}

Result<PeerCred> peer_credentials(int sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return fail(Error::from_errno("getsockopt SO_PEERCRED"));
  }
  return PeerCred{cred.pid, cred.uid, cred.gid};
}

}  // namespace km::sys
