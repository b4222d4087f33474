// Slow Poetry client, model 3: select. One thread downloads from every address at once: the
// sockets are non-blocking, connects finish in the background, and select(2) says which socket
// has news, so the total time is about that of the slowest poem.
//
// A task's states:
//
//            start: resolve the name,           socket writable,
//            connect without waiting            SO_ERROR says 0              end of stream
//   queued ----------------------------> connecting -----------> receiving -------------> done
//                                          |    ^                    |
//            refused or no progress: ------+----+                    | an error, or no progress
//            try the next address          |                         | for the --timeout
//                                          | no address left         v
//                                          +-------------------->  failed
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/output.hpp"
#include "common/report.hpp"
#include "common/sockets.hpp"
#include "select/selector.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <sys/socket.h>

namespace {

using namespace poetry;
using steady_clock = std::chrono::steady_clock;

enum class state { queued, connecting, receiving, done, failed };

// One download (see the diagram above). The task list owns it; it owns its socket.
struct task {
  int number = 0;  // from 1, in command-line order
  address from;
  state is = state::queued;
  std::vector<endpoint> endpoints;  // every resolved address, tried in turn
  std::size_t next = 0;             // the next of them to try
  int error = EADDRNOTAVAIL;        // why the last address failed
  unique_fd server;
  std::string poem;
  stopwatch clock;
  std::optional<steady_clock::time_point> deadline;  // --timeout: no progress by then, give up
};

bool running(const task& t) { return t.is == state::connecting || t.is == state::receiving; }

// Some progress: the --timeout counts again from now.
void made_progress(task& t, const client_options& options)
{
  if (options.timeout) t.deadline = steady_clock::now() + *options.timeout;
}

// Starts a connect to the task's next resolved address. It returns at once; the socket becomes
// writable when it has ended. Throws with the last reason when no address is left.
void connect_next(task& t, const client_options& options)
{
  t.server.reset();
  while (t.next < t.endpoints.size()) {
    const endpoint& e = t.endpoints[t.next++];
    unique_fd fd(::socket(e.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd || !selector::fits(fd.get())) {  // (get_poems keeps room, so it always fits)
      t.error = fd ? EMFILE : errno;
      continue;
    }
    int rc = ::connect(fd.get(), e.get(), e.length);  // never blocks: usually "in progress"
    if (rc != 0 && errno != EINPROGRESS && errno != EINTR) {
      t.error = errno;
      continue;
    }
    t.server = std::move(fd);
    t.is = state::connecting;
    made_progress(t, options);
    return;
  }
  throw std::runtime_error(system_reason(t.error));
}

// Moves one download along as far as it can go without waiting; the loop calls it every round
// with what the task's socket is ready for.
void get_poem(task& t, unsigned ready, const client_options& options, poem_output& output)
{
  try {
    if (t.is == state::queued) {
      // Start: resolve the name, then connect. getaddrinfo blocks the whole loop while it looks
      // the name up (instant for an IP address, usually quick for a name): accepted here, to
      // keep the client small; an event-driven resolver would need a library or a thread.
      t.clock = stopwatch();
      report_task_start(t.number, t.from);
      t.endpoints = resolve(t.from.host, t.from.port);  // this blocks, briefly
      connect_next(t, options);
    } else if (t.is == state::connecting && (ready & selector::write)) {
      // The connect has ended; SO_ERROR says how. If it failed, try the next address.
      int error = 0;
      socklen_t length = sizeof error;
      ::getsockopt(t.server.get(), SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0) {
        t.error = error;
        return connect_next(t, options);
      }
      t.is = state::receiving;
      made_progress(t, options);
    } else if (t.is == state::receiving && (ready & selector::read)) {
      // The next bytes of the poem, or its end.
      char buffer[65536];
      ssize_t n = ::recv(t.server.get(), buffer, sizeof buffer, 0);  // never blocks
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0) throw std::runtime_error(system_reason(errno));
      if (n == 0) {  // end of stream is end of poem
        output.complete(t.number, t.poem);
        t.is = state::done;
        t.server.reset();
        report_task_done(t.number, t.poem.size(), t.from, t.clock.seconds());
        return;
      }
      t.poem.append(buffer, static_cast<std::size_t>(n));
      if (!options.quiet) report_task_bytes(t.number, static_cast<std::size_t>(n), t.from);
      output.received(t.number, std::string_view(buffer, static_cast<std::size_t>(n)));
      made_progress(t, options);
    } else if (t.deadline && *t.deadline <= steady_clock::now()) {
      // No progress for the --timeout: a connect gives up on this address, a download for good.
      if (t.is == state::receiving) throw std::runtime_error("no progress for the --timeout (timed out)");
      t.error = ETIMEDOUT;
      connect_next(t, options);
    }
  } catch (const std::exception& e) {
    report_task_failed(t.number, t.from, e.what(), t.poem.size());
    t.is = state::failed;
    t.server.reset();
  }
}

// Runs every download in one loop: each round, select waits until some socket has news or the
// nearest --timeout deadline comes, then every task moves as far as it can.
void get_poems(std::vector<task>& tasks, const client_options& options, poem_output& output)
{
  // Every socket must fit in select's fd_set: at most this many tasks at once, the others wait
  // their turn. (A few descriptors stay free for the resolver and for saving poems.)
  const std::size_t spare = 8, left = descriptors_left();
  const std::size_t room = left > spare ? left - spare : 1;
  for (;;) {
    // Start queued tasks while there is room for their sockets.
    auto busy = static_cast<std::size_t>(std::count_if(tasks.begin(), tasks.end(), running));
    for (task& t : tasks) {
      if (busy >= room) break;
      if (t.is != state::queued) continue;
      get_poem(t, 0, options, output);
      busy += running(t) ? 1 : 0;
    }
    if (busy == 0) return;  // every task has ended
    // Say what each socket waits for: a connect to end (writable) or bytes (readable).
    selector round;
    std::optional<steady_clock::time_point> nearest;
    for (task& t : tasks) {
      if (!running(t)) continue;
      round.watch(t.server.get(), t.is == state::connecting ? selector::write : selector::read);
      if (t.deadline) nearest = std::min(nearest.value_or(*t.deadline), *t.deadline);
    }
    // Wait until a socket has news or the nearest deadline comes: the loop's only wait.
    round.wait(nearest);
    // Every task takes the steps it can.
    for (task& t : tasks)
      if (running(t)) get_poem(t, round.ready(t.server.get()), options, output);
  }
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = poetry::parse_client_options(argc, argv);
    if (!options) return 0;
    poetry::poem_output output(*options);
    poetry::stopwatch clock;
    // One task per address, all moved along by one loop on this thread.
    std::vector<task> tasks(options->addresses.size());
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      tasks[i].number = static_cast<int>(i + 1);
      tasks[i].from = options->addresses[i];
    }
    get_poems(tasks, *options, output);
    int got =
      static_cast<int>(std::count_if(tasks.begin(), tasks.end(), [](const task& t) { return t.is == state::done; }));
    int failed = static_cast<int>(tasks.size()) - got;
    return poetry::report_summary(got, failed, clock.seconds());
  });
}
