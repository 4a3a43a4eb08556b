#include "km/yaml/node.h"

#include <cmath>
#include <cstdlib>

namespace km::yaml {

namespace {
const std::string kNoFile;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool looks_int(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  if (i == s.size()) return false;
  for (; i < s.size(); ++i) {
    if (!is_digit(s[i])) return false;
  }
  return true;
}

// [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
bool looks_float(std::string_view s) {
  size_t i = 0, n = s.size();
  if (i < n && (s[i] == '-' || s[i] == '+')) ++i;
  size_t digits = 0;
  while (i < n && is_digit(s[i])) ++i, ++digits;
  if (i < n && s[i] == '.') {
    ++i;
    while (i < n && is_digit(s[i])) ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '-' || s[i] == '+')) ++i;
    size_t exp = 0;
    while (i < n && is_digit(s[i])) ++i, ++exp;
    if (exp == 0) return false;
  }
  return i == n;
}
}  // namespace

const std::string& Mark::file_name() const { return file ? *file : kNoFile; }

Node Node::scalar(std::string text, Style style, Mark mark) {
  Node n;
  n.kind = Kind::kScalar;
  n.value = std::move(text);
  n.style = style;
  n.mark = std::move(mark);
  return n;
}

Node Node::null(Mark mark) {
  Node n;
  n.kind = Kind::kNull;
  n.mark = std::move(mark);
  return n;
}

Node Node::sequence(Mark mark) {
  Node n;
  n.kind = Kind::kSequence;
  n.mark = std::move(mark);
  return n;
}

Node Node::mapping(Mark mark) {
  Node n;
  n.kind = Kind::kMapping;
  n.mark = std::move(mark);
  return n;
}

ScalarType Node::scalar_type() const {
  if (kind == Kind::kNull) return ScalarType::kNull;
  if (kind != Kind::kScalar) return ScalarType::kString;
  if (style != Style::kPlain || forced_string) return ScalarType::kString;
  const std::string& v = value;
  if (v == "true" || v == "True" || v == "TRUE" || v == "false" || v == "False" ||
      v == "FALSE") {
    return ScalarType::kBool;
  }
  if (looks_int(v)) return ScalarType::kInt;
  if (looks_float(v)) return ScalarType::kFloat;
  return ScalarType::kString;
}

std::optional<bool> Node::as_bool() const {
  if (scalar_type() != ScalarType::kBool) return std::nullopt;
  return value[0] == 't' || value[0] == 'T';
}

std::optional<int64_t> Node::as_int() const {
  if (scalar_type() != ScalarType::kInt) return std::nullopt;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(value.c_str(), &end, 10);
  if (errno == ERANGE || end != value.c_str() + value.size()) return std::nullopt;
  return static_cast<int64_t>(v);
}

std::optional<double> Node::as_number() const {
  ScalarType t = scalar_type();
  if (t != ScalarType::kInt && t != ScalarType::kFloat) return std::nullopt;
  char* end = nullptr;
  double v = std::strtod(value.c_str(), &end);
  if (end != value.c_str() + value.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::string_view Node::describe() const {
  switch (kind) {
    case Kind::kNull: return "null";
    case Kind::kSequence: return "a list";
    case Kind::kMapping: return "a mapping";
    case Kind::kScalar: break;
  }
  switch (scalar_type()) {
    case ScalarType::kBool: return "a boolean";
    case ScalarType::kInt:
    case ScalarType::kFloat: return "a number";
    default: return "a string";
  }
}

const Entry* Node::find_entry(std::string_view key) const {
  if (kind != Kind::kMapping) return nullptr;
  for (const Entry& e : entries) {
    if (e.key == key) return &e;
  }
  return nullptr;
}

const Node* Node::find(std::string_view key) const {
  const Entry* e = find_entry(key);
  return e ? &e->value : nullptr;
}

Node* Node::find(std::string_view key) {
  if (kind != Kind::kMapping) return nullptr;
  for (Entry& e : entries) {
    if (e.key == key) return &e.value;
  }
  return nullptr;
}

void Node::set(std::string key, Node v, Mark key_mark) {
  if (kind != Kind::kMapping) {
    *this = Node::mapping(mark);
  }
  for (Entry& e : entries) {
    if (e.key == key) {
      e.value = std::move(v);
      return;
    }
  }
  entries.push_back(Entry{std::move(key), std::move(key_mark), std::move(v)});
}

bool Node::erase(std::string_view key) {
  for (auto it = entries.begin(); it != entries.end(); ++it) {
    if (it->key == key) {
      entries.erase(it);
      return true;
    }
  }
  return false;
}

namespace {
void append_canonical(const Node& n, std::string& out) {
  switch (n.kind) {
    case Kind::kNull: out += "N;"; return;
    case Kind::kScalar: {
      // Plain scalars of a non-string type are distinct from the same text quoted.
      ScalarType t = n.scalar_type();
      out += t == ScalarType::kString ? 'S' : 'P';
      out += std::to_string(n.value.size());
      out += ':';
      out += n.value;
      return;
    }
    case Kind::kSequence:
      out += "L[";
      for (const Node& i : n.items) append_canonical(i, out);
      out += "]";
      return;
    case Kind::kMapping:
      out += "M{";
      for (const Entry& e : n.entries) {
        out += std::to_string(e.key.size());
        out += ':';
        out += e.key;
        append_canonical(e.value, out);
      }
      out += "}";
      return;
  }
}
}  // namespace

std::string Node::canonical() const {
  std::string out;
  append_canonical(*this, out);
  return out;
}

bool deep_equal(const Node& a, const Node& b) { return a.canonical() == b.canonical(); }

size_t Node::count_nodes() const {
  size_t n = 1;
  for (const Node& i : items) n += i.count_nodes();
  for (const Entry& e : entries) n += e.value.count_nodes();
  return n;
}

const Node* at_path(const Node& root, std::string_view dotted) {
  const Node* cur = &root;
  size_t i = 0;
  while (i < dotted.size() && cur) {
    if (dotted[i] == '.') {
      ++i;
      continue;
    }
    if (dotted[i] == '[') {
      size_t close = dotted.find(']', i);
      if (close == std::string_view::npos || !cur->is_sequence()) return nullptr;
      size_t idx = 0;
      for (size_t k = i + 1; k < close; ++k) {
        if (!is_digit(dotted[k])) return nullptr;
        idx = idx * 10 + static_cast<size_t>(dotted[k] - '0');
      }
      if (idx >= cur->items.size()) return nullptr;
      cur = &cur->items[idx];
      i = close + 1;
      continue;
    }
    size_t end = dotted.find_first_of(".[", i);
    if (end == std::string_view::npos) end = dotted.size();
    cur = cur->find(dotted.substr(i, end - i));
    i = end;
  }
  return cur;
}

}  // namespace km::yaml
