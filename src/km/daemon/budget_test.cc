#include "km/daemon/budget.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "km/daemon/lifecycle.h"
#include "km/profile/inherit.h"

namespace km::daemon {
namespace {

using store::State;

// $36 per running hour: 10,000 µ$ a second.
constexpr int64_t kRate = 36'000'000;

TEST(Budget, ComputeSpendCountsRunningTimeOnlyAndSurvivesARestart) {
  char tmpl[] = "/tmp/km-budget-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  FakeClock clock(1'000'000);
  auto open = [&] {
    auto s = store::Store::open(dir + "/km.db");
    EXPECT_TRUE(s);
    (*s)->set_clock([&clock] { return clock.now(); });
    return std::move(*s);
  };
  auto st = open();
  store::Sandbox s;
  s.id = "sb-00000001";
  s.profile_name = "p";
  s.profile_yaml = "y";
  s.created_at = clock.now();
  ASSERT_TRUE(st->insert(s));
  auto spent = [&] { return compute_spent_micros(kRate, running_seconds(**st->get(s.id), clock.now())); };
  clock.advance(5);  // starting: not billed
  ASSERT_TRUE(*st->transition(s.id, {State::kStarting}, State::kRunning));
  EXPECT_EQ(spent(), 0);
  clock.advance(60);
  EXPECT_EQ(spent(), 600'000);
  ASSERT_TRUE(*st->transition(s.id, {State::kRunning}, State::kPaused));
  clock.advance(3600);  // an hour paused costs nothing
  EXPECT_EQ(spent(), 600'000);
  ASSERT_TRUE(*st->transition(s.id, {State::kPaused}, State::kRunning));
  clock.advance(30);
  EXPECT_EQ(spent(), 900'000);
  // kmd restarts (ticks missed meanwhile): the spend is the same figure, from the record.
  st.reset();
  clock.advance(10);
  st = open();
  EXPECT_EQ(spent(), 1'000'000);
  ASSERT_TRUE(*st->transition(s.id, {State::kRunning}, State::kStopped));
  clock.advance(86400);
  EXPECT_EQ(spent(), 1'000'000);
  std::system(("rm -rf '" + dir + "'").c_str());
}

TEST(Budget, ComputeSpendIsExactIntegerArithmetic) {
  EXPECT_EQ(compute_spent_micros(100'000, 36), 1'000);   // $0.10/h for 36 s is $0.001
  EXPECT_EQ(compute_spent_micros(100'000, 35), 972);     // rounded down
  EXPECT_EQ(compute_spent_micros(0, 1'000'000), 0);
  EXPECT_EQ(compute_spent_micros(kRate, -5), 0);
  // Large rates and times do not overflow.
  EXPECT_EQ(compute_spent_micros(int64_t{1} << 40, int64_t{1} << 30), int64_t{327942116865947584});
}

TEST(Budget, WarningAtTheThresholdExactly) {
  EXPECT_FALSE(past_warning(799'999, 1'000'000, 0.8));
  EXPECT_TRUE(past_warning(800'000, 1'000'000, 0.8));  // 0.8 × 10^6 with no floating-point fuzz
  EXPECT_TRUE(past_warning(1, 3, 0.333333));
  EXPECT_TRUE(past_warning(5, 5, 1.0));
  EXPECT_FALSE(past_warning(4, 5, 1.0));
  EXPECT_TRUE(past_warning(0, 0, 0.8));
}

TEST(Budget, NoticesInOrderAndAWarningIsNeverSkipped) {
  store::Limits l;
  l.ai_micros = 10'000'000;
  l.compute_micros = 1'000'000;
  l.warning_threshold = 0.5;
  EXPECT_TRUE(budget_reached(l, 4'999'999, 499'999).empty());
  auto n = budget_reached(l, 5'000'000, 0);
  ASSERT_EQ(n.size(), 1u);
  EXPECT_EQ(n[0], (BudgetNotice{"ai", Notice::kWarning, 5'000'000, 10'000'000}));
  // Compute jumped from nothing past its ceiling between two looks: warning, then exhausted.
  n = budget_reached(l, 0, 1'200'000);
  ASSERT_EQ(n.size(), 2u);
  EXPECT_EQ(n[0].kind, Notice::kWarning);
  EXPECT_EQ(n[1], (BudgetNotice{"compute", Notice::kExhausted, 1'200'000, 1'000'000}));
  // A pool without a ceiling never notices.
  store::Limits none;
  EXPECT_TRUE(budget_reached(none, INT64_MAX, INT64_MAX).empty());
}

profile::Model model_of(const std::string& budget) {
  std::string text =
      "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\nmetadata: {name: b}\n"
      "spec:\n  lifecycle: {ttl: 1h, idleTimeout: 30m}\n  network: {egress: {allowedDNSSuffixes: [], allowedHosts: []}}\n  budget: " + budget + "\n";
  auto checked = profile::check_text(text, "b.yaml", {});
  std::string findings;
  for (const auto& f : checked.findings.items()) findings += f.to_string() + "\n";
  EXPECT_TRUE(checked.resolved && !checked.findings.has_errors()) << findings;
  return *profile::decode(checked.resolved->root);
}

TEST(Budget, LimitsComeFromTheProfileUnlessCreateOverridesThem) {
  profile::Model m = model_of("{compute: {maxSpendUSD: 0.1, ratePerHourUSD: 0.29}, ai: {maxSpendUSD: 10}, warningThreshold: 0.75}");
  EXPECT_EQ(m.compute_budget_micros, 100'000);  // decimal text, exactly
  EXPECT_EQ(m.compute_rate_micros_per_hour, 290'000);
  store::Limits l = initial_limits(m, std::nullopt, std::nullopt, 290'000);
  EXPECT_EQ(l.ai_micros, 10'000'000);
  EXPECT_EQ(l.compute_micros, 100'000);
  EXPECT_EQ(l.warning_threshold, 0.75);
  EXPECT_EQ(l.compute_rate_micros_per_hour, 290'000);
  l = initial_limits(m, 2'500'000, 0, 290'000);
  EXPECT_EQ(l.ai_micros, 2'500'000);
  EXPECT_EQ(l.compute_micros, 0);
  profile::Model none = model_of("{}");
  EXPECT_FALSE(none.compute_rate_micros_per_hour);
  l = initial_limits(none, std::nullopt, 5'000'000, 1);
  EXPECT_FALSE(l.ai_micros);
  EXPECT_EQ(l.compute_micros, 5'000'000);
  EXPECT_EQ(l.warning_threshold, 0.8);
}

TEST(Budget, JsonCarriesMicrosUsdAndPercent) {
  BudgetView v;
  v.limits.ai_micros = 10'000'000;
  v.limits.compute_rate_micros_per_hour = kRate;
  v.ai_spent = 2'500'001;
  v.running_seconds = 90;
  v.models.push_back({"claude-sonnet-4", 1000, 200, 0, 0, 3, 2'500'001});
  auto j = budget_json(v);
  EXPECT_EQ(j["ai"]["spent_micros"], 2'500'001);
  EXPECT_EQ(j["ai"]["spent_usd"], "2.500001");
  EXPECT_EQ(j["ai"]["limit_usd"], "10.000000");
  EXPECT_EQ(j["ai"]["percent"], 25.0);
  EXPECT_EQ(j["compute"]["spent_micros"], 900'000);
  EXPECT_TRUE(j["compute"]["limit_micros"].is_null());
  EXPECT_EQ(j["compute"]["rate_usd_per_hour"], "36.000000");
  EXPECT_EQ(j["models"][0]["requests"], 3);
  EXPECT_EQ(j["models"][0]["cost_usd"], "2.500001");
}

}  // namespace
}  // namespace km::daemon
