#include "km/cli/app.h"

#include <CLI/CLI.hpp>

#include "km/cli/budget_commands.h"
#include "km/cli/otel_commands.h"
#include "km/cli/logs_command.h"
#include "km/cli/output.h"
#include "km/cli/profile_commands.h"
#include "km/cli/sandbox_commands.h"

#ifndef KM_VERSION
#define KM_VERSION "0.0.0"
#endif

namespace km::cli {

int run(int argc, char** argv) {
  CLI::App app{"km: policy-governed sandboxes for AI coding agents"};
  app.name("km");
  app.require_subcommand(1);
  app.set_version_flag("--version", KM_VERSION);
  // Global options are accepted after the subcommand too (`km status X -o json`); subcommands
  // created below inherit this.
  app.fallthrough();
  GlobalOptions global;
  app.add_option("--profile-path", global.profile_paths,
                 "Directory searched for profiles named in extends (repeatable; also KM_PROFILE_PATH)")
      ->type_name("DIR");
  app.add_option("-o,--output", global.output, "Output format")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--socket", global.socket, "kmd's socket (default: KM_SOCKET or /run/km/kmd.sock)")->type_name("PATH");
  int exit_code = kExitOk;
  add_profile_commands(app, global, &exit_code);
  add_sandbox_commands(app, global, &exit_code);
  add_budget_commands(app, global, &exit_code);
  add_otel_commands(app, global, &exit_code);
  add_logs_command(app, global, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    print_error(e.what(), "run `km --help` for usage");
    return kExitUsage;
  } catch (const std::exception& e) {
    print_error(e.what());
    return kExitFailure;
  }
  return exit_code;
}

}  // namespace km::cli
