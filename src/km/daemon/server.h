// kmd's Unix socket server: accepts clients, checks who they are (root, or members of the
// configured group), and hands each request to the Service. One thread per connection.
#pragma once

#include <atomic>
#include <string>

#include "km/base/log.h"
#include "km/base/unique_fd.h"
#include "km/daemon/service.h"

namespace km::daemon {

class Server {
 public:
  Server(Service& service, log::Logger& log, std::string group) : service_(service), log_(log), group_(std::move(group)) {}
  // Serves until `stop` becomes true (checked between accepts, at least every 500 ms).
  Status serve(int listen_fd, const std::atomic<bool>& stop);

 private:
  void connection(UniqueFd conn);
  // Empty when allowed; otherwise why not.
  std::string refuse(int conn);

  Service& service_;
  log::Logger& log_;
  std::string group_;
};

}  // namespace km::daemon
