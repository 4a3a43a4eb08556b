// kmd's lifecycle with an injected clock, on real sandboxes: TTL and idle warnings and expiry,
// the teardown policies, locks, and the extend cap. No sleeps: the clock is moved by hand.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "km/daemon/service.h"

namespace km::testing {
namespace {

using Json = nlohmann::json;

class Lifecycle : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "privileged test: needs root";
    root_ = make_temp_dir("km-life");
    ::chmod(root_.c_str(), 0711);
    daemon::Config c;
    c.state_dir = root_ + "/state";
    c.runtime_dir = root_ + "/run";
    c.init_path = KM_SANDBOX_INIT;
    c.cgroup_name = "km-life-" + std::to_string(::getpid());
    c.exec_audit = false;  // these tests are about timers (the exec audit has its own)
    clock_ = std::make_shared<daemon::FakeClock>(1'800'000'000);
    auto s = daemon::Service::create(c, clock_, log_);
    if (!s) GTEST_SKIP() << "cannot create sandboxes here: " << s.error().to_string();
    service_ = std::move(*s);
  }
  void TearDown() override {
    if (service_) {
      auto all = service_->store().list();  // keep the Result alive across the loop
      for (const auto& s : all.value()) {
        call({{"op", "unlock"}, {"ref", s.id}});
        call({{"op", "destroy"}, {"ref", s.id}});
      }
      service_.reset();
      // The service's cgroup directory (beneath this process's) in every hierarchy it used.
      std::string name = "km-life-" + std::to_string(::getpid());
      std::system(("for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do rmdir \"$h\"" + name + " 2>/dev/null; done; "
                   "find /sys/fs/cgroup -maxdepth 3 -type d -name '" + name + "' -exec rmdir {} + 2>/dev/null").c_str());
    }
    std::system(("umount -l '" + root_ + "/run/bpf' 2>/dev/null; rm -rf '" + root_ + "'").c_str());
  }
  Json call(const Json& req) {
    std::vector<UniqueFd> fds;
    return service_->handle(req, fds, -1);
  }
  std::string create(const std::string& lifecycle) {
    std::string yaml = "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\nmetadata: {name: t}\n"
                       "spec:\n  lifecycle: " + lifecycle + "\n"
                       "  network: {egress: {allowedDNSSuffixes: [], allowedHosts: []}}\n";
    Json r = call({{"op", "create"}, {"profile", yaml}});
    EXPECT_TRUE(r.value("ok", false)) << r.dump();
    return r.value("sandbox", Json::object()).value("id", std::string());
  }
  std::string state(const std::string& id) { return std::string(store::state_name((*service_->store().get(id))->state)); }
  std::vector<std::string> events(const std::string& id) {
    std::vector<std::string> out;
    auto evs = service_->store().events(id);
    for (const auto& e : evs.value()) out.push_back(e.type);
    return out;
  }
  bool has_event(const std::string& id, const std::string& type) {
    auto e = events(id);
    return std::find(e.begin(), e.end(), type) != e.end();
  }

  std::string root_;
  log::Logger log_{"test", 2};
  std::shared_ptr<daemon::FakeClock> clock_;
  std::unique_ptr<daemon::Service> service_;
};

TEST_F(Lifecycle, TtlWarnsThenDestroys) {
  std::string id = create("{ttl: 1h, idleTimeout: 0}");
  clock_->advance(3600 - 299);
  service_->tick();
  EXPECT_TRUE(has_event(id, "ttl-warning"));
  EXPECT_EQ(state(id), "running");
  clock_->advance(299);
  service_->tick();
  EXPECT_EQ(state(id), "destroyed");
  EXPECT_EQ((*service_->store().get(id))->reason, "ttl expired");
}

TEST_F(Lifecycle, IdleStopsWithTheStopPolicyAndActivityRearms) {
  std::string id = create("{ttl: 8h, idleTimeout: 10m, teardownPolicy: stop}");
  clock_->advance(9 * 60);
  ASSERT_TRUE(service_->store().touch(id, clock_->now()));  // activity (an exec) at 9m
  clock_->advance(9 * 60);
  service_->tick();
  EXPECT_EQ(state(id), "running");  // only 9 idle minutes since the activity
  clock_->advance(60);
  service_->tick();
  EXPECT_TRUE(has_event(id, "idle-warning"));
  clock_->advance(60);
  service_->tick();
  EXPECT_EQ(state(id), "stopped");
  EXPECT_NE((*service_->store().get(id))->reason.find("idle"), std::string::npos);
}

TEST_F(Lifecycle, LockedSandboxesAreSkippedAndRetainOnlyRecords) {
  std::string locked = create("{ttl: 1h, idleTimeout: 0}");
  std::string retained = create("{ttl: 1h, idleTimeout: 0, teardownPolicy: retain}");
  ASSERT_TRUE(call({{"op", "lock"}, {"ref", locked}}).value("ok", false));
  clock_->advance(3600);
  service_->tick();
  EXPECT_EQ(state(locked), "running");
  EXPECT_TRUE(has_event(locked, "expiry-skipped"));
  EXPECT_EQ(state(retained), "running");
  EXPECT_TRUE(has_event(retained, "expired-retained"));
  // Neither fires again.
  size_t n = events(locked).size() + events(retained).size();
  clock_->advance(3600);
  service_->tick();
  EXPECT_EQ(events(locked).size() + events(retained).size(), n);
}

TEST_F(Lifecycle, ExtendIsCappedByMaxLifetime) {
  std::string id = create("{ttl: 1h, idleTimeout: 0, maxLifetime: 3h}");
  Json r = call({{"op", "extend"}, {"ref", id}, {"seconds", 3600}});
  EXPECT_FALSE(r.value("capped", true)) << r.dump();
  r = call({{"op", "extend"}, {"ref", id}, {"seconds", 36000}});
  EXPECT_TRUE(r.value("capped", false)) << r.dump();
  EXPECT_EQ(r["sandbox"]["expires_at"].get<int64_t>(), (*service_->store().get(id))->created_at + 3 * 3600);
  clock_->advance(3 * 3600);
  Json late = call({{"op", "extend"}, {"ref", id}, {"seconds", 60}});
  EXPECT_NE(late.value("error", std::string()).find("maxLifetime"), std::string::npos) << late.dump();
}

}  // namespace
}  // namespace km::testing
