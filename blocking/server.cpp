// Slow Poetry server, model 1: blocking. One thing at a time: accept a client, send it the
// whole poem (send, sleep, send, ...), and only then accept the next one. A second client
// waits in the kernel's accept queue until the first has its last byte. One thread does it all,
// its status lines too: a stdout that nobody reads stalls it, like everything else it waits for.
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
      if (sent > 0) std::this_thread::sleep_for(options.delay);  // this blocks everyone else too
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

// Accepts clients one after another and serves each to the end before the next.
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
    send_poem(std::move(client), from, poem, options);
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
