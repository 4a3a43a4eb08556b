#include "km/yaml/emit.h"

#include <yaml.h>

namespace km::yaml {

namespace {

class Emitter {
 public:
  Emitter() { ok_ = yaml_emitter_initialize(&e_) != 0; }
  ~Emitter() {
    if (ok_) yaml_emitter_delete(&e_);
  }
  Emitter(const Emitter&) = delete;
  Emitter& operator=(const Emitter&) = delete;
  bool ok() const { return ok_; }
  yaml_emitter_t* get() { return &e_; }

 private:
  yaml_emitter_t e_{};
  bool ok_ = false;
};

int write_handler(void* data, unsigned char* buffer, size_t size) {
  static_cast<std::string*>(data)->append(reinterpret_cast<const char*>(buffer), size);
  return 1;
}

yaml_char_t* uc(const char* s) {
  return reinterpret_cast<yaml_char_t*>(const_cast<char*>(s));
}

class Writer {
 public:
  explicit Writer(yaml_emitter_t* e) : e_(e) {}

  bool scalar(const std::string& text, yaml_scalar_style_t style, bool implicit_plain = true) {
    yaml_event_t ev;
    if (!yaml_scalar_event_initialize(&ev, nullptr, nullptr,
                                      uc(text.c_str()), static_cast<int>(text.size()),
                                      implicit_plain ? 1 : 0, 1, style)) {
      return false;
    }
    return yaml_emitter_emit(e_, &ev) != 0;
  }

  bool node(const Node& n) {
    yaml_event_t ev;
    switch (n.kind) {
      case Kind::kNull:
        return scalar(n.value.empty() ? "null" : n.value, YAML_PLAIN_SCALAR_STYLE);
      case Kind::kScalar: {
        yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
        switch (n.style) {
          case Style::kPlain:
            // A forced string (!!str 123) must come back as a string: quote it.
            style = n.forced_string ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_PLAIN_SCALAR_STYLE;
            break;
          case Style::kSingleQuoted: style = YAML_SINGLE_QUOTED_SCALAR_STYLE; break;
          case Style::kDoubleQuoted: style = YAML_DOUBLE_QUOTED_SCALAR_STYLE; break;
          case Style::kLiteral:
          case Style::kFolded: style = YAML_LITERAL_SCALAR_STYLE; break;
        }
        // libyaml silently falls back from plain to quoted when plain would change the text;
        // it never turns a quoted scalar into a plain one.
        return scalar(n.value, style, n.style == Style::kPlain && !n.forced_string);
      }
      case Kind::kSequence:
        if (!yaml_sequence_start_event_initialize(&ev, nullptr, nullptr, 1,
                                                  n.items.empty() ? YAML_FLOW_SEQUENCE_STYLE
                                                                  : YAML_BLOCK_SEQUENCE_STYLE) ||
            !yaml_emitter_emit(e_, &ev)) {
          return false;
        }
        for (const Node& i : n.items) {
          if (!node(i)) return false;
        }
        return yaml_sequence_end_event_initialize(&ev) && yaml_emitter_emit(e_, &ev);
      case Kind::kMapping:
        if (!yaml_mapping_start_event_initialize(&ev, nullptr, nullptr, 1,
                                                 n.entries.empty() ? YAML_FLOW_MAPPING_STYLE
                                                                   : YAML_BLOCK_MAPPING_STYLE) ||
            !yaml_emitter_emit(e_, &ev)) {
          return false;
        }
        for (const Entry& en : n.entries) {
          // A key that reads as non-string or as a merge key is quoted.
          Node key = Node::scalar(en.key);
          bool plain_ok = key.scalar_type() == ScalarType::kString && en.key != "<<" &&
                          !en.key.empty() && en.key != "~" && en.key != "null";
          if (!scalar(en.key, plain_ok ? YAML_PLAIN_SCALAR_STYLE : YAML_DOUBLE_QUOTED_SCALAR_STYLE,
                      plain_ok)) {
            return false;
          }
          if (!node(en.value)) return false;
        }
        return yaml_mapping_end_event_initialize(&ev) && yaml_emitter_emit(e_, &ev);
    }
    return false;
  }

 private:
  yaml_emitter_t* e_;
};

}  // namespace

Result<std::string> emit(const Node& root) {
  Emitter em;
  if (!em.ok()) return fail(ErrorCode::kInternal, "cannot initialise the YAML emitter");
  std::string out;
  yaml_emitter_set_output(em.get(), write_handler, &out);
  yaml_emitter_set_unicode(em.get(), 1);
  yaml_emitter_set_width(em.get(), 100);
  yaml_emitter_set_indent(em.get(), 2);
  yaml_event_t ev;
  Writer w(em.get());
  bool ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) &&
            yaml_emitter_emit(em.get(), &ev) &&
            yaml_document_start_event_initialize(&ev, nullptr, nullptr, nullptr, 1) &&
            yaml_emitter_emit(em.get(), &ev) && w.node(root) &&
            yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(em.get(), &ev) &&
            yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(em.get(), &ev);
  if (!ok) {
    const char* problem = em.get()->problem;
    return fail(ErrorCode::kInternal,
                std::string("emitting YAML: ") + (problem ? problem : "unknown error"));
  }
  return out;
}

}  // namespace km::yaml
