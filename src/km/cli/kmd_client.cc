#include "km/cli/kmd_client.h"

#include <unistd.h>

#include <cstdlib>

#include "km/sys/unix_socket.h"

namespace km::cli {

using Json = nlohmann::json;

std::string default_socket() {
  const char* env = std::getenv("KM_SOCKET");
  return env && *env ? env : "/run/km/kmd.sock";
}

Result<KmdClient> KmdClient::connect(const std::string& path) {
  auto fd = sys::connect_unix(path);
  if (!fd) {
    return fail(Error(ErrorCode::kUnavailable, "cannot reach kmd at " + path + ": " + fd.error().message())
                    .with_hint("start it with `kmd --foreground` (or `systemctl start kmd`), or point KM_SOCKET at its socket"));
  }
  return KmdClient(std::move(*fd));
}

Result<Json> reply_or_error(const Json& r) {
  if (!r.is_object()) return fail(ErrorCode::kInternal, "malformed reply from kmd");
  if (r.contains("error")) {
    Error e(ErrorCode::kFailedPrecondition, r["error"].get<std::string>());
    if (r.contains("hint") && r["hint"].is_string()) return fail(std::move(e).with_hint(r["hint"].get<std::string>()));
    return fail(std::move(e));
  }
  return r;
}

Status KmdClient::send(const Json& req, const std::vector<int>& fds) {
  return sys::send_message(fd_.get(), req.dump(-1, ' ', false, Json::error_handler_t::replace), fds);
}

Result<Json> KmdClient::receive() {
  auto m = sys::recv_message(fd_.get());
  if (!m) return fail(Error(ErrorCode::kUnavailable, "kmd closed the connection"));
  Json r = Json::parse(m->data, nullptr, false);
  if (r.is_object() && r.contains("rows_in_fd") && !m->fds.empty()) {
    // A large listing came in a memory file (see the server): read it back in place.
    size_t size = r["rows_in_fd"].get<size_t>();
    if (size > (size_t{1} << 30)) return fail(ErrorCode::kInvalidArgument, "kmd sent an oversized listing");
    std::string rows(size, '\0');
    size_t off = 0;
    while (off < size) {
      ssize_t n = ::pread(m->fds[0].get(), rows.data() + off, size - off, static_cast<off_t>(off));
      if (n <= 0) return fail(Error::from_errno("reading kmd's listing"));
      off += static_cast<size_t>(n);
    }
    r.erase("rows_in_fd");
    r["rows"] = std::move(rows);
  }
  return reply_or_error(r);
}

Result<Json> KmdClient::call(const Json& req, const std::vector<int>& fds) {
  KM_TRY(send(req, fds));
  return receive();
}

}  // namespace km::cli
