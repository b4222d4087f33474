// One round of select(2), shared by the select server and client.
//
// select keeps nothing between calls: each round the caller says again what every descriptor
// waits for (watch), waits (wait), then asks each descriptor what it is ready for (ready).
// Python's selectors module hides this behind a registry; here it stays in sight, because it
// is the model's cost: every round touches every connection, even when only one has news.
#pragma once

#include "common/errors.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/select.h>

namespace poetry {

class selector {
public:
  static constexpr unsigned read = 1;   // input, end of stream or an error; a listener: a client waits
  static constexpr unsigned write = 2;  // room in the send buffer; a connecting socket: connect ended

  // True if select can watch fd: an fd_set has room for descriptors below FD_SETSIZE only.
  static bool fits(int fd) { return fd >= 0 && fd < FD_SETSIZE; }

  selector()
  {
    FD_ZERO(&read_);
    FD_ZERO(&write_);
  }

  // This round, wait for fd to be ready for events (read, write, both; 0: not at all).
  void watch(int fd, unsigned events)
  {
    if (events == 0) return;
    // FD_SET past the end of an fd_set writes outside it (and aborts under _FORTIFY_SOURCE).
    if (!fits(fd)) throw std::logic_error("descriptor " + std::to_string(fd) + " does not fit in an fd_set");
    if (events & read) FD_SET(fd, &read_);
    if (events & write) FD_SET(fd, &write_);
    max_fd_ = std::max(max_fd_, fd);
  }

  // Waits until a watched descriptor is ready or the deadline comes (none: no time limit).
  void wait(std::optional<std::chrono::steady_clock::time_point> deadline)
  {
    timeval timeout{};
    if (deadline) {
      // Rounded up: waking a hair early would only mean another round with nothing to do.
      auto left = std::chrono::ceil<std::chrono::microseconds>(*deadline - std::chrono::steady_clock::now());
      if (left.count() > 0) {
        timeout.tv_sec = static_cast<time_t>(left.count() / 1000000);
        timeout.tv_usec = static_cast<suseconds_t>(left.count() % 1000000);
      }
    }
    int n = ::select(max_fd_ + 1, &read_, &write_, nullptr, deadline ? &timeout : nullptr);  // the one wait
    if (n < 0) {
      FD_ZERO(&read_);  // nothing is ready; after an error the sets are undefined
      FD_ZERO(&write_);
      if (errno != EINTR) throw std::runtime_error("select: " + system_reason(errno));
    }
  }

  // After wait: what fd is ready for (read, write, both, or 0).
  unsigned ready(int fd) const
  {
    if (!fits(fd)) return 0;
    return (FD_ISSET(fd, &read_) ? read : 0) | (FD_ISSET(fd, &write_) ? write : 0);
  }

private:
  fd_set read_;
  fd_set write_;
  int max_fd_ = -1;
};

// How many more descriptors this process can open that select can still watch: the free ones
// below both FD_SETSIZE and the process's limit (RLIMIT_NOFILE). The system always hands out
// the lowest free descriptor, so while fewer than this many are opened, each new one fits.
inline std::size_t descriptors_left()
{
  rlimit limit{};
  int top = FD_SETSIZE;
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < static_cast<rlim_t>(top))
    top = static_cast<int>(limit.rlim_cur);
  std::size_t left = 0;
  for (int fd = 0; fd < top; ++fd)
    if (::fcntl(fd, F_GETFD) < 0) ++left;  // EBADF: not open
  return left;
}

}  // namespace poetry
