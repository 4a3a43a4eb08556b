#include "km/base/unique_fd.h"

#include <unistd.h>

namespace km {

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) {
    // close() must not be retried on EINTR on Linux: the fd is released either way.
    ::close(fd_);
  }
  fd_ = fd;
}

}  // namespace km
