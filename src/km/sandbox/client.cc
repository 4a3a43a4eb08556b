#include "km/sandbox/client.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "km/sys/unix_socket.h"

namespace km::sandbox {

using Json = nlohmann::json;

Result<int> start_exec(int conn, const ExecRequest& req, int in, int out, int err) {
  Json j{{"op", "exec"}, {"argv", req.argv}, {"env", req.env}, {"root", req.root}};
  if (!req.cwd.empty()) j["cwd"] = req.cwd;
  KM_TRY(sys::send_message(conn, j.dump(), {in, out, err}));
  KM_ASSIGN_OR_RETURN(sys::Message m, sys::recv_message(conn));
  Json r = Json::parse(m.data, nullptr, false);
  if (!r.is_object()) return fail(ErrorCode::kInternal, "bad reply from the sandbox");
  if (r.contains("error")) return fail(ErrorCode::kFailedPrecondition, r["error"].get<std::string>());
  return r.value("pid", 0);
}

Result<ExitStatus> wait_exit(int conn) {
  KM_ASSIGN_OR_RETURN(sys::Message m, sys::recv_message(conn));
  Json r = Json::parse(m.data, nullptr, false);
  if (!r.is_object()) return fail(ErrorCode::kInternal, "bad reply from the sandbox");
  if (r.contains("exit")) return ExitStatus{r["exit"].get<int>(), 0};
  if (r.contains("signal")) {
    int s = r["signal"].get<int>();
    return ExitStatus{128 + s, s};
  }
  if (r.contains("error")) return fail(ErrorCode::kFailedPrecondition, r["error"].get<std::string>());
  return fail(ErrorCode::kInternal, "bad reply from the sandbox");
}

Result<Captured> run_captured(const std::string& ctl_path, const ExecRequest& req, const std::string& input) {
  KM_ASSIGN_OR_RETURN(UniqueFd conn, sys::connect_unix(ctl_path));
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) return fail(Error::from_errno("pipe"));
  UniqueFd in_r(in[0]), in_w(in[1]), out_r(out[0]), out_w(out[1]), err_r(err[0]), err_w(err[1]);
  KM_TRY(start_exec(conn.get(), req, in_r.get(), out_w.get(), err_w.get()));
  in_r.reset();
  out_w.reset();
  err_w.reset();
  if (!input.empty()) {
    ssize_t n = ::write(in_w.get(), input.data(), input.size());
    (void)n;
  }
  in_w.reset();
  Captured c;
  pollfd p[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
  int open = 2;
  char buf[65536];
  while (open > 0) {
    if (::poll(p, 2, 120000) <= 0) break;
    for (int i = 0; i < 2; ++i) {
      if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP))) continue;
      ssize_t n = ::read(p[i].fd, buf, sizeof buf);
      if (n > 0) {
        std::string& dst = i == 0 ? c.out : c.err;
        if (dst.size() < (16u << 20)) dst.append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        p[i].fd = -1;
        --open;
      }
    }
  }
  KM_ASSIGN_OR_RETURN(c.status, wait_exit(conn.get()));
  return c;
}

}  // namespace km::sandbox
