// km::yaml::Node: a YAML document tree that remembers where every value came from.
//
// km parses YAML with libyaml's event API into this tree (parse.h) instead of using a DOM
// library, so that it controls every limit (depth, node count after alias expansion, scalar
// size) and keeps file:line:column for each key and value, which the profile validator needs
// for its findings, including values inherited from another file.
//
// Scalars keep their text and quoting style; typing follows the YAML 1.2 core schema and is
// decided by the consumer (a quoted "true" is a string, a plain true is a boolean).
// Thread-safety: a value type.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace km::yaml {

struct Mark {
  std::shared_ptr<const std::string> file;  // shared by every node of one source
  int line = 0;                             // 1-based; 0 when unknown
  int col = 0;                              // 1-based
  const std::string& file_name() const;
};

enum class Kind { kNull, kScalar, kSequence, kMapping };
enum class Style { kPlain, kSingleQuoted, kDoubleQuoted, kLiteral, kFolded };

// What a scalar means under the YAML 1.2 core schema.
enum class ScalarType { kNull, kBool, kInt, kFloat, kString };

struct Entry;

class Node {
 public:
  Kind kind = Kind::kNull;
  Mark mark;
  std::string value;  // scalar text; for null the original spelling ("", "~", "null")
  Style style = Style::kPlain;
  bool forced_string = false;  // explicit !!str tag
  std::vector<Node> items;     // kSequence
  std::vector<Entry> entries;  // kMapping, in document order, keys unique

  static Node scalar(std::string text, Style style = Style::kPlain, Mark mark = {});
  static Node null(Mark mark = {});
  static Node sequence(Mark mark = {});
  static Node mapping(Mark mark = {});

  bool is_null() const { return kind == Kind::kNull; }
  bool is_scalar() const { return kind == Kind::kScalar; }
  bool is_sequence() const { return kind == Kind::kSequence; }
  bool is_mapping() const { return kind == Kind::kMapping; }

  // For scalars and nulls: the core-schema type of the text.
  ScalarType scalar_type() const;
  std::optional<bool> as_bool() const;
  std::optional<int64_t> as_int() const;
  std::optional<double> as_number() const;  // int or float
  // "a mapping", "a list", "a string", "a number", "a boolean", "null".
  std::string_view describe() const;

  // Mapping access; nullptr when absent or not a mapping.
  const Node* find(std::string_view key) const;
  Node* find(std::string_view key);
  const Entry* find_entry(std::string_view key) const;
  // Sets key (replacing an existing value, keeping its position) on a mapping.
  void set(std::string key, Node value, Mark key_mark = {});
  bool erase(std::string_view key);

  // Structural equality, ignoring marks and scalar style (plain "a" == quoted "a" as text),
  // but distinguishing a plain true from a quoted "true".
  friend bool deep_equal(const Node& a, const Node& b);
  // A canonical string of the value, for hashing/de-duplication; equal iff deep_equal.
  std::string canonical() const;

  size_t count_nodes() const;
};

struct Entry {
  std::string key;
  Mark key_mark;
  Node value;
};

// Resolves a dotted path like "spec.network.egress.allowedHosts[2]" (no escaping; keys with
// dots cannot be addressed). Returns nullptr if any step is absent.
const Node* at_path(const Node& root, std::string_view dotted);

}  // namespace km::yaml
