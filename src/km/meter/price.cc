#include "km/meter/price.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include <nlohmann/json.hpp>

#include "km/base/check.h"
#include "km/base/strings.h"

namespace km::embedded {
struct File {
  const char* name;
  const unsigned char* data;
  std::size_t size;
};
extern const File builtin_prices[];
extern const std::size_t builtin_prices_count;
}  // namespace km::embedded

namespace km::meter {

namespace {

using nlohmann::json;

__extension__ typedef __int128 int128;

constexpr size_t kProviders = 3;
// Largest amount accepted: USD per million tokens, and USD per hour.
constexpr double kMaxTokenPriceUsd = 1'000'000;
constexpr double kMaxHourlyUsd = 10'000;

size_t index_of(Provider p) { return static_cast<size_t>(p); }

Unexpected<Error> bad(const std::string& path, std::string_view what) {
  return fail(ErrorCode::kInvalidArgument, "prices: " + path + ": " + std::string(what));
}

bool plain_key(std::string_view k) {
  if (k.empty()) return false;
  for (char c : k) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

std::string child(const std::string& parent, std::string_view key) {
  std::string k = plain_key(key) ? std::string(key) : "[" + quoted(key, 80) + "]";
  if (parent.empty()) return k;
  return plain_key(key) ? parent + "." + k : parent + k;
}

std::string type_name(const json& v) { return v.type_name(); }

Status only_keys(const json& obj, const std::string& path, std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : obj.items()) {
    bool known = false;
    for (std::string_view a : allowed) known = known || key == a;
    if (!known) return bad(child(path, key), "unknown key");
  }
  return ok();
}

// A US dollar amount as integer µ$: a number >= 0, at most `max_usd`, at most 6 decimals.
Result<int64_t> usd_micros(const json& v, const std::string& path, double max_usd) {
  if (!v.is_number()) return bad(path, "expected a number of US dollars, got " + type_name(v));
  double d = v.get<double>();
  if (!(d >= 0)) return bad(path, "must not be negative");
  if (d > max_usd) return bad(path, "more than " + std::to_string(static_cast<int64_t>(max_usd)) + " US dollars");
  double scaled = d * 1e6;
  double rounded = std::round(scaled);
  if (std::fabs(scaled - rounded) > 1e-3) return bad(path, "more than 6 decimal places");
  return static_cast<int64_t>(rounded);
}

Result<Price> parse_price(const json& v, const std::string& path) {
  if (!v.is_object()) return bad(path, "expected an object with input and output prices, got " + type_name(v));
  KM_TRY(only_keys(v, path, {"input", "output", "cache_read", "cache_write"}));
  for (std::string_view required : {"input", "output"}) {
    if (!v.contains(required)) return bad(child(path, required), "missing");
  }
  Price p;
  KM_ASSIGN_OR_RETURN(p.input, usd_micros(v.at("input"), child(path, "input"), kMaxTokenPriceUsd));
  KM_ASSIGN_OR_RETURN(p.output, usd_micros(v.at("output"), child(path, "output"), kMaxTokenPriceUsd));
  if (v.contains("cache_read")) {
    KM_ASSIGN_OR_RETURN(p.cache_read, usd_micros(v.at("cache_read"), child(path, "cache_read"), kMaxTokenPriceUsd));
  } else {
    p.cache_read = p.input;
  }
  if (v.contains("cache_write")) {
    KM_ASSIGN_OR_RETURN(p.cache_write,
                        usd_micros(v.at("cache_write"), child(path, "cache_write"), kMaxTokenPriceUsd));
  } else {
    p.cache_write = (p.input * 5 + 3) / 4;  // 1.25 x input, rounded up
  }
  return p;
}

Status check_string(const json& v, const std::string& path) {
  if (!v.is_string()) return bad(path, "expected a string, got " + type_name(v));
  return ok();
}

bool is_digits(std::string_view s) {
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return !s.empty();
}

// "claude-sonnet-4-5-20250929" -> "claude-sonnet-4-5"; "gpt-4o-2024-08-06" -> "gpt-4o";
// "claude-3-7-sonnet-latest" -> "claude-3-7-sonnet". Anything else unchanged.
std::string strip_date_suffix(std::string s) {
  constexpr std::string_view kLatest = "-latest";
  if (s.size() > kLatest.size() && s.compare(s.size() - kLatest.size(), kLatest.size(), kLatest) == 0) {
    s.resize(s.size() - kLatest.size());
    return s;
  }
  if (s.size() > 9 && s[s.size() - 9] == '-' && is_digits(std::string_view(s).substr(s.size() - 8))) {
    s.resize(s.size() - 9);
    return s;
  }
  if (s.size() > 11) {
    std::string_view t = std::string_view(s).substr(s.size() - 11);  // -YYYY-MM-DD
    if (t[0] == '-' && t[5] == '-' && t[8] == '-' && is_digits(t.substr(1, 4)) && is_digits(t.substr(6, 2)) &&
        is_digits(t.substr(9, 2))) {
      s.resize(s.size() - 11);
    }
  }
  return s;
}

std::string trimmed_lower(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return to_lower(s);
}

bool more_expensive(const Price& a, const Price& b) {
  if (a.output != b.output) return a.output > b.output;
  return a.input > b.input;
}

}  // namespace

const Price* PriceTable::find_model(Provider p, const std::string& name, std::string* matched) const {
  std::optional<Provider> cur = p;
  for (size_t depth = 0; cur && depth < kProviders; ++depth) {
    const ProviderPrices& pp = providers_[index_of(*cur)];
    auto it = pp.models.find(name);
    if (it != pp.models.end()) {
      if (matched) *matched = it->first;
      return &it->second;
    }
    cur = pp.inherit;
  }
  return nullptr;
}

Result<PriceTable> PriceTable::parse(std::string_view text, const PriceTable* base) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    // The position only: the library's message quotes the bytes it choked on.
    size_t byte = e.byte == 0 ? 0 : std::min<size_t>(e.byte - 1, text.size());
    size_t line = 1, col = 1;
    for (size_t i = 0; i < byte; ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return fail(ErrorCode::kInvalidArgument,
                "prices: JSON syntax error at line " + std::to_string(line) + ", column " + std::to_string(col));
  }
  if (!doc.is_object()) return bad("(top level)", "expected an object, got " + type_name(doc));
  KM_TRY(only_keys(doc, "", {"version", "comment", "providers", "compute"}));
  if (!doc.contains("version")) return bad("version", "missing (must be 1)");
  if (!doc.at("version").is_number_integer() || doc.at("version").get<int64_t>() != 1) {
    return bad("version", "unsupported; this km reads version 1");
  }
  if (doc.contains("comment")) KM_TRY(check_string(doc.at("comment"), "comment"));

  PriceTable t;
  if (doc.contains("providers")) {
    const json& providers = doc.at("providers");
    if (!providers.is_object()) return bad("providers", "expected an object, got " + type_name(providers));
    for (const auto& [pname, pv] : providers.items()) {
      std::string ppath = child("providers", pname);
      auto provider = provider_from_name(pname);
      if (!provider) return bad(ppath, "unknown provider (anthropic, openai or bedrock)");
      if (!pv.is_object()) return bad(ppath, "expected an object, got " + type_name(pv));
      KM_TRY(only_keys(pv, ppath, {"comment", "models", "families", "inherit"}));
      ProviderPrices& pp = t.providers_[index_of(*provider)];
      if (pv.contains("comment")) KM_TRY(check_string(pv.at("comment"), child(ppath, "comment")));
      if (pv.contains("models")) {
        const json& models = pv.at("models");
        std::string mpath = child(ppath, "models");
        if (!models.is_object()) return bad(mpath, "expected an object, got " + type_name(models));
        for (const auto& [model, price] : models.items()) {
          std::string key = trimmed_lower(model);
          if (key.empty()) return bad(child(mpath, model), "empty model name");
          KM_ASSIGN_OR_RETURN(pp.models[key], parse_price(price, child(mpath, model)));
        }
      }
      if (pv.contains("families")) {
        const json& families = pv.at("families");
        std::string fpath = child(ppath, "families");
        if (!families.is_array()) return bad(fpath, "expected an array, got " + type_name(families));
        for (size_t i = 0; i < families.size(); ++i) {
          const json& f = families[i];
          std::string path = fpath + "[" + std::to_string(i) + "]";
          if (!f.is_object()) return bad(path, "expected an object, got " + type_name(f));
          KM_TRY(only_keys(f, path, {"prefix", "contains", "price_of"}));
          bool has_prefix = f.contains("prefix"), has_contains = f.contains("contains");
          if (has_prefix == has_contains) return bad(path, "needs exactly one of prefix and contains");
          const char* kind = has_prefix ? "prefix" : "contains";
          KM_TRY(check_string(f.at(kind), child(path, kind)));
          if (!f.contains("price_of")) return bad(child(path, "price_of"), "missing");
          KM_TRY(check_string(f.at("price_of"), child(path, "price_of")));
          Family fam{has_prefix, trimmed_lower(f.at(kind).get<std::string>()),
                     trimmed_lower(f.at("price_of").get<std::string>())};
          if (fam.pattern.empty()) return bad(child(path, kind), "empty pattern");
          pp.families.push_back(std::move(fam));
        }
      }
      if (pv.contains("inherit")) {
        std::string ipath = child(ppath, "inherit");
        KM_TRY(check_string(pv.at("inherit"), ipath));
        auto from = provider_from_name(pv.at("inherit").get<std::string>());
        if (!from) return bad(ipath, "unknown provider (anthropic, openai or bedrock)");
        if (*from == *provider) return bad(ipath, "a provider cannot inherit from itself");
        pp.inherit = from;
      }
    }
  }

  if (doc.contains("compute")) {
    const json& compute = doc.at("compute");
    if (!compute.is_object()) return bad("compute", "expected an object, got " + type_name(compute));
    KM_TRY(only_keys(compute, "compute", {"local_vcpu_hour", "instance_types"}));
    if (compute.contains("local_vcpu_hour")) {
      KM_ASSIGN_OR_RETURN(t.local_vcpu_hour_,
                          usd_micros(compute.at("local_vcpu_hour"), "compute.local_vcpu_hour", kMaxHourlyUsd));
    }
    if (compute.contains("instance_types")) {
      const json& types = compute.at("instance_types");
      if (!types.is_object()) return bad("compute.instance_types", "expected an object, got " + type_name(types));
      for (const auto& [type, rate] : types.items()) {
        std::string path = child("compute.instance_types", type);
        std::string key = trimmed_lower(type);
        if (key.empty()) return bad(path, "empty instance type");
        KM_ASSIGN_OR_RETURN(t.instance_types_[key], usd_micros(rate, path, kMaxHourlyUsd));
      }
    }
  }

  // References are checked in the table as it will be used: this one over the built-in one.
  PriceTable effective = base ? base->merged(t) : t;
  for (size_t i = 0; i < kProviders; ++i) {
    auto p = static_cast<Provider>(i);
    std::string ppath = child("providers", provider_name(p));
    std::optional<Provider> cur = effective.providers_[i].inherit;
    for (size_t depth = 0; cur; ++depth) {
      if (depth >= kProviders) return bad(child(ppath, "inherit"), "inherits in a cycle");
      cur = effective.providers_[index_of(*cur)].inherit;
    }
    for (size_t f = 0; f < t.providers_[i].families.size(); ++f) {
      const Family& fam = t.providers_[i].families[f];
      if (!effective.find_model(p, fam.price_of, nullptr)) {
        return bad(child(ppath, "families") + "[" + std::to_string(f) + "].price_of",
                   "names no model of " + std::string(provider_name(p)));
      }
    }
  }
  return t;
}

Result<PriceTable> PriceTable::from_json(std::string_view text) { return parse(text, &builtin()); }

const PriceTable& PriceTable::builtin() {
  static const PriceTable table = [] {
    KM_CHECK(embedded::builtin_prices_count == 1);
    const auto& f = embedded::builtin_prices[0];
    auto t = parse(std::string_view(reinterpret_cast<const char*>(f.data), f.size), nullptr);
    if (!t) std::fprintf(stderr, "km: built-in price table: %s\n", t.error().to_string().c_str());
    KM_CHECK(t.has_value());
    return std::move(t).value();
  }();
  return table;
}

PriceTable PriceTable::merged(const PriceTable& o) const {
  PriceTable t = *this;
  for (size_t i = 0; i < kProviders; ++i) {
    ProviderPrices& dst = t.providers_[i];
    const ProviderPrices& src = o.providers_[i];
    for (const auto& [name, price] : src.models) dst.models[name] = price;
    std::vector<Family> families = src.families;
    families.insert(families.end(), dst.families.begin(), dst.families.end());
    dst.families = std::move(families);
    if (src.inherit) dst.inherit = src.inherit;
  }
  if (o.local_vcpu_hour_) t.local_vcpu_hour_ = o.local_vcpu_hour_;
  for (const auto& [type, rate] : o.instance_types_) t.instance_types_[type] = rate;
  return t;
}

PriceTable::Lookup PriceTable::lookup(Provider p, std::string_view model) const {
  Lookup out;
  std::string name = trimmed_lower(model);
  std::string base = strip_date_suffix(name);
  for (const std::string* candidate : {&name, &base}) {
    if (const Price* price = find_model(p, *candidate, &out.matched)) {
      out.price = *price;
      out.how = Lookup::kExact;
      return out;
    }
  }
  // Families: the provider's own first, then those of the providers it inherits from.
  std::optional<Provider> cur = p;
  for (size_t depth = 0; cur && depth < kProviders; ++depth) {
    const ProviderPrices& pp = providers_[index_of(*cur)];
    for (const Family& fam : pp.families) {
      bool match = fam.prefix ? base.compare(0, fam.pattern.size(), fam.pattern) == 0
                              : base.find(fam.pattern) != std::string::npos;
      if (!match) continue;
      if (const Price* price = find_model(p, fam.price_of, &out.matched)) {
        out.price = *price;
        out.how = Lookup::kFamily;
        return out;
      }
    }
    cur = pp.inherit;
  }
  out.how = Lookup::kFallback;
  const Price* best = nullptr;
  cur = p;
  for (size_t depth = 0; cur && depth < kProviders; ++depth) {
    const ProviderPrices& pp = providers_[index_of(*cur)];
    for (const auto& [m, price] : pp.models) {
      if (!best || more_expensive(price, *best)) {
        best = &price;
        out.matched = m;
      }
    }
    cur = pp.inherit;
  }
  out.price = best ? *best : kLastResortPrice;
  return out;
}

int64_t PriceTable::compute_rate_micros_per_hour(std::string_view substrate_or_instance_type, double cpus) const {
  std::string key = trimmed_lower(substrate_or_instance_type);
  int64_t max_type = 0;
  for (const auto& [type, rate] : instance_types_) max_type = std::max(max_type, rate);
  if (key != "local") {
    auto it = instance_types_.find(key);
    if (it != instance_types_.end()) return it->second;
    if (max_type > 0 || !local_vcpu_hour_) return max_type;
  }
  if (!(cpus >= 1)) cpus = 1;  // also NaN
  if (cpus > 1e6) cpus = 1e6;
  int64_t rate = local_vcpu_hour_.value_or(max_type);
  double x = static_cast<double>(rate) * cpus;
  double r = std::round(x);
  // Products like 20800 x 1.1 land a hair above the integer they mean.
  return static_cast<int64_t>(std::fabs(x - r) < 1e-9 * std::max(1.0, x) ? r : std::ceil(x));
}

int64_t cost_micros(const Usage& u, const Price& p) {
  constexpr int64_t kCap = int64_t{1} << 53;
  auto clamp = [](int64_t v) { return v < 0 ? 0 : (v > kCap ? kCap : v); };
  int128 total = int128{clamp(u.input)} * clamp(p.input) + int128{clamp(u.output)} * clamp(p.output) +
                 int128{clamp(u.cache_read)} * clamp(p.cache_read) +
                 int128{clamp(u.cache_write)} * clamp(p.cache_write);
  int128 micros = (total + 999'999) / 1'000'000;
  constexpr int128 kMax = std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(micros > kMax ? kMax : micros);
}

std::string format_usd(int64_t micros) {
  uint64_t mag = micros < 0 ? 0 - static_cast<uint64_t>(micros) : static_cast<uint64_t>(micros);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s$%llu.%06llu", micros < 0 ? "-" : "",
                static_cast<unsigned long long>(mag / 1'000'000), static_cast<unsigned long long>(mag % 1'000'000));
  return buf;
}

}  // namespace km::meter
