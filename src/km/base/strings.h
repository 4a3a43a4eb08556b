// String helpers used across modules.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace km {

// Levenshtein distance, capped: returns `cap + 1` as soon as the distance exceeds `cap`.
size_t edit_distance(std::string_view a, std::string_view b, size_t cap = 8);

// The candidate closest to `word` if it is close enough to be a likely typo, else "".
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

std::string to_lower(std::string_view s);
// ASCII case-insensitive equality (header names, protocol tokens).
bool equals_ignore_case(std::string_view a, std::string_view b);

// Quotes and escapes a value for use in a message; long values are cut with "...".
std::string quoted(std::string_view s, size_t max_len = 60);

std::vector<std::string> split(std::string_view s, char sep);

}  // namespace km
