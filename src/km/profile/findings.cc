#include "km/profile/findings.h"

#include <algorithm>
#include <map>
#include <tuple>

namespace km::profile {

std::string Finding::to_string() const {
  return mark.file_name() + ":" + std::to_string(mark.line) + ":" + std::to_string(mark.col) +
         ": " + (severity == Severity::kError ? "error" : "warning") + ": " + (path.empty() ? std::string("(document)") : path) + ": " + message;
}

void Findings::error(const yaml::Mark& mark, std::string path, std::string message) {
  add(Finding{Severity::kError, mark, std::move(path), std::move(message)});
}

void Findings::warning(const yaml::Mark& mark, std::string path, std::string message) {
  add(Finding{Severity::kWarning, mark, std::move(path), std::move(message)});
}

void Findings::add(Finding f) {
  if (f.severity == Severity::kError) {
    ++errors_;
  } else {
    ++warnings_;
  }
  if (items_.size() >= kMaxFindings) {
    ++suppressed_;
    return;
  }
  items_.push_back(std::move(f));
}

void Findings::sort() {
  std::map<std::string, size_t> file_order;
  for (const Finding& f : items_) file_order.emplace(f.mark.file_name(), file_order.size());
  auto key = [&](const Finding& f) {
    return std::make_tuple(file_order[f.mark.file_name()], f.mark.line, f.mark.col, f.path,
                           f.severity, f.message);
  };
  std::stable_sort(items_.begin(), items_.end(),
                   [&](const Finding& a, const Finding& b) { return key(a) < key(b); });
  auto count = [&](Severity sev) {
    return static_cast<size_t>(std::count_if(items_.begin(), items_.end(), [&](const Finding& f) { return f.severity == sev; }));
  };
  size_t kept_errors = count(Severity::kError), kept_warnings = count(Severity::kWarning);
  items_.erase(std::unique(items_.begin(), items_.end(),
                           [&](const Finding& a, const Finding& b) { return key(a) == key(b); }),
               items_.end());
  // Duplicates removed from what is kept; suppressed findings still count.
  errors_ -= kept_errors - count(Severity::kError);
  warnings_ -= kept_warnings - count(Severity::kWarning);
}

}  // namespace km::profile
