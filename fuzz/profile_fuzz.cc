// Fuzz target: a SandboxProfile from untrusted bytes through the whole `km validate` pipeline
// (YAML parse with limits, extends resolution against built-ins, validation), then the
// resolved tree written back as YAML must read back identical. Any crash, hang, sanitizer
// report or abort is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "km/profile/inherit.h"
#include "km/profile/validate.h"
#include "km/yaml/emit.h"
#include "km/yaml/parse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  km::profile::ResolveOptions options;
  options.allow_files = false;  // hermetic: never read the machine's files
  km::profile::Findings findings;
  auto resolved = km::profile::resolve_text(text, "fuzz.yaml", "", options, findings);
  if (!resolved) return 0;
  km::profile::validate_tree(resolved->root, {}, findings);
  findings.sort();
  for (const auto& f : findings.items()) (void)f.to_string();

  auto out = km::yaml::emit(resolved->root);
  if (!out) {
    std::fprintf(stderr, "emit failed: %s\n", out.error().to_string().c_str());
    std::abort();
  }
  auto back = km::yaml::parse(*out, "emitted.yaml");
  if (!back) {
    std::fprintf(stderr, "emitted YAML does not parse: %s\n%s\n", back.error().to_string().c_str(), out->c_str());
    std::abort();
  }
  if (!deep_equal(resolved->root, *back)) {
    std::fprintf(stderr, "emitted YAML reads back different:\n%s\n", out->c_str());
    std::abort();
  }
  return 0;
}
