// Validation of a (resolved) SandboxProfile tree: closed-world structure from schema.h, then
// the semantic rules. Every finding is reported in one pass; warnings never fail validation.
// Pure: no I/O. Thread-safety: reentrant.
#pragma once

#include <string>
#include <vector>

#include "km/profile/findings.h"
#include "km/yaml/node.h"

namespace km::profile {

struct ValidateOptions {
  // Abstract fragments: required keys are not enforced, everything else is.
  bool fragment = false;
};

void validate_tree(const yaml::Node& root, const ValidateOptions& options, Findings& findings);

// The mandatory protected set: read-only unless a profile lists a member under
// filesystem.unprotect. `~` is the sandbox user's home; `**/` means in any repository.
const std::vector<std::string>& protected_paths();

// True when `path` (absolute or ~/...) is a protected path or lies inside one. Paths are
// normalised first (`//`, `/./`, trailing `/`; /home/<user>/ and /root/ read as ~/), and
// git directories include bare repositories (x.git/) and submodules (.git/modules/...).
bool is_protected(const std::string& path);
// True when `path` names a member of the protected set exactly (what unprotect accepts).
bool is_protected_member(const std::string& path);
std::string normalize_path(const std::string& path);

}  // namespace km::profile
