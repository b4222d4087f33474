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
  std::string peer = peer_name(client.get());
  set_reset_on_close(client.get(), true);  // until the last byte, closing means "cut short"
  report_somebody(peer);
  std::size_t sent = 0;
  while (sent < poem.size()) {
    // The first chunk goes at once; each later one waits for the delay.
    if (sent > 0) std::this_thread::sleep_for(options.delay);  // this blocks this thread only
    std::string_view chunk = std::string_view(poem).substr(sent, options.num_bytes);
    if (!options.quiet) report_sending(chunk.size(), peer);
    if (int error = send_all(client.get(), chunk); error != 0)
      return report_lost(peer, sent, poem.size(), system_reason(error));
    sent += chunk.size();
  }
  report_sent(sent, peer);
  close_gracefully(std::move(client));
}

// Every connection's thread, so that none is leaked: each one marks itself done when its
// client is served, and the accepting thread joins the finished ones as new clients arrive.
class connection_threads {
public:
  template <typename Work>
  void start(Work work)
  {
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread thread([work = std::move(work), done]() mutable {
      work();
      *done = true;
    });
    threads_.push_back({std::move(thread), std::move(done)});
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
      // Out of descriptors, or the client left before we accepted it: try again shortly.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    threads.join_finished();
    std::string peer = peer_name(client.get());
    try {
      threads.start([&poem, &options, client = std::move(client)]() mutable {
        send_poem(std::move(client), poem, options);
      });
    } catch (const std::system_error& e) {
      // No thread for this client: drop it (its socket closes) and keep serving the others.
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
