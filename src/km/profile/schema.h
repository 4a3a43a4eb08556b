// The SandboxProfile schema as data: one tree that drives the closed-world validator
// (validate.h), the JSON Schema for editors (json_schema.h) and the generated reference
// documentation, so the three cannot disagree.
//
// Thread-safety: the tree is built once (profile_schema()) and immutable afterwards.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace km::profile::schema {

enum class Type {
  kObject,        // closed mapping with known fields
  kMap,           // mapping with free keys, values of one schema
  kList,
  kString,
  kBool,
  kInt,
  kNumber,
  kDuration,      // "30s 45m 8h 2d 4h30m", "0" when allow_zero
  kEnum,
  kStringOrList,  // a string or a list of strings (extends)
  kAny,           // free-form (agent.claude.permissions)
};

// Returns an error message for a bad value, or nullopt.
using StringCheck = std::optional<std::string> (*)(std::string_view);

struct Node;
using NodeRef = std::shared_ptr<const Node>;

struct Field {
  std::string name;
  NodeRef node;
  bool required = false;
};

struct Node {
  Type type = Type::kString;
  std::string doc;
  std::vector<Field> fields;            // kObject
  NodeRef items;                        // kList, kMap values, kStringOrList items
  std::vector<std::string> values;      // kEnum
  std::optional<double> min, max;       // kInt, kNumber
  bool exclusive_min = false;
  StringCheck check = nullptr;          // kString (also map keys via key_check)
  StringCheck key_check = nullptr;      // kMap
  std::string pattern;                  // JSON Schema pattern equivalent to `check`, if any
  std::string key_pattern;              // kMap: JSON Schema propertyNames pattern
  bool allow_zero = true;               // kDuration
  bool unique = false;                  // kList: warn on duplicate entries
  bool non_empty = false;               // kString / kList: at least one char / item
  std::string default_text;             // documentation only
  std::string ignored;                  // non-empty: accepted for compatibility, km ignores it

  const Field* field(std::string_view name) const;
  std::vector<std::string> field_names() const;
};

const Node& profile_schema();

std::string_view type_name(Type t);

}  // namespace km::profile::schema
