#include "km/daemon/server.h"

#include <sys/mman.h>
#include <unistd.h>

#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "km/sys/unix_socket.h"

namespace km::daemon {

using Json = nlohmann::json;

std::string Server::refuse(int conn) {
  auto cred = sys::peer_credentials(conn);
  if (!cred) return "cannot read peer credentials";
  if (cred->uid == 0) return "";
  if (!group_.empty()) {
    if (struct group* g = ::getgrnam(group_.c_str())) {
      if (cred->gid == g->gr_gid) return "";
      if (passwd* pw = ::getpwuid(cred->uid)) {
        int n = 64;
        std::vector<gid_t> groups(static_cast<size_t>(n));
        if (::getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n) >= 0) {
          for (int i = 0; i < n; ++i) {
            if (groups[static_cast<size_t>(i)] == g->gr_gid) return "";
          }
        }
      }
    }
  }
  return "permission denied: kmd accepts root" + (group_.empty() ? std::string() : " and members of the group " + group_) +
         " (you are uid " + std::to_string(cred->uid) + ")";
}

void Server::connection(UniqueFd conn) {
  (void)sys::allow_large_messages(conn.get());  // `km list` of thousands of sandboxes
  std::string why = refuse(conn.get());
  if (!why.empty()) {
    (void)sys::send_message(conn.get(), Json{{"error", why}, {"code", "permission-denied"}}.dump());
    log_.warn("refused a client", {{"why", why}});
    return;
  }
  for (;;) {
    auto msg = sys::recv_message(conn.get());
    if (!msg) return;
    Json req = Json::parse(msg->data, nullptr, false);
    Json reply;
    if (!req.is_object()) {
      reply = Json{{"error", "malformed request: not a JSON object"}, {"code", "invalid-argument"}};
    } else {
      reply = service_.handle(req, msg->fds, conn.get());
    }
    // A large listing travels in a memory file passed with the reply, not as a JSON string (no
    // escaping on one side and unescaping on the other).
    std::vector<int> out_fds;
    UniqueFd rows_fd;
    if (reply.is_object() && reply.contains("rows") && reply["rows"].is_string() &&
        reply["rows"].get_ref<const std::string&>().size() > 65536) {
      const std::string& rows = reply["rows"].get_ref<const std::string&>();
      rows_fd = UniqueFd(::memfd_create("km-rows", MFD_CLOEXEC));
      size_t off = 0;
      while (rows_fd && off < rows.size()) {
        ssize_t n = ::write(rows_fd.get(), rows.data() + off, rows.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      if (rows_fd && off == rows.size()) {
        reply.erase("rows");
        reply["rows_in_fd"] = off;
        out_fds.push_back(rows_fd.get());
      }
    }
    if (!sys::send_message(conn.get(), reply.dump(-1, ' ', false, Json::error_handler_t::replace), out_fds)) return;
  }
}

Status Server::serve(int listen_fd, const std::atomic<bool>& stop) {
  while (!stop.load()) {
    pollfd p{listen_fd, POLLIN, 0};
    int rc = ::poll(&p, 1, 500);
    if (rc <= 0) continue;
    auto c = sys::accept_unix(listen_fd);
    if (!c) continue;
    std::thread([this, conn = std::move(*c)]() mutable { connection(std::move(conn)); }).detach();
  }
  return ok();
}

}  // namespace km::daemon
