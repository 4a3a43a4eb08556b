// Processes recorded by pid and start time, so that a record is never mistaken for a later
// process that reused the pid: kmd's sandbox inits and enforcers, which outlive kmd.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "km/base/result.h"

namespace km::sys {

// The process's start time (field 22 of /proc/<pid>/stat, clock ticks since boot); 0 if gone.
uint64_t process_start_time(pid_t pid);

struct ProcessRecord {
  pid_t pid = 0;
  uint64_t start_time = 0;
};

// "pid starttime\n", written atomically.
Status write_process_record(const std::string& path, const ProcessRecord& p);
Result<ProcessRecord> read_process_record(const std::string& path);
// True while the recorded process runs (the pid has not been reused).
bool process_alive(const ProcessRecord& p);
// SIGKILLs the process if it is still the one recorded (through a pidfd, so no reused pid is
// hit), and waits up to a second until it is gone.
void kill_process(const ProcessRecord& p);

}  // namespace km::sys
