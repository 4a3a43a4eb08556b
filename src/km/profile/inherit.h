// Profile inheritance (`extends`) and the one entry point that turns a profile file into the
// resolved tree that km validates and uses.
//
// Lookup of a parent name: built-ins first, then files relative to the extending profile's
// directory (`<dir>/<name>`, `<dir>/<name>.yaml`, `<dir>/<name>.yml`, the first regular file
// wins), then each search path
// in order. Parents fold left to right into an empty accumulator and the child is applied
// last (a name listed twice counts once; at most kMaxParents per list): mappings merge deeply, scalars are last-wins, lists are unions in order without
// duplicates; an empty (null) value in a child inherits the parent's. A cycle is an error naming the chain (a diamond is not a cycle); chains deeper
// than kMaxDepth are refused. `extends` and `metadata.abstract` are removed from the result,
// and `spec.execution.initCommandsAppend` is folded onto the end of `initCommands` once, at
// the leaf, so appended commands run after every parent's commands.
//
// Problems (unreadable files, YAML errors, unknown parents, cycles) are reported as findings
// located at the `extends` entry that caused them. Thread-safety: reentrant.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "km/profile/findings.h"
#include "km/yaml/node.h"

namespace km::profile {

inline constexpr size_t kMaxExtendsDepth = 10;
inline constexpr size_t kMaxParents = 32;  // in one extends list
inline constexpr size_t kMaxProfileBytes = 1u << 20;

struct ResolveOptions {
  std::vector<std::string> search_paths;
  // When false, only built-in parents resolve (used by the fuzzer to stay hermetic).
  bool allow_files = true;
};

struct Resolved {
  yaml::Node root;
  bool abstract = false;           // the leaf declared metadata.abstract: true
  std::vector<std::string> sources;  // every file or builtin that contributed, leaf first
};

// Resolves the profile in `path`. Returns nullopt when the leaf itself cannot be read or
// parsed; otherwise a tree (possibly with findings about its parents).
std::optional<Resolved> resolve_file(const std::string& path, const ResolveOptions& options,
                                     Findings& findings);

// Resolves a built-in profile by name.
std::optional<Resolved> resolve_builtin(const std::string& name, const ResolveOptions& options,
                                        Findings& findings);

// Resolves a profile given as text. `name` labels it in findings; `dir` is where relative
// parents are looked up ("" for none).
std::optional<Resolved> resolve_text(std::string_view text, const std::string& name,
                                     const std::string& dir, const ResolveOptions& options,
                                     Findings& findings);

// Merge rule used by resolution (exposed for tests): `over` applied onto `base`.
yaml::Node merge(const yaml::Node& base, const yaml::Node& over);

// Reads, resolves and validates one profile file; the full pipeline of `km validate`.
struct Checked {
  std::optional<Resolved> resolved;
  Findings findings;
};
Checked check_file(const std::string& path, const ResolveOptions& options);
Checked check_builtin(const std::string& name, const ResolveOptions& options);
Checked check_text(std::string_view text, const std::string& name, const ResolveOptions& options);

}  // namespace km::profile
