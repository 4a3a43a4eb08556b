#include "km/yaml/json.h"

namespace km::yaml {

nlohmann::ordered_json to_json(const Node& node) {
  using Json = nlohmann::ordered_json;
  switch (node.kind) {
    case Kind::kNull: return nullptr;
    case Kind::kSequence: {
      Json a = Json::array();
      for (const Node& i : node.items) a.push_back(to_json(i));
      return a;
    }
    case Kind::kMapping: {
      Json o = Json::object();
      for (const Entry& e : node.entries) o[e.key] = to_json(e.value);
      return o;
    }
    case Kind::kScalar: break;
  }
  switch (node.scalar_type()) {
    case ScalarType::kBool: return *node.as_bool();
    case ScalarType::kInt:
      if (auto i = node.as_int()) return *i;
      break;  // out of range for int64: keep the text
    case ScalarType::kFloat:
      if (auto d = node.as_number()) return *d;
      break;
    default: break;
  }
  return node.value;
}

}  // namespace km::yaml
