// Shared fixture for privileged tests: a Launcher over throwaway state and runtime
// directories. Skips (with the reason) when not root or when the kernel lacks a feature.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "km/profile/inherit.h"
#include "km/profile/model.h"
#include "km/sandbox/client.h"
#include "km/sandbox/launcher.h"
#include "km/sandbox/plan.h"

namespace km::testing {

inline std::string make_temp_dir(const char* prefix) {
  std::string tmpl = std::string("/tmp/") + prefix + "-XXXXXX";
  char* p = ::mkdtemp(tmpl.data());
  return p ? std::string(p) : std::string();
}

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "privileged test: needs root";
    root_ = make_temp_dir("km-priv");
    ::chmod(root_.c_str(), 0711);  // the sandbox's own uid range must traverse it
    sandbox::LauncherConfig c;
    c.layout.state_dir = root_ + "/state";
    c.layout.runtime_dir = root_ + "/run";
    c.init_path = KM_SANDBOX_INIT;
    c.cgroup_name = "km-test-" + std::to_string(::getpid());
    auto l = sandbox::Launcher::create(c);
    if (!l) GTEST_SKIP() << "cannot create sandboxes here: " << l.error().to_string();
    launcher_.emplace(std::move(*l));
  }
  void TearDown() override {
    if (launcher_) {
      for (const auto& id : ids_) (void)launcher_->destroy(id);
      std::system(("rm -rf '" + root_ + "'").c_str());
      // km's base directory in every hierarchy it used (v2, and v1 memory, pids, cpu).
      const auto& layout = launcher_->cgroups();
      ::rmdir(layout.v2_base().c_str());
      for (const auto& [controller, mount] : layout.v1_mount) {
        auto self = layout.v1_self.find(controller);
        std::string s = self == layout.v1_self.end() || self->second == "/" ? "" : self->second;
        ::rmdir((mount + s + "/" + layout.name).c_str());
      }
    }
  }

  // Starts a sandbox from profile YAML text (validated first).
  Result<sandbox::Started> start(const std::string& yaml, std::string* id_out, uint32_t slot = 0) {
    auto c = profile::check_text(yaml, "test.yaml", {});
    if (!c.resolved || c.findings.has_errors()) return fail(ErrorCode::kInvalidArgument, "bad test profile");
    KM_ASSIGN_OR_RETURN(profile::Model m, profile::decode(c.resolved->root));
    std::string id = "t-" + std::to_string(::getpid() % 100000) + std::to_string(ids_.size());
    while (id.size() < 10) id += "0";
    sandbox::Allocation a{id, 1000000 + 65536 * (slot + static_cast<uint32_t>(ids_.size())), slot + static_cast<uint32_t>(ids_.size())};
    KM_ASSIGN_OR_RETURN(sandbox::Spec spec, sandbox::plan(m, a, launcher_->config().layout));
    ids_.push_back(id);
    *id_out = id;
    sys::CgroupLimits lim{m.cpus, m.memory, m.pids};
    return launcher_->start(spec, lim, a.uid_base, m.image);
  }

  Result<sandbox::Captured> run(const std::string& id, std::vector<std::string> argv, bool root = false,
                                const std::string& input = "") {
    sandbox::ExecRequest r;
    r.argv = std::move(argv);
    r.root = root;
    return sandbox::run_captured(launcher_->ctl_path(id), r, input);
  }
  Result<sandbox::Captured> sh(const std::string& id, const std::string& script, bool root = false) {
    return run(id, {"/bin/sh", "-c", script}, root);
  }

  std::string root_;
  std::optional<sandbox::Launcher> launcher_;
  std::vector<std::string> ids_;
};

inline const char* kProfile =
    "apiVersion: klankermaker.ai/v1alpha2\nkind: SandboxProfile\nmetadata: {name: t}\n"
    "spec:\n  lifecycle: {ttl: 1h, idleTimeout: 30m}\n"
    "  runtime: {resources: {cpus: 1, memory: 256Mi, pids: 128}}\n"
    "  network: {egress: {allowedDNSSuffixes: [], allowedHosts: []}}\n";

}  // namespace km::testing
