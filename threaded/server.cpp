// Slow Poetry server, model 2: threaded. A thread per connection: the accepting thread hands
// each client to a thread of its own, which sends the poem (send, sleep, send, ...) while the
// others do the same. Clients overlap; each costs a thread and its stack.
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/poem.hpp"
#include "common/report.hpp"
#include "common/sockets.hpp"

#include <algorithm>
#include <atomic>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#include <sys/socket.h>

namespace {

using namespace poetry;

// Sends the poem to one client, a chunk every delay, then closes gracefully.
void send_poem(unique_fd client, const std::string& poem, const server_options& options)
{
  std::string peer = peer_name(client.get());  // reset-on-close since accept (listen_on)
  std::size_t sent = 0;
  try {
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
    // not the server.
    return report_lost(peer, sent, poem.size(), e.what());
  }
  close_gracefully(std::move(client));
}

// Every connection's thread, so that none is leaked: each one marks itself done when its
// client is served, and the accepting thread joins the finished ones as new clients arrive.
class connection_threads {
public:
  template <typename Work>
  void start(Work work)
  {
    // The entry first: if it cannot be stored, no thread exists yet to be left unjoined.
    auto done = std::make_shared<std::atomic<bool>>(false);
    entry& e = threads_.emplace_back(entry{std::thread(), done});
    try {
      e.thread = std::thread([work = std::move(work), done]() mutable {
        try {
          work();
        } catch (...) {
          // Nothing escapes a connection's thread: it would end the whole server.
        }
        *done = true;
      });
    } catch (...) {
      threads_.pop_back();
      throw;
    }
  }

  void join_finished()
  {
    std::erase_if(threads_, [](entry& e) {
      if (!*e.done) return false;
      e.thread.join();
      return true;
    });
  }

private:
  struct entry {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::list<entry> threads_;
};

// Accepts clients and gives each its own thread, so a slow client delays nobody else.
[[noreturn]] void serve(const unique_fd& listener, const std::string& poem, const server_options& options)
{
  connection_threads threads;
  for (;;) {
    unique_fd client(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));  // this blocks
    if (!client) {
      // The client left before we accepted it, or a network error: on to the next at once.
      // Anything else (out of descriptors or memory): wait a moment for some to be freed.
      if (!retry_accept_at_once(errno)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    threads.join_finished();
    std::string peer = peer_name(client.get());
    try {
      threads.start(
        [&poem, &options, client = std::move(client)]() mutable { send_poem(std::move(client), poem, options); });
    } catch (const std::exception& e) {
      // No thread (or no memory) for this client: drop it -- its socket closes with a reset,
      // since it is still marked reset-on-close -- and keep serving the others.
      report_lost(peer, 0, poem.size(), e.what());
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
    poetry::exit_on_signals();
    poetry::report_serving(options->poem_file, poetry::local_port(listener.get()));
    serve(listener, poem, *options);
  });
}
