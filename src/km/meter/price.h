// Prices of AI tokens and of compute, and what a metered response costs, in integer
// micro-dollars (µ$, 10^-6 USD) so sums never drift.
//
// The built-in table is src/km/meter/prices.json, embedded at build time; kmd's config may name
// an override file in the same format, merged over it (merged()). The format, for operators
// (docs/prices.md has it with an example):
//   {
//     "version": 1,                      required, 1
//     "comment": "...",                  optional, here and in each provider
//     "providers": {                     optional; keys "anthropic", "openai", "bedrock"
//       "<provider>": {
//         "models": {                    model name (lowercase) -> price, USD per 10^6 tokens
//           "<model>": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}
//         },                             input and output required; cache_read defaults to
//                                        input, cache_write to 1.25 x input (never cheaper
//                                        than the provider could bill)
//         "families": [                  tried in order when no model name matches
//           {"prefix": "gpt-5", "price_of": "gpt-5.5"},      the model name starts with it
//           {"contains": "opus", "price_of": "claude-opus-4-1"}  or contains it
//         ],                             price_of: a model of this provider (or the one it
//                                        inherits), in this file or the built-in table
//         "inherit": "anthropic"         models and families of another provider apply too
//       }
//     },
//     "compute": {
//       "local_vcpu_hour": 0.0208,        USD per vCPU-hour on the local substrate
//       "instance_types": {"t3.medium": 0.0416}   USD per hour by EC2 instance type
//     }
//   }
// Amounts are JSON numbers, 0 or more, with at most 6 decimal places (1 µ$ resolution per
// million tokens). Unknown keys, wrong types and bad amounts are errors naming the JSON path.
//
// Thread-safety: PriceTable is an immutable value once built; builtin() is safe to call from
// any thread. No I/O: callers read the override file.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "km/base/result.h"
#include "km/meter/request.h"
#include "km/meter/usage.h"

namespace km::meter {

// µ$ per million tokens of each kind.
struct Price {
  int64_t input = 0;
  int64_t output = 0;
  int64_t cache_read = 0;
  int64_t cache_write = 0;
  friend bool operator==(const Price&, const Price&) = default;
};

// The price used when a table holds no price at all for a provider (only possible for a table
// built from an override file alone): $100 / $500 per million input / output tokens.
inline constexpr Price kLastResortPrice{100'000'000, 500'000'000, 100'000'000, 125'000'000};

class PriceTable {
 public:
  // The shipped table (prices.json). Aborts only if the embedded file is broken, which its
  // unit test rules out.
  static const PriceTable& builtin();

  // Parses a table in the format above. Family price_of names are checked against this table
  // and the built-in one. Errors: kInvalidArgument, "prices: <json path>: <what>", or the line
  // and column of a JSON syntax error.
  static Result<PriceTable> from_json(std::string_view text);

  // This table with `override_table` laid over it: its models and instance types replace or
  // add entries, its families are tried before this table's, its inherit and local rate replace
  // this table's when it sets them.
  PriceTable merged(const PriceTable& override_table) const;

  struct Lookup {
    Price price;
    std::string matched;  // the table's model whose price applies
    enum How { kExact, kFamily, kFallback } how = kFallback;
  };

  // The price of `model` (case-insensitive): an exact model name, also after dropping a date
  // suffix (-YYYYMMDD, -YYYY-MM-DD) or "-latest"; else the first family that matches; else
  // the most expensive model of the provider (by output, then input price), so an unknown
  // model is never free. Callers warn on kFamily and kFallback.
  Lookup lookup(Provider p, std::string_view model) const;

  // µ$ per hour of a sandbox: "local" is the per-vCPU-hour rate x max(cpus, 1); an EC2
  // instance type (case-insensitive) is its hourly rate, cpus ignored; an unknown type costs
  // the most expensive listed type (or, with none listed, what local would). Rounded up.
  int64_t compute_rate_micros_per_hour(std::string_view substrate_or_instance_type, double cpus) const;

 private:
  struct Family {
    bool prefix = true;  // else "contains"
    std::string pattern;
    std::string price_of;
  };
  struct ProviderPrices {
    std::map<std::string, Price> models;
    std::vector<Family> families;
    std::optional<Provider> inherit;
  };
  static Result<PriceTable> parse(std::string_view text, const PriceTable* base);
  const Price* find_model(Provider p, const std::string& name, std::string* matched) const;

  std::array<ProviderPrices, 3> providers_;
  std::optional<int64_t> local_vcpu_hour_;
  std::map<std::string, int64_t> instance_types_;
};

// What `u` costs at `p`: the sum over input, output, cache_read and cache_write of tokens x
// µ$ per million, computed exactly and rounded up to the next µ$. Negative figures count as 0;
// reasoning tokens are part of output and not added again.
int64_t cost_micros(const Usage& u, const Price& p);

// "$1.234567" (always six decimals; "-$0.000001" for negatives).
std::string format_usd(int64_t micros);

}  // namespace km::meter
