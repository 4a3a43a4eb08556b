#include "km/profile/json_schema.h"

#include "km/profile/schema.h"

namespace km::profile {

namespace {

using schema::Type;
using Json = nlohmann::ordered_json;

constexpr const char* kDurationPattern =
    "^(0|(?=[0-9])([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?)$";

// Only the envelope (apiVersion, kind, metadata.name) is required in the JSON Schema: editors
// also open profiles that extend others and abstract fragments, whose required keys come
// from parents. `km validate` checks required keys on the resolved profile.
bool required_in_json_schema(const std::string& path) {
  return path == "apiVersion" || path == "kind" || path == "metadata" || path == "metadata.name";
}

Json render(const schema::Node& s, const std::string& path = "") {
  Json j = Json::object();  // kAny renders as {}, the schema that accepts anything
  if (!s.doc.empty()) j["description"] = s.doc;
  switch (s.type) {
    case Type::kObject: {
      j["type"] = "object";
      Json props = Json::object();
      Json required = Json::array();
      for (const schema::Field& f : s.fields) {
        std::string p = path.empty() ? f.name : path + "." + f.name;
        props[f.name] = render(*f.node, p);
        if (f.required && required_in_json_schema(p)) required.push_back(f.name);
      }
      j["properties"] = props;
      if (!required.empty()) j["required"] = required;
      j["additionalProperties"] = false;
      break;
    }
    case Type::kMap:
      j["type"] = "object";
      j["additionalProperties"] = render(*s.items);
      if (!s.key_pattern.empty()) j["propertyNames"] = Json{{"pattern", s.key_pattern}};
      break;
    case Type::kList:
      j["type"] = "array";
      j["items"] = render(*s.items);
      if (s.non_empty) j["minItems"] = 1;
      break;
    case Type::kStringOrList:
      j["oneOf"] = Json::array({render(*s.items), Json{{"type", "array"}, {"items", render(*s.items)}}});
      break;
    case Type::kString:
      // Plain numbers where a string is expected are accepted by km (e.g. ttl: 0), so editors
      // should not flag them either.
      j["type"] = Json::array({"string", "number"});
      if (!s.pattern.empty()) j["pattern"] = s.pattern;
      if (s.non_empty) j["minLength"] = 1;
      break;
    case Type::kBool:
      j["type"] = "boolean";
      break;
    case Type::kInt:
    case Type::kNumber:
      j["type"] = s.type == Type::kInt ? "integer" : "number";
      if (s.min) j[s.exclusive_min ? "exclusiveMinimum" : "minimum"] = *s.min;
      if (s.max) j["maximum"] = *s.max;
      break;
    case Type::kDuration:
      j["oneOf"] = Json::array({Json{{"type", "string"}, {"pattern", kDurationPattern}},
                                Json{{"const", 0}}});
      break;
    case Type::kEnum:
      j["enum"] = s.values;
      break;
    case Type::kAny:
      break;
  }
  if (!s.default_text.empty()) j["x-km-default"] = s.default_text;
  if (!s.ignored.empty()) j["deprecated"] = true;
  return j;
}

std::string type_text(const schema::Node& s) {
  switch (s.type) {
    case Type::kList: return "list of " + type_text(*s.items);
    case Type::kMap: return "map of " + type_text(*s.items);
    case Type::kStringOrList: return "string or list of strings";
    case Type::kEnum: {
      std::string out;
      for (const std::string& v : s.values) out += (out.empty() ? "" : " \\| ") + v;
      return out;
    }
    case Type::kNumber:
    case Type::kInt: {
      std::string out(schema::type_name(s.type));
      auto num = [](double v) {
        std::string t = std::to_string(v);
        t.erase(t.find_last_not_of('0') + 1);
        if (t.back() == '.') t.pop_back();
        return t;
      };
      if (s.min && s.max) out += " (" + std::string(s.exclusive_min ? ">" : "≥") + num(*s.min) + ", ≤" + num(*s.max) + ")";
      else if (s.min) out += " (" + std::string(s.exclusive_min ? ">" : "≥") + num(*s.min) + ")";
      return out;
    }
    default: return std::string(schema::type_name(s.type));
  }
}

void rows(const schema::Node& s, const std::string& path, std::string& out) {
  const schema::Node* obj = &s;
  std::string base = path;
  if (s.type == Type::kList && s.items->type == Type::kObject) {
    obj = s.items.get();
    base += "[]";
  }
  if (obj->type != Type::kObject) return;
  for (const schema::Field& f : obj->fields) {
    std::string p = base.empty() ? f.name : base + "." + f.name;
    const schema::Node& n = *f.node;
    std::string doc = n.doc;
    if (!n.ignored.empty()) doc = (doc.empty() ? "" : doc + " ") + "*Accepted for compatibility: " + n.ignored + ".*";
    for (char& c : doc) {
      if (c == '|') c = '/';
    }
    out += "| `" + p + "` | " + type_text(n) + " | " + (f.required ? "yes" : "") + " | " +
           (n.default_text.empty() ? "" : "`" + n.default_text + "`") + " | " + doc + " |\n";
    rows(n, p, out);
  }
}

}  // namespace

nlohmann::ordered_json json_schema() {
  Json j;
  j["$schema"] = "https://json-schema.org/draft/2020-12/schema";
  j["$id"] = "https://klankermaker.ai/schemas/sandbox-profile-v1alpha2.json";
  j["title"] = "km SandboxProfile (v1alpha2)";
  Json body = render(schema::profile_schema());
  for (auto it = body.begin(); it != body.end(); ++it) j[it.key()] = it.value();
  return j;
}

std::string markdown_reference() {
  std::string out =
      "<!-- Generated by `km profile schema --markdown`; do not edit by hand. -->\n"
      "| Field | Type | Required | Default | Meaning |\n|---|---|---|---|---|\n";
  rows(schema::profile_schema(), "", out);
  return out;
}

}  // namespace km::profile
