// YAML tree to JSON, typing plain scalars by the YAML 1.2 core schema (true -> boolean,
// 42 -> integer, 0.5 -> number, ~ -> null; quoted scalars stay strings).
#pragma once

#include <nlohmann/json.hpp>

#include "km/yaml/node.h"

namespace km::yaml {

nlohmann::ordered_json to_json(const Node& node);

}  // namespace km::yaml
