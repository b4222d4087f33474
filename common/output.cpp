#include "common/output.hpp"

#include "common/errors.hpp"

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <stdexcept>

#include <fcntl.h>
#include <unistd.h>

namespace poetry {
namespace {

// Writes all of data to fd; returns 0 or the errno of the failure.
int write_all(int fd, std::string_view data)
{
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return 0;
}

}  // namespace

std::vector<std::string> poem_output::file_names(const client_options& options)
{
  std::vector<std::string> names;
  if (options.output_dir.empty()) return names;
  for (std::size_t i = 0; i < options.addresses.size(); ++i) {
    std::string port = std::to_string(options.addresses[i].port);
    std::string name = options.output_dir + "/" + port + ".txt";
    if (std::find(names.begin(), names.end(), name) != names.end())
      name = options.output_dir + "/" + port + "-" + std::to_string(i + 1) + ".txt";
    names.push_back(name);
  }
  return names;
}

poem_output::poem_output(const client_options& options)
  : stream_(options.output_dir.empty() && options.addresses.size() == 1), files_(file_names(options))
{
  // Checked now, before any download, not when the first poem is saved.
  if (!options.output_dir.empty() && !std::filesystem::is_directory(options.output_dir))
    throw std::runtime_error("cannot save poems in " + options.output_dir + ": not a directory");
}

void poem_output::received(int, std::string_view bytes)
{
  if (!stream_) return;
  std::lock_guard lock(mutex_);
  if (int error = write_all(STDOUT_FILENO, bytes); error != 0)
    throw std::runtime_error("cannot write to stdout: " + system_reason(error));
}

void poem_output::complete(int task, std::string_view poem)
{
  std::lock_guard lock(mutex_);
  if (files_.empty()) {
    if (stream_) return;  // already written as it arrived
    if (int error = write_all(STDOUT_FILENO, poem); error != 0)
      throw std::runtime_error("cannot write to stdout: " + system_reason(error));
    return;
  }
  const std::string& name = files_.at(static_cast<std::size_t>(task - 1));
  int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot save " + name + ": " + system_reason(errno));
  int error = write_all(fd, poem);
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error != 0) throw std::runtime_error("cannot save " + name + ": " + system_reason(error));
}

}  // namespace poetry
