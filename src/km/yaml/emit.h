// Writing a km::yaml::Node back out as block-style YAML (libyaml's emitter does the quoting).
// Scalars keep the quoting they were written with, so a quoted "0" stays a string and a plain
// 0 stays a number when the output is read back. Thread-safety: reentrant.
#pragma once

#include <string>

#include "km/base/result.h"
#include "km/yaml/node.h"

namespace km::yaml {

Result<std::string> emit(const Node& root);

}  // namespace km::yaml
