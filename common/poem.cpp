#include "common/poem.hpp"

#include "common/errors.hpp"

#include <cerrno>
#include <stdexcept>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace poetry {

std::string load_poem(const std::string& path)
{
  auto fail = [&](const std::string& why) { return std::runtime_error(path + ": " + why); };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw fail(system_reason(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    throw fail("not a regular file");
  }
  std::string poem;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      ::close(fd);
      throw fail(system_reason(error));
    }
    if (n == 0) break;
    poem.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return poem;
}

double ideal_seconds(std::size_t poem_size, std::size_t num_bytes, double delay_seconds)
{
  std::size_t chunks = (poem_size + num_bytes - 1) / num_bytes;
  return chunks == 0 ? 0.0 : static_cast<double>(chunks - 1) * delay_seconds;
}

}  // namespace poetry
