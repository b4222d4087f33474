// Slow Poetry client, model 2: threaded. A thread per address: every download runs at once,
// each blocking in its own recv, so the total time is about that of the slowest poem.
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/output.hpp"
#include "common/report.hpp"
#include "common/sockets.hpp"

#include <algorithm>
#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include <sys/socket.h>

namespace {

using namespace poetry;

// Downloads one poem; returns true if it arrived whole.
bool get_poem(int task, const address& from, const client_options& options, poem_output& output)
{
  stopwatch clock;
  report_task_start(task, from);
  std::string poem;
  try {
    unique_fd server = connect_to(from, options.timeout);  // this blocks this thread only
    char buffer[65536];
    for (;;) {
      ssize_t n = ::recv(server.get(), buffer, sizeof buffer, 0);  // this blocks this thread only
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        throw std::runtime_error("no progress for the --timeout (timed out)");
      if (n < 0) throw std::runtime_error(system_reason(errno));
      if (n == 0) break;  // end of stream is end of poem
      poem.append(buffer, static_cast<std::size_t>(n));
      if (!options.quiet) report_task_bytes(task, static_cast<std::size_t>(n), from);
      output.received(task, std::string_view(buffer, static_cast<std::size_t>(n)));
    }
    output.complete(task, poem);
  } catch (const std::exception& e) {
    report_task_failed(task, from, e.what(), poem.size());
    return false;
  }
  report_task_done(task, poem.size(), from, clock.seconds());
  return true;
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = poetry::parse_client_options(argc, argv);
    if (!options) return 0;
    poetry::poem_output output(*options);
    poetry::stopwatch clock;
    // One thread per address, all at once; each writes only its own result.
    std::vector<char> ok(options->addresses.size(), 0);
    std::vector<std::jthread> threads;
    for (std::size_t i = 0; i < options->addresses.size(); ++i) {
      int task = static_cast<int>(i + 1);
      try {
        threads.emplace_back([&, i, task] { ok[i] = get_poem(task, options->addresses[i], *options, output); });
      } catch (const std::exception& e) {
        // No thread for this task (out of threads or memory): it fails; the others go on.
        poetry::report_task_failed(task, options->addresses[i], std::string("cannot start a thread: ") + e.what());
      }
    }
    threads.clear();  // joins every thread
    int got = static_cast<int>(std::count(ok.begin(), ok.end(), 1));
    int failed = static_cast<int>(ok.size()) - got;
    return poetry::report_summary(got, failed, clock.seconds());
  });
}
