#include "km/cli/profile_commands.h"

#include <sys/stat.h>

#include <cstdlib>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "km/base/strings.h"
#include "km/profile/builtins.h"
#include "km/profile/inherit.h"
#include "km/profile/json_schema.h"
#include "km/yaml/emit.h"
#include "km/yaml/json.h"
#include "km/yaml/parse.h"

namespace km::cli {

namespace {

using Json = nlohmann::ordered_json;

profile::ResolveOptions resolve_options(const GlobalOptions& g) {
  profile::ResolveOptions o;
  o.search_paths = g.profile_paths;
  if (const char* env = std::getenv("KM_PROFILE_PATH")) {
    for (const std::string& p : split(env, ':')) {
      if (!p.empty()) o.search_paths.push_back(p);
    }
  }
  return o;
}

bool file_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

Json finding_json(const profile::Finding& f) {
  return Json{{"severity", f.severity == profile::Severity::kError ? "error" : "warning"},
              {"file", f.mark.file_name()},
              {"line", f.mark.line},
              {"column", f.mark.col},
              {"path", f.path.empty() ? "(document)" : f.path},
              {"message", f.message}};
}

std::string plural(size_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

// A file path, or a built-in name when no such file exists.
profile::Checked check_ref(const std::string& ref, const profile::ResolveOptions& o) {
  if (!file_exists(ref) && profile::find_builtin(ref)) return profile::check_builtin(ref, o);
  return profile::check_file(ref, o);
}

int cmd_validate(const GlobalOptions& g, const std::vector<std::string>& files) {
  auto opts = resolve_options(g);
  bool any_error = false;
  Json results = Json::array();
  for (const std::string& file : files) {
    profile::Checked c = check_ref(file, opts);
    bool abstract = c.resolved && c.resolved->abstract;
    bool valid = !c.findings.has_errors() && c.resolved.has_value();
    any_error = any_error || !valid;
    if (g.output == "json") {
      Json r{{"file", file}, {"valid", valid}, {"abstract", abstract},
             {"errors", c.findings.error_count()}, {"suppressed", c.findings.suppressed()},
             {"findings", Json::array()}};
      for (const auto& f : c.findings.items()) r["findings"].push_back(finding_json(f));
      results.push_back(r);
      continue;
    }
    for (const auto& f : c.findings.items()) std::fprintf(stderr, "%s\n", f.to_string().c_str());
    if (c.findings.suppressed()) {
      std::fprintf(stderr, "%s: %zu more findings not shown\n", file.c_str(), c.findings.suppressed());
    }
    std::string verdict;
    if (valid) {
      verdict = abstract ? "valid (abstract fragment)" : "valid";
      if (c.findings.warning_count()) verdict += " (" + plural(c.findings.warning_count(), "warning") + ")";
    } else {
      verdict = "invalid (" + plural(c.findings.error_count(), "error");
      if (c.findings.warning_count()) verdict += ", " + plural(c.findings.warning_count(), "warning");
      verdict += ")";
    }
    std::printf("%s: %s\n", file.c_str(), verdict.c_str());
  }
  if (g.output == "json") std::printf("%s\n", results.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
  return any_error ? kExitFailure : kExitOk;
}

int cmd_resolve(const GlobalOptions& g, const std::string& ref) {
  profile::Checked c = check_ref(ref, resolve_options(g));
  for (const auto& f : c.findings.items()) std::fprintf(stderr, "%s\n", f.to_string().c_str());
  if (!c.resolved || c.findings.has_errors()) {
    print_error(ref + " does not resolve to a valid profile", "run `km validate " + ref + "` for the findings above");
    return kExitFailure;
  }
  if (g.output == "json") {
    std::printf("%s\n", yaml::to_json(c.resolved->root).dump(2, ' ', false, Json::error_handler_t::replace).c_str());
    return kExitOk;
  }
  auto text = yaml::emit(c.resolved->root);
  if (!text) {
    print_error(text.error());
    return kExitFailure;
  }
  std::fputs(text->c_str(), stdout);
  return kExitOk;
}

std::string summary_of(const yaml::Node& root) {
  const yaml::Node* sfx = yaml::at_path(root, "spec.network.egress.allowedDNSSuffixes");
  const yaml::Node* hosts = yaml::at_path(root, "spec.network.egress.allowedHosts");
  size_t n = (sfx && sfx->is_sequence() ? sfx->items.size() : 0) +
             (hosts && hosts->is_sequence() ? hosts->items.size() : 0);
  auto has_star = [](const yaml::Node* l) {
    if (!l || !l->is_sequence()) return false;
    for (const auto& i : l->items) {
      if (i.value == "*") return true;
    }
    return false;
  };
  if (has_star(sfx) || has_star(hosts)) return "any";
  if (n == 0) return "none";
  return std::to_string(n) + " rules";
}

int cmd_list(const GlobalOptions& g) {
  Json out = Json::array();
  std::vector<std::vector<std::string>> rows;
  for (const auto& b : profile::builtins()) {
    profile::Checked c = profile::check_builtin(b.name, resolve_options(g));
    if (!c.resolved) continue;
    const yaml::Node& r = c.resolved->root;
    auto text = [&](const char* path, const char* dflt) {
      const yaml::Node* n = yaml::at_path(r, path);
      return n && n->is_scalar() ? n->value : std::string(dflt);
    };
    std::vector<std::string> row = {b.name,
                                    text("spec.runtime.substrate", "local"),
                                    text("spec.lifecycle.ttl", "-"),
                                    text("spec.network.enforcement", "proxy"),
                                    summary_of(r),
                                    text("metadata.description", "")};
    out.push_back(Json{{"name", row[0]}, {"substrate", row[1]}, {"ttl", row[2]},
                       {"enforcement", row[3]}, {"egress", row[4]}, {"description", row[5]}});
    rows.push_back(std::move(row));
  }
  if (g.output == "json") {
    std::printf("%s\n", out.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
  } else {
    std::fputs(render_table({"NAME", "SUBSTRATE", "TTL", "ENFORCEMENT", "EGRESS", "DESCRIPTION"}, rows).c_str(), stdout);
  }
  return kExitOk;
}

int cmd_show(const std::string& name) {
  auto text = profile::find_builtin(name);
  if (!text) {
    std::vector<std::string> names;
    for (const auto& b : profile::builtins()) names.push_back(b.name);
    std::string near = closest_match(name, names);
    std::string all;
    for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
    print_error("no built-in profile named " + km::quoted(name),
                near.empty() ? "built-in profiles: " + all : "did you mean " + near + "?");
    return kExitFailure;
  }
  std::fwrite(text->data(), 1, text->size(), stdout);
  return kExitOk;
}

int cmd_schema(bool markdown) {
  if (markdown) {
    std::fputs(profile::markdown_reference().c_str(), stdout);
  } else {
    std::printf("%s\n", profile::json_schema().dump(2).c_str());
  }
  return kExitOk;
}

}  // namespace

void add_profile_commands(CLI::App& app, GlobalOptions& global, int* exit_code) {
  auto files = std::make_shared<std::vector<std::string>>();
  CLI::App* validate = app.add_subcommand("validate", "Validate profiles (resolving extends); exit 1 if any has an error");
  validate->add_option("files", *files, "Profile files (or built-in names)")->required();
  validate->callback([&global, files, exit_code] { *exit_code = cmd_validate(global, *files); });

  CLI::App* prof = app.add_subcommand("profile", "Inspect profiles");
  prof->require_subcommand(1);

  auto ref = std::make_shared<std::string>();
  CLI::App* resolve = prof->add_subcommand("resolve", "Print the resolved profile (extends applied) as YAML");
  resolve->add_option("file", *ref, "Profile file (or built-in name)")->required();
  resolve->callback([&global, ref, exit_code] { *exit_code = cmd_resolve(global, *ref); });

  CLI::App* list = prof->add_subcommand("list", "List the built-in profiles");
  list->callback([&global, exit_code] { *exit_code = cmd_list(global); });

  auto name = std::make_shared<std::string>();
  CLI::App* show = prof->add_subcommand("show", "Print a built-in profile");
  show->add_option("name", *name, "Built-in profile name")->required();
  show->callback([name, exit_code] { *exit_code = cmd_show(*name); });

  auto markdown = std::make_shared<bool>(false);
  CLI::App* schema = prof->add_subcommand("schema", "Print the JSON Schema (draft 2020-12) of the profile");
  schema->add_flag("--markdown", *markdown, "Print the field reference as Markdown instead");
  schema->callback([markdown, exit_code] { *exit_code = cmd_schema(*markdown); });
}

}  // namespace km::cli
