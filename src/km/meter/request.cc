#include "km/meter/request.h"

#include <array>
#include <vector>

#include <nlohmann/json.hpp>

#include "km/base/strings.h"
#include "km/meter/json_depth.h"
#include "km/meter/usage.h"

namespace km::meter {

namespace {

using nlohmann::json;

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || is_digit(c); }

// An AWS region label: lowercase letters, digits and '-', starting with a letter, no "--".
bool is_region(std::string_view r) {
  if (r.empty() || r.size() > 32 || !(r[0] >= 'a' && r[0] <= 'z') || r.back() == '-') return false;
  for (size_t i = 0; i < r.size(); ++i) {
    char c = r[i];
    if (!is_lower_alnum(c) && c != '-') return false;
    if (c == '-' && r[i - 1] == '-') return false;
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The path's segments as the provider's router would see them (see classify()). nullopt when a
// segment has a malformed escape: the provider refuses such a request, so it costs nothing.
std::optional<std::vector<std::string>> path_segments(std::string_view target) {
  for (std::string_view scheme : {"https://", "http://"}) {
    if (starts_with(target, scheme)) {
      target.remove_prefix(scheme.size());
      size_t slash = target.find('/');
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
      break;
    }
  }
  size_t q = target.find_first_of("?#");
  if (q != std::string_view::npos) target = target.substr(0, q);
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= target.size()) {
    size_t slash = target.find('/', start);
    if (slash == std::string_view::npos) slash = target.size();
    std::string seg;
    if (!percent_decode(target.substr(start, slash - start), seg)) return std::nullopt;
    if (seg == "..") {
      if (!out.empty()) out.pop_back();
    } else if (!seg.empty() && seg != ".") {
      out.push_back(std::move(seg));
    }
    start = slash + 1;
  }
  return out;
}

bool path_is(const std::vector<std::string>& segs, std::initializer_list<std::string_view> want) {
  if (segs.size() != want.size()) return false;
  size_t i = 0;
  for (std::string_view w : want) {
    if (segs[i++] != w) return false;
  }
  return true;
}

std::string model_field(const json& body) {
  auto it = body.find("model");
  if (it == body.end() || !it->is_string()) return "";
  std::string m = it->get<std::string>();
  if (m.size() > kMaxModelName) m.resize(kMaxModelName);
  return m;
}

// A non-negative integer field, clamped to kMaxTokens; 0 when absent or of another type.
int64_t count_field(const json& obj, std::string_view key) {
  if (!obj.is_object()) return 0;
  auto it = obj.find(key);
  if (it == obj.end()) return 0;
  if (it->is_number_unsigned()) {
    uint64_t v = it->get<uint64_t>();
    return v > static_cast<uint64_t>(kMaxTokens) ? kMaxTokens : static_cast<int64_t>(v);
  }
  if (it->is_number_integer()) {
    int64_t v = it->get<int64_t>();
    return v < 0 ? 0 : (v > kMaxTokens ? kMaxTokens : v);
  }
  return 0;
}

bool bool_field(const json& obj, std::string_view key) {
  if (!obj.is_object()) return false;
  auto it = obj.find(key);
  return it != obj.end() && it->is_boolean() && it->get<bool>();
}

const json& object_field(const json& obj, std::string_view key) {
  static const json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

// Known cross-region inference prefixes, and short geography labels that may join them.
bool is_geo_prefix(std::string_view p) {
  static constexpr std::array<std::string_view, 17> kGeo = {
      "us", "us-gov", "eu", "apac", "ap", "jp", "au", "ca", "global", "sa",
      "me", "af", "mx", "il", "in", "kr", "uk"};
  for (std::string_view g : kGeo) {
    if (p == g) return true;
  }
  return false;
}

// Drops "-v<N>[:<N>][:<N>k]" at the end, when something model-like stays in front of it.
std::string strip_version_suffix(std::string s) {
  size_t pos = s.rfind("-v");
  if (pos == std::string::npos || pos == 0) return s;
  std::string_view tail = std::string_view(s).substr(pos + 2);
  size_t i = 0;
  auto digits = [&] {
    size_t n = 0;
    while (i < tail.size() && is_digit(tail[i])) ++i, ++n;
    return n;
  };
  if (digits() == 0) return s;
  if (i < tail.size() && tail[i] == ':') {
    ++i;
    if (digits() == 0) return s;
  }
  if (i < tail.size() && tail[i] == ':') {
    ++i;
    if (digits() == 0 || i >= tail.size() || tail[i] != 'k') return s;
    ++i;
  }
  if (i != tail.size()) return s;
  // "claude-v2" is a model of its own, not "claude" at version 2.
  if (s.substr(0, pos).find('-') == std::string::npos) return s;
  s.resize(pos);
  return s;
}

}  // namespace

std::string_view provider_name(Provider p) {
  switch (p) {
    case Provider::kAnthropic: return "anthropic";
    case Provider::kOpenAI: return "openai";
    case Provider::kBedrock: return "bedrock";
  }
  return "unknown";
}

std::optional<Provider> provider_from_name(std::string_view name) {
  for (Provider p : {Provider::kAnthropic, Provider::kOpenAI, Provider::kBedrock}) {
    if (provider_name(p) == name) return p;
  }
  return std::nullopt;
}

std::optional<Provider> ai_provider_for_host(std::string_view host) {
  if (host == "api.anthropic.com") return Provider::kAnthropic;
  if (host == "api.openai.com") return Provider::kOpenAI;
  constexpr std::string_view kSuffix = ".amazonaws.com";
  if (!ends_with(host, kSuffix)) return std::nullopt;
  std::string_view rest = host.substr(0, host.size() - kSuffix.size());
  for (std::string_view prefix : {"bedrock-runtime.", "bedrock-runtime-fips."}) {
    if (starts_with(rest, prefix) && is_region(rest.substr(prefix.size()))) return Provider::kBedrock;
  }
  return std::nullopt;
}

bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (in.size() - i < 3) return false;
    int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

std::string normalise_bedrock_model(std::string_view model_id) {
  std::string id = to_lower(model_id);
  if (starts_with(id, "arn:")) {
    // arn:partition:service:region:account:resource; the resource may itself hold ':'.
    size_t colons = 0, pos = 0;
    while (colons < 5 && pos != std::string::npos) {
      pos = id.find(':', pos);
      if (pos != std::string::npos) ++pos, ++colons;
    }
    if (colons == 5) {
      std::string resource = id.substr(pos);
      bool named = false;
      for (std::string_view type : {"inference-profile/", "foundation-model/"}) {
        if (starts_with(resource, type)) {
          id = resource.substr(type.size());
          named = true;
          break;
        }
      }
      if (!named) return resource.size() > kMaxModelName ? resource.substr(0, kMaxModelName) : resource;
    }
  }
  size_t first_dot = id.find('.');
  if (first_dot != std::string::npos && id.find('.', first_dot + 1) != std::string::npos &&
      is_geo_prefix(std::string_view(id).substr(0, first_dot))) {
    id.erase(0, first_dot + 1);
  }
  if (starts_with(id, "anthropic.")) id.erase(0, std::string_view("anthropic.").size());
  id = strip_version_suffix(std::move(id));
  if (id.size() > kMaxModelName) id.resize(kMaxModelName);
  return id;
}

AiRequest classify(Provider p, std::string_view method, std::string_view target,
                   std::string_view body) {
  AiRequest req;
  req.provider = p;
  auto segs = path_segments(target);
  if (!segs || method != "POST") return req;

  json doc = body.empty() || !json_depth_within(body) ? json()
                                                      : json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) doc = json::object();

  switch (p) {
    case Provider::kAnthropic:
      if (path_is(*segs, {"v1", "messages"})) {
        req.api = "messages";
        req.billable = true;
      } else if (path_is(*segs, {"v1", "messages", "count_tokens"})) {
        req.api = "count_tokens";
      } else {
        return req;
      }
      req.model = model_field(doc);
      req.stream = bool_field(doc, "stream");
      req.max_output_tokens = count_field(doc, "max_tokens");
      return req;

    case Provider::kOpenAI:
      if (path_is(*segs, {"v1", "chat", "completions"})) {
        req.api = "chat.completions";
        req.billable = true;
        req.max_output_tokens = count_field(doc, "max_completion_tokens");
        if (req.max_output_tokens == 0) req.max_output_tokens = count_field(doc, "max_tokens");
        req.stream_include_usage = bool_field(object_field(doc, "stream_options"), "include_usage");
      } else if (path_is(*segs, {"v1", "responses"})) {
        req.api = "responses";
        req.billable = true;
        req.max_output_tokens = count_field(doc, "max_output_tokens");
      } else if (path_is(*segs, {"v1", "responses", "input_tokens"})) {
        req.api = "count_tokens";
      } else {
        return req;
      }
      req.model = model_field(doc);
      req.stream = bool_field(doc, "stream");
      if (!req.stream) req.stream_include_usage = false;
      return req;

    case Provider::kBedrock: {
      if (segs->size() != 3 || (*segs)[0] != "model") return req;
      const std::string& action = (*segs)[2];
      if (action == "invoke") {
        req.api = "invoke";
      } else if (action == "invoke-with-response-stream") {
        req.api = "invoke-stream";
        req.stream = true;
      } else if (action == "converse") {
        req.api = "converse";
      } else if (action == "converse-stream") {
        req.api = "converse-stream";
        req.stream = true;
      } else if (action == "count-tokens") {
        req.api = "count_tokens";
      } else {
        return req;
      }
      req.billable = req.api != "count_tokens";
      req.model = normalise_bedrock_model((*segs)[1]);
      if (req.api == "converse" || req.api == "converse-stream") {
        req.max_output_tokens = count_field(object_field(doc, "inferenceConfig"), "maxTokens");
      } else {
        req.max_output_tokens = count_field(doc, "max_tokens");
      }
      return req;
    }
  }
  return req;
}

}  // namespace km::meter
