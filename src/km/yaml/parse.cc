#include "km/yaml/parse.h"

#include <yaml.h>

#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "km/base/strings.h"

namespace km::yaml {

std::string ParseError::to_string() const {
  return mark.file_name() + ":" + std::to_string(mark.line) + ":" + std::to_string(mark.col) +
         ": " + message;
}

namespace {

constexpr std::string_view kStrTag = "tag:yaml.org,2002:str";

// Owns a libyaml parser.
class Parser {
 public:
  Parser() { ok_ = yaml_parser_initialize(&p_) != 0; }
  ~Parser() {
    if (ok_) yaml_parser_delete(&p_);
  }
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;
  yaml_parser_t* get() { return &p_; }
  bool ok() const { return ok_; }

 private:
  yaml_parser_t p_{};
  bool ok_ = false;
};

// Owns one event.
class Event {
 public:
  Event() = default;
  ~Event() {
    if (live_) yaml_event_delete(&e_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  yaml_event_t* get() { return &e_; }
  void mark_live() { live_ = true; }

 private:
  yaml_event_t e_{};
  bool live_ = false;
};

struct Frame {
  Node node;
  std::string anchor;
  bool expecting_key = true;
  std::string key;
  Mark key_mark;
  bool key_is_merge = false;
  std::vector<Node> merges;
  std::unordered_set<std::string> keys;
};

class Builder {
 public:
  Builder(std::shared_ptr<const std::string> file, const Limits& limits)
      : file_(std::move(file)), limits_(limits) {}

  Result<Node, ParseError> run(std::string_view text) {
    if (text.size() > limits_.max_input_bytes) {
      return error_at(1, 1, "input is " + std::to_string(text.size()) + " bytes; the limit is " +
                                std::to_string(limits_.max_input_bytes));
    }
    Parser parser;
    if (!parser.ok()) return error_at(0, 0, "cannot initialise the YAML parser");
    yaml_parser_set_input_string(parser.get(), reinterpret_cast<const unsigned char*>(text.data()),
                                 text.size());
    int documents = 0;
    bool done = false;
    while (!done) {
      Event ev;
      if (!yaml_parser_parse(parser.get(), ev.get())) {
        const yaml_parser_t* p = parser.get();
        std::string msg = p->problem ? p->problem : "invalid YAML";
        if (p->context) msg = std::string(p->context) + ": " + msg;
        return error_at(static_cast<int>(p->problem_mark.line) + 1,
                        static_cast<int>(p->problem_mark.column) + 1, msg);
      }
      ev.mark_live();
      yaml_event_t* e = ev.get();
      Mark m = mark(e->start_mark);
      switch (e->type) {
        case YAML_STREAM_START_EVENT:
        case YAML_NO_EVENT:
          break;
        case YAML_STREAM_END_EVENT:
          done = true;
          break;
        case YAML_DOCUMENT_START_EVENT:
          if (++documents > 1) {
            return fail(ParseError{m, "expected a single YAML document, found another one here"});
          }
          break;
        case YAML_DOCUMENT_END_EVENT:
          break;
        case YAML_SCALAR_EVENT: {
          auto& s = e->data.scalar;
          if (s.length > limits_.max_scalar_bytes) {
            return fail(ParseError{m, "scalar of " + std::to_string(s.length) +
                                          " bytes exceeds the limit of " +
                                          std::to_string(limits_.max_scalar_bytes)});
          }
          Node n;
          n.mark = m;
          n.value.assign(reinterpret_cast<const char*>(s.value), s.length);
          n.style = style_of(s.style);
          if (s.tag) {
            std::string_view tag(reinterpret_cast<const char*>(s.tag));
            if (tag == kStrTag) {
              n.forced_string = true;
            } else if (tag != "!") {
              return fail(ParseError{m, "unsupported YAML tag " + quoted(tag) +
                                            " (only !!str is accepted)"});
            }
          }
          n.kind = Kind::kScalar;
          if (n.style == Style::kPlain && !n.forced_string &&
              (n.value.empty() || n.value == "~" || n.value == "null" || n.value == "Null" ||
               n.value == "NULL")) {
            n.kind = Kind::kNull;
          }
          KM_TRY(count(1, n.value.size(), m));
          std::string anchor = s.anchor ? reinterpret_cast<const char*>(s.anchor) : "";
          if (!anchor.empty()) {
            KM_TRY(count(1, n.value.size(), m));  // the retained copy
            anchors_[anchor] = Anchored{n, 1, n.value.size()};
          }
          KM_TRY(add(std::move(n)));
          break;
        }
        case YAML_ALIAS_EVENT: {
          std::string name = reinterpret_cast<const char*>(e->data.alias.anchor);
          auto it = anchors_.find(name);
          if (it == anchors_.end()) {
            return fail(ParseError{m, "alias *" + name + " refers to no completed anchor &" + name});
          }
          KM_TRY(count(it->second.size, it->second.bytes, m));
          Node copy = it->second.node;
          copy.mark = m;
          KM_TRY(add(std::move(copy)));
          break;
        }
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
          bool is_map = e->type == YAML_MAPPING_START_EVENT;
          const yaml_char_t* tag = is_map ? e->data.mapping_start.tag : e->data.sequence_start.tag;
          const yaml_char_t* anchor =
              is_map ? e->data.mapping_start.anchor : e->data.sequence_start.anchor;
          if (tag) {
            std::string_view t(reinterpret_cast<const char*>(tag));
            if (t != "!" && t != "tag:yaml.org,2002:map" && t != "tag:yaml.org,2002:seq") {
              return fail(ParseError{m, "unsupported YAML tag " + quoted(t)});
            }
          }
          if (stack_.size() >= limits_.max_depth) {
            return fail(ParseError{m, "nesting is deeper than " +
                                          std::to_string(limits_.max_depth) + " levels"});
          }
          KM_TRY(count(1, 0, m));
          Frame f;
          f.node = is_map ? Node::mapping(m) : Node::sequence(m);
          if (anchor) f.anchor = reinterpret_cast<const char*>(anchor);
          stack_.push_back(std::move(f));
          break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: {
          Frame f = std::move(stack_.back());
          stack_.pop_back();
          if (f.node.is_mapping()) KM_TRY(apply_merges(f));
          if (!f.anchor.empty()) {
            size_t size = f.node.count_nodes();
            size_t bytes = scalar_bytes(f.node);
            KM_TRY(count(size, bytes, f.node.mark));  // the retained copy costs as much again
            anchors_[f.anchor] = Anchored{f.node, size, bytes};
          }
          KM_TRY(add(std::move(f.node)));
          break;
        }
      }
    }
    if (!root_) return Node::null(Mark{file_, 1, 1});
    return std::move(*root_);
  }

 private:
  struct Anchored {
    Node node;
    size_t size;
    size_t bytes;
  };

  static size_t scalar_bytes(const Node& n) {
    size_t b = n.value.size();
    for (const Node& i : n.items) b += scalar_bytes(i);
    for (const Entry& e : n.entries) b += e.key.size() + scalar_bytes(e.value);
    return b;
  }

  Mark mark(const yaml_mark_t& ym) const {
    return Mark{file_, static_cast<int>(ym.line) + 1, static_cast<int>(ym.column) + 1};
  }

  Unexpected<ParseError> error_at(int line, int col, std::string msg) const {
    return fail(ParseError{Mark{file_, line, col}, std::move(msg)});
  }

  static Style style_of(yaml_scalar_style_t s) {
    switch (s) {
      case YAML_SINGLE_QUOTED_SCALAR_STYLE: return Style::kSingleQuoted;
      case YAML_DOUBLE_QUOTED_SCALAR_STYLE: return Style::kDoubleQuoted;
      case YAML_LITERAL_SCALAR_STYLE: return Style::kLiteral;
      case YAML_FOLDED_SCALAR_STYLE: return Style::kFolded;
      default: return Style::kPlain;
    }
  }

  Result<void, ParseError> count(size_t n, size_t bytes, const Mark& m) {
    nodes_ += n;
    bytes_ += bytes;
    if (nodes_ > limits_.max_nodes) {
      return fail(ParseError{m, "document has more than " + std::to_string(limits_.max_nodes) +
                                    " nodes after expanding aliases (an alias bomb?)"});
    }
    if (bytes_ > limits_.max_total_bytes) {
      return fail(ParseError{m, "document holds more than " + std::to_string(limits_.max_total_bytes) +
                                    " bytes of text after expanding aliases (an alias bomb?)"});
    }
    return {};
  }

  Result<void, ParseError> add(Node n) {
    if (stack_.empty()) {
      root_ = std::move(n);
      return {};
    }
    Frame& parent = stack_.back();
    if (parent.node.is_sequence()) {
      parent.node.items.push_back(std::move(n));
      return {};
    }
    if (parent.expecting_key) {
      if (n.is_mapping() || n.is_sequence()) {
        return fail(ParseError{n.mark, "mapping keys must be scalars"});
      }
      parent.key_is_merge = n.value == "<<" && n.style == Style::kPlain && !n.forced_string;
      parent.key = std::move(n.value);
      parent.key_mark = n.mark;
      parent.expecting_key = false;
      return {};
    }
    parent.expecting_key = true;
    if (parent.key_is_merge) {
      if (n.is_mapping()) {
        parent.merges.push_back(std::move(n));
      } else if (n.is_sequence()) {
        for (Node& item : n.items) {
          if (!item.is_mapping()) {
            return fail(ParseError{item.mark, "a merge key (<<) takes a mapping or a list of mappings"});
          }
          parent.merges.push_back(std::move(item));
        }
      } else {
        return fail(ParseError{n.mark, "a merge key (<<) takes a mapping or a list of mappings"});
      }
      return {};
    }
    if (!parent.keys.insert(parent.key).second) {
      const Entry* first = parent.node.find_entry(parent.key);
      std::string where = first ? " (first at line " + std::to_string(first->key_mark.line) + ")" : "";
      return fail(ParseError{parent.key_mark, "duplicate key " + quoted(parent.key) + where});
    }
    parent.node.entries.push_back(Entry{std::move(parent.key), parent.key_mark, std::move(n)});
    parent.key.clear();
    return {};
  }

  // YAML merge keys: explicit keys win; among merged mappings, earlier ones win.
  static Result<void, ParseError> apply_merges(Frame& f) {
    for (Node& src : f.merges) {
      for (Entry& e : src.entries) {
        if (f.keys.insert(e.key).second) f.node.entries.push_back(std::move(e));
      }
    }
    f.merges.clear();
    return {};
  }

  std::shared_ptr<const std::string> file_;
  const Limits& limits_;
  std::vector<Frame> stack_;
  std::unordered_map<std::string, Anchored> anchors_;
  std::optional<Node> root_;
  size_t nodes_ = 0;
  size_t bytes_ = 0;
};

}  // namespace

Result<Node, ParseError> parse(std::string_view text, std::string file, const Limits& limits) {
  Builder b(std::make_shared<const std::string>(std::move(file)), limits);
  return b.run(text);
}

}  // namespace km::yaml
