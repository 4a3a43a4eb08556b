#include "km/profile/builtins.h"

#include <cstddef>

namespace km::embedded {
struct File {
  const char* name;
  const unsigned char* data;
  std::size_t size;
};
extern const File builtin_profiles[];
extern const std::size_t builtin_profiles_count;
}  // namespace km::embedded

namespace km::profile {

const std::vector<Builtin>& builtins() {
  static const std::vector<Builtin> all = [] {
    std::vector<Builtin> out;
    for (std::size_t i = 0; i < embedded::builtin_profiles_count; ++i) {
      const auto& f = embedded::builtin_profiles[i];
      out.push_back(Builtin{f.name, std::string_view(reinterpret_cast<const char*>(f.data), f.size)});
    }
    return out;
  }();
  return all;
}

std::optional<std::string_view> find_builtin(std::string_view name) {
  for (const Builtin& b : builtins()) {
    if (b.name == name) return b.text;
  }
  return std::nullopt;
}

}  // namespace km::profile
