#include "km/base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "km/base/unique_fd.h"

namespace km {

Result<std::string> read_file(const std::string& path, size_t max_bytes) {
  int raw;
  do {
    raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  } while (raw < 0 && errno == EINTR);
  if (raw < 0) return fail(Error::from_errno("open " + path));
  UniqueFd fd(raw);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return fail(Error::from_errno("stat " + path));
  if (S_ISDIR(st.st_mode)) {
    return fail(ErrorCode::kInvalidArgument, path + ": is a directory");
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Error::from_errno("read " + path));
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return fail(ErrorCode::kResourceExhausted,
                  path + ": file is larger than " + std::to_string(max_bytes) + " bytes");
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace km
