// Parsing untrusted YAML into km::yaml::Node, with hard limits.
//
// One document per input. Supported: block and flow styles, anchors and aliases (expanded by
// copy, counted against max_nodes so alias bombs fail fast), merge keys (`<<`), the !!str tag.
// Refused with a located error: duplicate keys, non-scalar keys, unknown anchors, other tags,
// more than one document, input, depth, node count or scalar size over the limits, and
// anything libyaml rejects (invalid UTF-8, control characters, bad indentation).
// Never throws, never aborts on input. Thread-safety: reentrant.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "km/base/result.h"
#include "km/yaml/node.h"

namespace km::yaml {

struct Limits {
  size_t max_input_bytes = 4u << 20;
  size_t max_depth = 64;         // nesting of mappings and lists
  size_t max_nodes = 200000;     // after alias expansion
  size_t max_scalar_bytes = 1u << 20;
  // Scalar bytes held by the tree, counting every alias copy and every anchor's retained copy.
  size_t max_total_bytes = 16u << 20;
};

struct ParseError {
  Mark mark;
  std::string message;
  // "file:line:col: message"
  std::string to_string() const;
};

// `file` names the source in marks and errors (a path, or e.g. "builtin:open-dev").
Result<Node, ParseError> parse(std::string_view text, std::string file, const Limits& limits = {});

}  // namespace km::yaml
