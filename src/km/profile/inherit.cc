#include "km/profile/inherit.h"

#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "km/base/file.h"
#include "km/base/strings.h"
#include "km/profile/builtins.h"
#include "km/profile/validate.h"
#include "km/yaml/parse.h"

namespace km::profile {

namespace {

struct Source {
  std::string key;      // identity for cycles and memoisation: builtin:<name> or a real path
  std::string display;  // what findings call it
  std::string dir;      // where its own relative parents are looked up
  std::string text;
};

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dir_of(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string real_path(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf)) return buf;
  return path;
}

std::string join(const std::string& dir, const std::string& name) {
  if (dir.empty() || dir == ".") return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

class Resolver {
 public:
  Resolver(const ResolveOptions& options, Findings& findings) : options_(options), f_(findings) {}

  // Resolves `doc` (already parsed) whose identity is `key`; parents are looked up from `dir`.
  yaml::Node resolve(const yaml::Node& doc, const std::string& key, const std::string& display,
                     const std::string& dir) {
    stack_.push_back({key, display});
    yaml::Node acc;  // null: nothing yet
    bool have_acc = false;
    size_t height = 0;
    if (const yaml::Entry* ext = doc.find_entry("extends")) {
      std::vector<Name> names;
      std::unordered_set<std::string> seen;
      for (Name& n : parent_names(ext->value)) {
        if (seen.insert(n.name).second) names.push_back(std::move(n));  // twice adds nothing
      }
      if (names.size() > kMaxParents) {
        f_.error(ext->value.mark, "extends", "lists " + std::to_string(names.size()) + " parents; at most " +
                                                 std::to_string(kMaxParents) + " are allowed");
        names.resize(kMaxParents);
      }
      for (const auto& [name, mark, path] : names) {
        if (auto parent = load_parent(name, mark, path, dir)) {
          acc = have_acc ? merge(acc, parent->tree) : parent->tree;
          have_acc = true;
          height = std::max(height, parent->height + 1);
        }
      }
    }
    last_height_ = height;
    yaml::Node own = doc;
    own.erase("extends");
    yaml::Node out = have_acc ? merge(acc, own) : own;
    stack_.pop_back();
    return out;
  }

  const std::vector<std::string>& sources() const { return sources_; }

 private:
  struct Name {
    std::string name;
    yaml::Mark mark;
    std::string path;
  };

  std::vector<Name> parent_names(const yaml::Node& ext) {
    std::vector<Name> out;
    if (ext.is_scalar()) {
      out.push_back({ext.value, ext.mark, "extends"});
    } else if (ext.is_sequence()) {
      for (size_t i = 0; i < ext.items.size(); ++i) {
        const yaml::Node& item = ext.items[i];
        std::string path = "extends[" + std::to_string(i) + "]";
        if (!item.is_scalar()) {
          f_.error(item.mark, path, "expected a profile name, got " + std::string(item.describe()));
          continue;
        }
        out.push_back({item.value, item.mark, path});
      }
    } else {
      f_.error(ext.mark, "extends", "expected a profile name or a list of names, got " + std::string(ext.describe()));
    }
    return out;
  }

  std::string chain(const std::string& last) const {
    std::string out;
    for (const auto& s : stack_) out += s.display + " -> ";
    return out + last;
  }

  struct Parent {
    yaml::Node tree;
    size_t height = 0;  // levels of parents above this one
  };

  std::optional<Parent> load_parent(const std::string& name, const yaml::Mark& mark,
                                    const std::string& path, const std::string& dir) {
    if (name.empty()) {
      f_.error(mark, path, "empty profile name");
      return std::nullopt;
    }
    // Identity first (cheap), contents only when not already resolved.
    auto key = locate_key(name, dir);
    const Parent* known = nullptr;
    if (key) {
      for (const auto& s : stack_) {
        if (s.key == key->first) {
          f_.error(mark, path, "extends cycle: " + chain(key->second));
          return std::nullopt;
        }
      }
      auto it = memo_.find(key->first);
      if (it != memo_.end()) {
        if (!it->second) return std::nullopt;  // already reported
        known = &*it->second;
      }
    }
    size_t chain_len = stack_.size() + (known ? known->height : 0);
    if (chain_len > kMaxExtendsDepth) {
      f_.error(mark, path, "extends chain is deeper than " + std::to_string(kMaxExtendsDepth) +
                               " levels: " + chain(key ? key->second : name) + (known ? " -> ..." : ""));
      return std::nullopt;
    }
    if (known) return *known;
    auto src = locate(name, dir, mark, path);
    if (!src) return std::nullopt;
    auto parsed = yaml::parse(src->text, src->display);
    if (!parsed) {
      const yaml::ParseError& e = parsed.error();
      f_.error(e.mark, "(syntax)", e.message);
      f_.error(mark, path, "parent " + quoted(name) + " (" + src->display + ") is not valid YAML");
      memo_[src->key] = std::nullopt;
      return std::nullopt;
    }
    if (!parsed->is_mapping()) {
      f_.error(parsed->mark, "(document)", "a profile must be a mapping, got " + std::string(parsed->describe()));
      memo_[src->key] = std::nullopt;
      return std::nullopt;
    }
    sources_.push_back(src->display);
    Parent p;
    p.tree = resolve(*parsed, src->key, src->display, src->dir);
    p.height = last_height_;
    memo_[src->key] = p;
    return p;
  }

  // Where `name` would come from, without reading it: {key, display}.
  std::optional<std::pair<std::string, std::string>> locate_key(const std::string& name, const std::string& dir) {
    if (find_builtin(name)) return std::make_pair("builtin:" + name, "builtin:" + name);
    for (const std::string& candidate : candidates(name, dir)) {
      if (is_regular_file(candidate)) return std::make_pair(real_path(candidate), candidate);
    }
    return std::nullopt;
  }

  std::vector<std::string> candidates(const std::string& name, const std::string& dir) const {
    std::vector<std::string> out;
    if (!options_.allow_files) return out;
    std::vector<std::string> dirs;
    if (!name.empty() && name.front() == '/') {
      dirs.push_back("");
    } else {
      if (!dir.empty()) dirs.push_back(dir);
      for (const std::string& sp : options_.search_paths) dirs.push_back(sp);
    }
    for (const std::string& d : dirs) {
      for (const char* ext : {"", ".yaml", ".yml"}) {
        out.push_back(d.empty() ? name + ext : join(d, name + ext));
      }
    }
    return out;
  }

  std::optional<Source> locate(const std::string& name, const std::string& dir,
                               const yaml::Mark& mark, const std::string& path) {
    if (auto text = find_builtin(name)) {
      return Source{"builtin:" + name, "builtin:" + name, "", std::string(*text)};
    }
    std::vector<std::string> dirs;
    if (!options_.allow_files) {
      // Nothing to search: fall through to "cannot find".
    } else if (!name.empty() && name.front() == '/') {
      dirs.push_back("");
    } else {
      if (!dir.empty()) dirs.push_back(dir);
      for (const std::string& sp : options_.search_paths) dirs.push_back(sp);
    }
    std::vector<std::string> tried;
    for (const std::string& d : dirs) {
      for (const char* ext : {"", ".yaml", ".yml"}) {
        std::string candidate = d.empty() ? name + ext : join(d, name + ext);
        if (!is_regular_file(candidate)) continue;
        auto text = read_file(candidate, kMaxProfileBytes);
        if (!text) {
          f_.error(mark, path, "cannot read parent " + quoted(name) + ": " + text.error().to_string());
          return std::nullopt;
        }
        return Source{real_path(candidate), candidate, dir_of(candidate), std::move(*text)};
      }
      tried.push_back(d.empty() ? "/" : d);
    }
    std::string where = "the built-in profiles";
    for (const std::string& t : tried) where += ", " + t;
    std::string msg = "cannot find parent profile " + quoted(name) + " (looked in " + where + ")";
    std::vector<std::string> names;
    for (const Builtin& b : builtins()) names.push_back(b.name);
    std::string near = closest_match(name, names);
    if (!near.empty()) msg += "; did you mean the built-in " + quoted(near) + "?";
    f_.error(mark, path, msg);
    return std::nullopt;
  }

  struct Frame {
    std::string key;
    std::string display;
  };

  const ResolveOptions& options_;
  Findings& f_;
  std::vector<Frame> stack_;
  std::map<std::string, std::optional<Parent>> memo_;
  size_t last_height_ = 0;
  std::vector<std::string> sources_;
};

void fold_init_commands_append(yaml::Node& root) {
  yaml::Node* spec = root.find("spec");
  yaml::Node* exec = spec ? spec->find("execution") : nullptr;
  if (!exec) return;
  const yaml::Entry* append = exec->find_entry("initCommandsAppend");
  if (!append || !append->value.is_sequence()) return;  // a bad type is the validator's to report
  yaml::Node* init = exec->find("initCommands");
  if (init && !init->is_sequence()) return;
  yaml::Node folded = init ? merge(*init, append->value) : append->value;
  yaml::Mark key_mark = append->key_mark;
  exec->erase("initCommandsAppend");
  exec->set("initCommands", std::move(folded), key_mark);
}

std::optional<Resolved> resolve_parsed(const yaml::Node& doc, const std::string& key,
                                       const std::string& display, const std::string& dir,
                                       const ResolveOptions& options, Findings& findings) {
  if (!doc.is_mapping()) {
    findings.error(doc.mark, "(document)",
                   "a profile must be a mapping with apiVersion, kind, metadata and spec; got " +
                       std::string(doc.describe()));
    return std::nullopt;
  }
  Resolved out;
  if (const yaml::Node* md = doc.find("metadata")) {
    if (const yaml::Node* abs = md->find("abstract")) out.abstract = abs->as_bool().value_or(false);
  }
  Resolver r(options, findings);
  out.root = r.resolve(doc, key, display, dir);
  // A non-boolean abstract stays in the tree so that the validator reports it.
  if (yaml::Node* md = out.root.find("metadata")) {
    const yaml::Node* abs = md->find("abstract");
    if (abs && abs->as_bool()) md->erase("abstract");
  }
  fold_init_commands_append(out.root);
  out.sources.push_back(display);
  for (const std::string& s : r.sources()) out.sources.push_back(s);
  return out;
}

std::optional<Resolved> resolve_named_text(std::string_view text, const std::string& key,
                                           const std::string& display, const std::string& dir,
                                           const ResolveOptions& options, Findings& findings) {
  auto parsed = yaml::parse(text, display);
  if (!parsed) {
    findings.error(parsed.error().mark, "(syntax)", parsed.error().message);
    return std::nullopt;
  }
  return resolve_parsed(*parsed, key, display, dir, options, findings);
}

Checked checked(std::optional<Resolved> resolved, Findings findings) {
  Checked c{std::move(resolved), std::move(findings)};
  if (c.resolved) {
    ValidateOptions vo;
    vo.fragment = c.resolved->abstract;
    validate_tree(c.resolved->root, vo, c.findings);
  }
  c.findings.sort();
  return c;
}

}  // namespace

yaml::Node merge(const yaml::Node& base, const yaml::Node& over) {
  // An empty value in a child (`spec:` with nothing under it) inherits; it never erases.
  if (over.is_null()) return base;
  if (base.is_mapping() && over.is_mapping()) {
    yaml::Node out = base;
    out.mark = over.mark;
    std::unordered_map<std::string, size_t> index;
    for (size_t i = 0; i < out.entries.size(); ++i) index.emplace(out.entries[i].key, i);
    for (const yaml::Entry& e : over.entries) {
      auto it = index.find(e.key);
      if (it == index.end()) {
        index.emplace(e.key, out.entries.size());
        out.entries.push_back(e);
      } else {
        yaml::Entry& target = out.entries[it->second];
        target.value = merge(target.value, e.value);
        target.key_mark = e.key_mark;
      }
    }
    return out;
  }
  if (base.is_sequence() && over.is_sequence()) {
    yaml::Node out = base;
    out.mark = over.mark;
    std::unordered_set<std::string> seen;
    for (const yaml::Node& i : base.items) seen.insert(i.canonical());
    for (const yaml::Node& i : over.items) {
      if (seen.insert(i.canonical()).second) out.items.push_back(i);
    }
    return out;
  }
  return over;
}

std::optional<Resolved> resolve_file(const std::string& path, const ResolveOptions& options,
                                     Findings& findings) {
  auto text = read_file(path, kMaxProfileBytes);
  if (!text) {
    findings.error(yaml::Mark{std::make_shared<const std::string>(path), 1, 1}, "(file)",
                   text.error().to_string());
    return std::nullopt;
  }
  return resolve_named_text(*text, real_path(path), path, dir_of(path), options, findings);
}

std::optional<Resolved> resolve_builtin(const std::string& name, const ResolveOptions& options,
                                        Findings& findings) {
  auto text = find_builtin(name);
  if (!text) {
    findings.error(yaml::Mark{std::make_shared<const std::string>(name), 1, 1}, "(profile)",
                   "no built-in profile named " + quoted(name));
    return std::nullopt;
  }
  return resolve_named_text(*text, "builtin:" + name, "builtin:" + name, "", options, findings);
}

std::optional<Resolved> resolve_text(std::string_view text, const std::string& name,
                                     const std::string& dir, const ResolveOptions& options,
                                     Findings& findings) {
  return resolve_named_text(text, "text:" + name, name, dir, options, findings);
}

Checked check_file(const std::string& path, const ResolveOptions& options) {
  Findings f;
  auto r = resolve_file(path, options, f);
  return checked(std::move(r), std::move(f));
}

Checked check_builtin(const std::string& name, const ResolveOptions& options) {
  Findings f;
  auto r = resolve_builtin(name, options, f);
  return checked(std::move(r), std::move(f));
}

Checked check_text(std::string_view text, const std::string& name, const ResolveOptions& options) {
  Findings f;
  auto r = resolve_text(text, name, "", options, f);
  return checked(std::move(r), std::move(f));
}

}  // namespace km::profile
