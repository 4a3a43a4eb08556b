#include "km/sys/process.h"

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "km/base/file.h"
#include "km/base/strings.h"
#include "km/base/unique_fd.h"

namespace km::sys {

uint64_t process_start_time(pid_t pid) {
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat", 8192);
  if (!stat) return 0;
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return 0;
  auto fields = split(stat->substr(close + 2), ' ');
  // After "pid (comm) ", field 3 is at index 0; starttime is field 22.
  return fields.size() > 19 ? std::strtoull(fields[19].c_str(), nullptr, 10) : 0;
}

Status write_process_record(const std::string& path, const ProcessRecord& p) {
  return write_file_atomic(path, std::to_string(p.pid) + " " + std::to_string(p.start_time) + "\n", 0600);
}

Result<ProcessRecord> read_process_record(const std::string& path) {
  KM_ASSIGN_OR_RETURN(std::string text, read_file(path, 4096));
  long long pid = 0;
  unsigned long long st = 0;
  if (std::sscanf(text.c_str(), "%lld %llu", &pid, &st) != 2 || pid <= 1) {
    return fail(ErrorCode::kInvalidArgument, path + ": not a process record");
  }
  return ProcessRecord{static_cast<pid_t>(pid), st};
}

bool process_alive(const ProcessRecord& p) {
  return p.pid > 1 && p.start_time != 0 && process_start_time(p.pid) == p.start_time;
}

void kill_process(const ProcessRecord& p) {
  if (!process_alive(p)) return;
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, p.pid, 0));
  if (pidfd < 0) return;
  UniqueFd owned(pidfd);
  if (!process_alive(p)) return;  // the pidfd now pins the right process, or a newer one
  ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
  for (int i = 0; i < 200 && process_alive(p); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

}  // namespace km::sys
