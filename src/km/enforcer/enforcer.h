// One sandbox's enforcer, assembled: the egress policy, the address book, the DNS service and
// the egress proxy on one event loop, serving the descriptors kmd passed (config.h).
// run() returns when SIGTERM or SIGINT arrives, or with an error if a component cannot start
// (the sandbox then has no egress at all: nothing else forwards its traffic).
#pragma once

#include "km/base/result.h"
#include "km/enforcer/config.h"

namespace km::enforcer {

Status run(const Config& config);

// "ip", "ip:port" or "[ipv6]:port" → address and port (53 by default).
Result<std::pair<std::string, uint16_t>> parse_server(const std::string& text);

}  // namespace km::enforcer
