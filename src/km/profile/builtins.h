// Built-in profiles, embedded in the binary from src/km/profile/builtins/*.yaml.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace km::profile {

struct Builtin {
  std::string name;
  std::string_view text;
};

const std::vector<Builtin>& builtins();
std::optional<std::string_view> find_builtin(std::string_view name);

}  // namespace km::profile
