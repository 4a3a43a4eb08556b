// Renderings of schema.h for people and editors.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace km::profile {

// A JSON Schema (draft 2020-12) of the profile, closed at every level like the validator.
// Semantic rules (ttl >= idleTimeout, ...) are not expressible here and are left to
// `km validate`.
nlohmann::ordered_json json_schema();

// The profile reference in Markdown: every field with its type, default and meaning.
std::string markdown_reference();

}  // namespace km::profile
