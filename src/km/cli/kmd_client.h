// The km CLI's connection to kmd (Unix socket; --socket, KM_SOCKET, or /run/km/kmd.sock).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/base/result.h"
#include "km/base/unique_fd.h"

namespace km::cli {

std::string default_socket();

class KmdClient {
 public:
  static Result<KmdClient> connect(const std::string& path);
  // One request, one reply; a reply with "error" becomes an Error (with its hint).
  Result<nlohmann::json> call(const nlohmann::json& req, const std::vector<int>& fds = {});
  Status send(const nlohmann::json& req, const std::vector<int>& fds = {});
  Result<nlohmann::json> receive();
  int fd() const { return fd_.get(); }

 private:
  explicit KmdClient(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

Result<nlohmann::json> reply_or_error(const nlohmann::json& reply);

}  // namespace km::cli
