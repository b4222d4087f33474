// Slow Poetry server, model 3: select. One thread serves every client: the sockets are
// non-blocking, select(2) says which of them can go on, and the delay between chunks is a
// deadline per connection, the nearest of which is select's timeout. Nothing sleeps. Its status
// lines wait in an outbox until select says stdout can take them, like any other write.
//
// A connection's states:
//
//   accepted: its first chunk is due at once
//      |
//      v         its deadline comes: start the next chunk
//   waiting ------------------------------------------> sending ---+ send buffer full:
//      ^                                                 |  |  ^   | wait until writable
//      +------------ chunk written, more to come --------+  |  +---+
//                                                           |
//                       last byte written: "Sent ...", shutdown(SHUT_WR)
//                                                           v
//   closed <---- the client closes, or the linger ------ lingering
//                deadline comes
//
//   In every state the client's input is read and thrown away; an error ends the connection
//   ("Lost ..."). The table of connections owns each one, and erasing it closes its socket.
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/poem.hpp"
#include "common/report.hpp"
#include "common/signals.hpp"
#include "common/sockets.hpp"
#include "select/selector.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

using namespace poetry;
using steady_clock = std::chrono::steady_clock;

enum class state { waiting, sending, lingering, closed };

// One client and how far it has got (see the diagram above).
struct connection {
  unique_fd socket;
  std::string peer;
  state is = state::waiting;
  std::size_t sent = 0;               // bytes of the poem written so far
  std::size_t chunk_end = 0;          // sending: where the chunk being written ends
  steady_clock::time_point deadline;  // waiting: the next chunk is due (sending: this one was due);
                                      // lingering: ask whether to stop waiting for the client
  std::size_t unacknowledged = 0;     // lingering: bytes its TCP had not acknowledged when last asked
  bool client_closed = false;         // the client half-closed: no more input will come
};

// Ends a connection that failed mid-poem: one line says how far it got.
void lose(connection& c, std::size_t total, std::string_view reason)
{
  report_lost(c.peer, c.sent, total, reason);
  c.is = state::closed;  // the loop erases it, which closes the socket
}

// Sends the poem to one client, one step at a time: starts the chunk that is due, writes as much
// of it as the socket takes now, and after the last byte half-closes and lingers.
void send_poem(connection& c, const std::string& poem, const server_options& options)
{
  // A chunk is due: start it. The first goes at once; each later one a delay after the previous.
  if (c.is == state::waiting && c.sent < poem.size()) {
    c.chunk_end = std::min(c.sent + options.num_bytes, poem.size());
    if (!options.quiet) report_sending(c.chunk_end - c.sent, c.peer);
    c.is = state::sending;
  }
  // Write what the socket takes; a chunk may go out in pieces, the rest when it is writable again.
  while (c.sent < c.chunk_end) {
    std::string_view rest = std::string_view(poem).substr(c.sent, c.chunk_end - c.sent);
    ssize_t n = ::send(c.socket.get(), rest.data(), rest.size(), MSG_NOSIGNAL);  // never blocks
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // full: wait until writable
    if (n < 0) return lose(c, poem.size(), system_reason(errno));
    c.sent += static_cast<std::size_t>(n);
  }
  auto now = steady_clock::now();
  // The chunk is out. The next is due a delay after this one was due, not after it was written,
  // so time spent on other clients does not add up over a poem; if this one took longer than
  // the delay (a slow reader), the next is due at once, but never two at once.
  if (c.sent < poem.size()) {
    c.is = state::waiting;
    c.deadline = std::max(c.deadline + options.delay, now);
    return;
  }
  // The last byte is out: half-close, then read until the client closes or the linger may end.
  set_reset_on_close(c.socket.get(), false);
  ::shutdown(c.socket.get(), SHUT_WR);
  c.is = c.client_closed ? state::closed : state::lingering;
  c.deadline = now + linger_time;
  c.unacknowledged = unacknowledged_bytes(c.socket.get());
  report_sent(c.sent, c.peer);
}

// Reads and throws away what the client sent (input left unread would turn our close into a
// reset); notices when the client closes or vanishes.
void discard_input(connection& c, const std::string& poem)
{
  char discard[65536];
  ssize_t n = ::recv(c.socket.get(), discard, sizeof discard, 0);  // never blocks
  if (n > 0 || (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))) return;
  // The client closed or vanished. After the whole poem, that is the normal end.
  if (c.is == state::lingering) {
    c.is = state::closed;
    return;
  }
  if (n < 0) return lose(c, poem.size(), system_reason(errno));
  // It half-closed mid-poem: it may still be reading, so keep sending; but stop watching for
  // input, or its end of stream would make every select return at once.
  c.client_closed = true;
}

// What a connection waits for this round: the client's input, and room to write while sending.
unsigned events_for(const connection& c)
{
  unsigned events = c.client_closed ? 0 : selector::read;
  if (c.is == state::sending) events |= selector::write;
  return events;
}

// Accepts the clients waiting in the kernel's queue, while there is room for their sockets.
// Returns false when accept fails for want of descriptors (or memory): wait before trying again.
bool accept_clients(const unique_fd& listener, std::map<int, connection>& connections, std::size_t room,
                    const std::string& poem)
{
  // room keeps every client's descriptor below FD_SETSIZE (see descriptors_left), and the
  // loop opens nothing else, so each one fits in an fd_set.
  while (connections.size() < room) {
    endpoint from;
    unique_fd client(
      ::accept4(listener.get(), from.get(), &from.length, SOCK_NONBLOCK | SOCK_CLOEXEC));  // never blocks
    if (!client) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;  // nobody else waits
      // The client left before we accepted it, or a network error: on to the next at once.
      if (retry_accept_at_once(errno)) continue;
      // Anything else (out of descriptors or memory): the rest stay queued in the kernel.
      return false;
    }
    try {
      std::string peer = to_string(from.get());  // as accept saw it; reset-on-close since then (listen_on)
      report_somebody(peer);
      int fd = client.get();
      connections.emplace(fd, connection{.socket = std::move(client), .peer = peer, .deadline = steady_clock::now()});
    } catch (const std::exception& e) {
      // Out of memory: this client's socket closes with a reset; the others go on.
      report_lost(from, 0, poem.size(), e.what());
    }
  }
  return true;
}

// Serves every client from one loop: each round, select waits until some socket is ready or
// the nearest deadline comes, then every connection takes the steps it can without waiting.
// Returns when SIGINT or SIGTERM arrives.
void serve(const unique_fd& listener, const unique_fd& signals, status_outbox& out, const std::string& poem,
           const server_options& options)
{
  // The listener must not block either: with nobody left in its queue, accept says EAGAIN.
  set_nonblocking(listener.get());
  // Every client socket must fit in select's fd_set: this many at once, the rest wait in the queue.
  const std::size_t room = descriptors_left();
  if (room == 0) throw std::runtime_error("no file descriptors left for clients");
  std::map<int, connection> connections;    // every client, by socket descriptor
  steady_clock::time_point accept_after{};  // accept failed: when to try again
  for (;;) {
    // Say what each socket waits for; select remembers nothing, so this is every round.
    selector round;
    round.watch(signals.get(), selector::read);
    // Status lines wait, like the poem's chunks, until their descriptor can take them.
    if (!out.empty()) round.watch(STDOUT_FILENO, selector::write);
    std::optional<steady_clock::time_point> nearest;
    if (connections.size() < room) {
      if (steady_clock::now() >= accept_after) round.watch(listener.get(), selector::read);
      else nearest = accept_after;
    }
    for (auto& [fd, c] : connections) {
      round.watch(fd, events_for(c));
      if (c.is == state::waiting || c.is == state::lingering)
        nearest = std::min(nearest.value_or(c.deadline), c.deadline);
    }
    // Wait until a socket is ready or the nearest deadline comes: the loop's only wait.
    round.wait(nearest);
    // SIGINT or SIGTERM: stop. Destroying the table closes every socket.
    if (round.ready(signals.get())) return;
    if (round.ready(STDOUT_FILENO) & selector::write) out.write_some(STDOUT_FILENO);
    // New clients: their first chunk is due at once, in this very round.
    if (round.ready(listener.get()) && !accept_clients(listener, connections, room, poem))
      accept_after = steady_clock::now() + accept_pause;
    auto now = steady_clock::now();
    // Every connection takes the steps it can: input, room to write, or a deadline that came.
    for (auto& [fd, c] : connections) {
      unsigned ready = round.ready(fd);
      try {
        if (ready & selector::read) discard_input(c, poem);
        if (c.is == state::sending && (ready & selector::write)) send_poem(c, poem, options);
        if (c.is == state::waiting && c.deadline <= now) send_poem(c, poem, options);
        if (c.is == state::lingering && c.deadline <= now) {
          // It did not close: we do, unless it is still taking the poem in.
          if (linger_may_end(fd, c.unacknowledged)) c.is = state::closed;
          else c.deadline = now + linger_time;
        }
      } catch (const std::exception& e) {
        // Out of memory (for a status line): this client is cut short, not the server. Once its
        // whole poem is out, only that line is lost: a reset now could throw away what the
        // client has not read yet.
        if (c.sent < poem.size()) lose(c, poem.size(), e.what());
      }
    }
    // Forget the closed connections (closing their sockets); each leaves room for a queued client.
    if (std::erase_if(connections, [](const auto& entry) { return entry.second.is == state::closed; }) > 0)
      accept_after = {};
  }
}

// SIGINT and SIGTERM as a descriptor the loop watches: blocked, they wait for the loop to read
// them instead of interrupting it, and signalfd makes a pending one readable.
unique_fd watch_signals()
{
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : stop_signals()) sigaddset(&signals, s);
  ::sigprocmask(SIG_BLOCK, &signals, nullptr);
  unique_fd fd(::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd) throw std::runtime_error("signalfd: " + system_reason(errno));
  return fd;
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = poetry::parse_server_options(argc, argv);
    if (!options) return 0;
    std::string poem = poetry::load_poem(options->poem_file);
    poetry::unique_fd listener = poetry::listen_on(options->iface, options->port);
    poetry::unique_fd signals = watch_signals();
    poetry::status_outbox out;  // every status line waits here for the loop
    poetry::report_to(&out);
    poetry::report_serving(options->poem_file, poetry::local_port(listener.get()));
    serve(listener, signals, out, poem, *options);
    // The loop has ended, and every client with it: the last line, with a second at most for
    // stdout to take what is left.
    poetry::report_shutting_down();
    out.drain(STDOUT_FILENO, std::chrono::seconds(1));
    return 0;
  });
}
