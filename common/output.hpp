// Where a client's poems go, byte for byte: stdout as the bytes arrive (one address), stdout one
// whole poem at a time (several addresses, so poems never interleave), or one file per task.
// Safe to call from several threads.
#pragma once

#include "common/options.hpp"

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace poetry {

class poem_output {
public:
  explicit poem_output(const client_options& options);

  // Some bytes of task's poem arrived (tasks are numbered from 1, in command-line order).
  void received(int task, std::string_view bytes);

  // task's poem is complete. Throws std::runtime_error if it cannot be saved.
  void complete(int task, std::string_view poem);

  // DIR/<port>.txt, or DIR/<port>-<task>.txt when an earlier task already has that name.
  static std::vector<std::string> file_names(const client_options& options);

private:
  bool stream_;                     // one address to stdout: write bytes as they arrive
  std::vector<std::string> files_;  // empty: stdout
  std::mutex mutex_;
};

}  // namespace poetry
