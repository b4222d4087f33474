// Errors and the guard every main() runs in: a usage error exits 2, anything else exits 1,
// each as one line on stderr (SPEC of this project: README "Exit status").
#pragma once

#include <functional>
#include <stdexcept>
#include <string>

namespace poetry {

// A bad command line: the program prints one line and a hint to use --help, then exits 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The system's words for an errno value ("Connection refused").
std::string system_reason(int error_number);

// Runs body; turns a usage_error into exit status 2 and any other exception into 1. First it
// ignores SIGPIPE (a write to a reader that has gone fails with EPIPE and is reported) and
// opens any of descriptors 0-2 the program was started without, so no socket ever gets one.
int run_main(const char* argv0, const std::function<int()>& body);

}  // namespace poetry
