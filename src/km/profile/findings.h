// Findings of profile validation: errors and warnings with a source location and a dotted
// path, printed as `<file>:<line>:<col>: error|warning: <path>: <message>`.
// Thread-safety: not synchronised; one Findings per validation.
#pragma once

#include <string>
#include <vector>

#include "km/yaml/node.h"

namespace km::profile {

enum class Severity { kError, kWarning };

struct Finding {
  Severity severity = Severity::kError;
  yaml::Mark mark;
  std::string path;  // e.g. spec.network.egress.allowedHosts[2]; "(syntax)" for YAML errors
  std::string message;

  std::string to_string() const;
};

class Findings {
 public:
  void error(const yaml::Mark& mark, std::string path, std::string message);
  void warning(const yaml::Mark& mark, std::string path, std::string message);
  void add(Finding f);

  bool has_errors() const { return errors_ > 0; }
  size_t error_count() const { return errors_; }
  size_t warning_count() const { return warnings_; }
  const std::vector<Finding>& items() const { return items_; }
  bool empty() const { return items_.empty(); }

  // At most kMaxFindings are kept (hostile input can produce one per node); the rest are
  // counted in suppressed().
  static constexpr size_t kMaxFindings = 1000;
  size_t suppressed() const { return suppressed_; }

  // Orders by file (in order of first appearance), line, column; drops exact duplicates.
  void sort();

 private:
  std::vector<Finding> items_;
  size_t errors_ = 0;
  size_t warnings_ = 0;
  size_t suppressed_ = 0;
};

}  // namespace km::profile
