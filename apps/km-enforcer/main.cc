// km-enforcer: one sandbox's DNS filter and egress proxy, started and supervised by kmd.
//   km-enforcer --config FILE
// Inherits its listening sockets and the audit descriptor from kmd (see km/enforcer/config.h).
#include <cstdio>
#include <string>

#include "km/base/file.h"
#include "km/enforcer/config.h"
#include "km/enforcer/enforcer.h"

int main(int argc, char** argv) {
  std::string path;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) path = argv[++i];
  }
  if (path.empty()) {
    std::fprintf(stderr, "usage: km-enforcer --config FILE (started by kmd)\n");
    return 2;
  }
  auto text = km::read_file(path, 1 << 20);
  if (!text) {
    std::fprintf(stderr, "km-enforcer: error: %s\n", text.error().to_string().c_str());
    return 1;
  }
  auto config = km::enforcer::config_from_json(*text);
  if (!config) {
    std::fprintf(stderr, "km-enforcer: error: %s\n", config.error().to_string().c_str());
    return 1;
  }
  if (auto s = km::enforcer::run(*config); !s) {
    std::fprintf(stderr, "km-enforcer: error: %s\n", s.error().to_string().c_str());
    return 1;
  }
  return 0;
}
