// Unix-domain SOCK_SEQPACKET messaging with file-descriptor passing and peer credentials.
//
// Every message is one datagram: a payload (JSON text in km's protocols) of at most
// kMaxMessage bytes plus up to kMaxFds descriptors. Received descriptors are owned by the
// caller (UniqueFd) and are close-on-exec. All calls retry EINTR. Thread-safety: a socket may
// be used by one reader and one writer thread at a time.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "km/base/result.h"
#include "km/base/unique_fd.h"

namespace km::sys {

inline constexpr size_t kMaxMessage = 16u << 20;
inline constexpr size_t kMaxFds = 8;

struct Message {
  std::string data;
  std::vector<UniqueFd> fds;
};

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Creates, binds and listens on `path` (an existing socket file is replaced) with `mode`.
Result<UniqueFd> listen_unix(const std::string& path, mode_t mode, int backlog = 128);
Result<UniqueFd> connect_unix(const std::string& path);
Result<UniqueFd> accept_unix(int listen_fd);
Result<std::pair<UniqueFd, UniqueFd>> seqpacket_pair();

// Sends one message; `fds` are borrowed (not closed).
Status send_message(int sock, std::string_view data, const std::vector<int>& fds = {});
// Receives one message. A closed peer is an error with code kUnavailable. Truncated
// messages (over kMaxMessage) are refused.
Result<Message> recv_message(int sock);
// As recv_message, but gives up after `timeout_ms` (kUnavailable with "timed out").
Result<Message> recv_message_timeout(int sock, int timeout_ms);

Result<PeerCred> peer_credentials(int sock);

// Lets `sock` send datagrams up to kMaxMessage (a SEQPACKET datagram must fit the sender's
// buffer). Needs CAP_NET_ADMIN (kmd); returns an error otherwise.
Status allow_large_messages(int sock);

}  // namespace km::sys
