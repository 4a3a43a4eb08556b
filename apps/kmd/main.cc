// kmd: the local substrate's daemon. Parses options and config, then runs km::daemon.
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>

#include "km/base/file.h"
#include "km/base/log.h"
#include "km/daemon/config.h"
#include "km/daemon/server.h"
#include "km/daemon/service.h"
#include "km/sys/unix_socket.h"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

std::string exe_dir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

// A helper binary installed next to kmd (libexec/km), or beside it in a build tree.
std::string find_helper(const std::string& name) {
  std::string d = exe_dir();
  for (const std::string& c : {d + "/../libexec/km/" + name, d + "/" + name, d + "/../" + name + "/" + name,
                               "/usr/local/libexec/km/" + name}) {
    if (::access(c.c_str(), X_OK) == 0) return c;
  }
  return d + "/../libexec/km/" + name;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kmd: the km daemon for the local substrate"};
  std::string config_path, state_dir, runtime_dir, socket, group, cgroup_name;
  bool foreground = false;
  bool group_set = false;
  app.add_option("--config", config_path, "Config file (default /etc/km/kmd.yaml if it exists)");
  app.add_flag("--foreground", foreground, "Run in the foreground (kmd always does; for systemd and scripts)");
  app.add_option("--state-dir", state_dir, "Override stateDir");
  app.add_option("--runtime-dir", runtime_dir, "Override runtimeDir");
  app.add_option("--socket", socket, "Override socket");
  app.add_option("--group", group, "Override group")->each([&](const std::string&) { group_set = true; });
  app.add_option("--cgroup-name", cgroup_name, "Name of km's cgroup directory (default km; for tests)")->group("");
  CLI11_PARSE(app, argc, argv);

  km::log::Logger log("kmd");
  if (::geteuid() != 0) {
    std::fprintf(stderr, "kmd: error: kmd must run as root (it creates namespaces, cgroups and mounts)\n");
    return 1;
  }
  std::string text;
  std::string file = config_path.empty() ? "/etc/km/kmd.yaml" : config_path;
  if (!config_path.empty() || ::access(file.c_str(), F_OK) == 0) {
    auto t = km::read_file(file, 1u << 20);
    if (!t) {
      std::fprintf(stderr, "kmd: error: %s\n", t.error().to_string().c_str());
      return 1;
    }
    text = *t;
  }
  km::profile::Findings findings;
  auto config = km::daemon::parse_config(text, file, findings);
  for (const auto& f : findings.items()) std::fprintf(stderr, "%s\n", f.to_string().c_str());
  if (!config) return 1;
  if (!state_dir.empty()) config->state_dir = state_dir;
  if (!runtime_dir.empty()) config->runtime_dir = runtime_dir;
  if (!socket.empty()) config->socket = socket;
  if (group_set) config->group = group;
  if (!cgroup_name.empty()) config->cgroup_name = cgroup_name;
  if (config->init_path.empty()) config->init_path = find_helper("km-sandbox-init");
  if (config->enforcer_path.empty()) config->enforcer_path = find_helper("km-enforcer");
  km::log::Level level;
  if (km::log::parse_level(config->log_level, &level)) log.set_min_level(level);

  ::umask(022);
  auto service = km::daemon::Service::create(*config, std::make_shared<km::daemon::SystemClock>(), log);
  if (!service) {
    std::fprintf(stderr, "kmd: error: %s\n", service.error().to_string().c_str());
    if (!service.error().hint().empty()) std::fprintf(stderr, "hint: %s\n", service.error().hint().c_str());
    return 1;
  }
  if (auto r = (*service)->reconcile(); !r) {
    std::fprintf(stderr, "kmd: error: reconciling the store: %s\n", r.error().to_string().c_str());
    return 1;
  }
  auto listen = km::sys::listen_unix(config->socket_path(), config->group.empty() ? 0600 : 0660);
  if (!listen) {
    std::fprintf(stderr, "kmd: error: %s\n", listen.error().to_string().c_str());
    return 1;
  }
  if (!config->group.empty()) {
    if (struct group* g = ::getgrnam(config->group.c_str())) {
      if (::chown(config->socket_path().c_str(), 0, g->gr_gid) != 0) log.warn("cannot give the socket to the group");
    } else {
      log.warn("group does not exist; only root can use kmd", {{"group", config->group}});
    }
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  log.info("kmd ready", {{"socket", config->socket_path()}, {"state_dir", config->state_dir}});
  std::thread timer([&] {
    while (!g_stop.load()) {
      (*service)->tick();
      for (int i = 0; i < 10 && !g_stop.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  km::daemon::Server server(**service, log, config->group);
  (void)server.serve(listen->get(), g_stop);
  timer.join();
  log.info("kmd stopping; sandboxes keep running");
  return 0;
}
