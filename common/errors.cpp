#include "common/errors.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>

#include <fcntl.h>
#include <unistd.h>

namespace poetry {

std::string system_reason(int error_number) { return std::strerror(error_number); }

// Descriptors 0-2 that the program was started without are opened read-only on /dev/null:
// otherwise the first socket would get one of them, and a client would write its poem into its
// own connection. Read-only, so writing to a closed stdout still fails ("Bad file descriptor").
static void fill_standard_descriptors()
{
  for (int fd = 0; fd <= 2; ++fd)
    if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF && ::open("/dev/null", O_RDONLY) != fd) return;
}

int run_main(const char* argv0, const std::function<int()>& body)
{
  fill_standard_descriptors();
  // A write to a pipe or socket whose reader has gone fails with EPIPE, which every program
  // reports, instead of killing it with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  std::string name = argv0 ? argv0 : "poetry";
  try {
    return body();
  } catch (const usage_error& e) {
    std::cerr << name << ": " << e.what() << "\n"
              << "Try '" << name << " --help' for more information.\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << name << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace poetry
