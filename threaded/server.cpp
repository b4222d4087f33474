// Slow Poetry server, model 2: threaded. A thread per connection: the accepting thread hands
// each client to a thread of its own, which sends the poem (send, sleep, send, ...) while the
// others do the same. Clients overlap; each costs a thread and its stack. Each thread writes its
// own status lines: a stdout that nobody reads stalls every thread that has something to say.
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/poem.hpp"
#include "common/report.hpp"
#include "common/signals.hpp"
#include "common/sockets.hpp"

#include <string>
#include <string_view>
#include <thread>

#include <sys/socket.h>

namespace {

using namespace poetry;

// Sends the poem to one client, a chunk every delay, then closes gracefully.
void send_poem(unique_fd client, const endpoint& from, const std::string& poem, const server_options& options)
{
  std::string peer;
  std::size_t sent = 0;
  try {
    peer = to_string(from.get());  // as accept saw it; reset-on-close since then (listen_on)
    report_somebody(peer);
    while (sent < poem.size()) {
      // The first chunk goes at once; each later one waits for the delay.
      if (sent > 0) std::this_thread::sleep_for(options.delay);  // this blocks this thread only
      std::string_view chunk = std::string_view(poem).substr(sent, options.num_bytes);
      if (!options.quiet) report_sending(chunk.size(), peer);
      if (int error = send_all(client.get(), chunk, sent); error != 0)
        return report_lost(peer, sent, poem.size(), system_reason(error));
    }
    report_sent(sent, peer);
  } catch (const std::exception& e) {
    // Out of memory, most likely: this client is cut short (its socket closes with a reset),
    // not the server. Once the whole poem is out, only its Sent line is lost: a reset now
    // could throw away what the client has not read yet.
    if (sent < poem.size()) return report_lost(from, sent, poem.size(), e.what());
  }
  close_gracefully(std::move(client));
}

// Accepts clients and gives each its own thread, so a slow client delays nobody else.
[[noreturn]] void serve(const unique_fd& listener, const std::string& poem, const server_options& options)
{
  for (;;) {
    endpoint from;
    unique_fd client(::accept4(listener.get(), from.get(), &from.length, SOCK_CLOEXEC));  // this blocks
    if (!client) {
      // The client left before we accepted it, or a network error: on to the next at once.
      // Anything else (out of descriptors or memory): wait a moment for some to be freed.
      if (!retry_accept_at_once(errno)) std::this_thread::sleep_for(accept_pause);
      continue;
    }
    try {
      // The client's own thread. Detached: it ends when its poem does, and the system frees it
      // then; nothing waits for it. It blocks SIGINT and SIGTERM, which stay with this thread.
      stop_signals_blocked in_the_new_thread;
      std::thread(send_poem, std::move(client), from, std::cref(poem), std::cref(options)).detach();
    } catch (const std::exception& e) {
      // No thread (or no memory) for this client: its socket closes with a reset (it is still
      // marked reset-on-close) and the others go on.
      report_lost(from, 0, poem.size(), e.what());
    }
  }
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = poetry::parse_server_options(argc, argv);
    if (!options) return 0;
    std::string poem = poetry::load_poem(options->poem_file);
    poetry::unique_fd listener = poetry::listen_on(options->iface, options->port);
    // SIGINT, SIGTERM: a handler says "Shutting down." and ends the process wherever it was.
    poetry::exit_on_signals();
    poetry::report_serving(options->poem_file, poetry::local_port(listener.get()));
    serve(listener, poem, *options);
  });
}
