// Slow Poetry client, model 6: asio_coroutines. Every download at once on one thread, as in
// asio_callbacks, but each download is a coroutine that reads like the blocking client: resolve,
// connect, then read until end of stream. Each co_await suspends this download only; the loop
// runs the others meanwhile. The total time is about that of the slowest poem.
//
// One download, two coroutines:
//
//   get_poem: resolve --> connect (each address in turn) --> read, read, ... --> end of stream
//   watch:    the --timeout: whenever the deadline passes with no progress, it cancels what
//             get_poem is waiting for (a connect moves on to the next address; else it fails)
#include "common/asio.hpp"
#include "common/asio_resolve.hpp"
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/output.hpp"
#include "common/report.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace poetry;
namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using steady_clock = std::chrono::steady_clock;

// One download's resolver, socket and --timeout, shared by its two coroutines. Ownership: each
// coroutine holds a shared_ptr to it, so it lives until the later of the two has ended.
struct connection {
  explicit connection(asio::io_context& io) : resolver(io), socket(io), timer(io) {}
  poetry::resolver resolver;
  tcp::socket socket;
  asio::steady_timer timer;  // the --timeout
  // --timeout: no progress by then, give up.
  steady_clock::time_point deadline = steady_clock::time_point::max();
  bool timed_out = false;  // watch cancelled the pending operation
  bool ended = false;      // get_poem has ended; watch ends too

  // Some progress (or a new address to try): the --timeout counts again from now.
  void made_progress(const client_options& options)
  {
    timed_out = false;
    if (options.timeout) deadline = steady_clock::now() + *options.timeout;
  }

  // Why the last operation failed: the --timeout, or what the system says.
  std::string reason(error_code ec) const
  {
    return timed_out ? "no progress for the --timeout (timed out)" : ec.message();
  }

  // The download has ended, and so does the watch: cancelling its timer wakes it to see that.
  void end()
  {
    ended = true;
    timer.cancel();
  }
};

// The --timeout: the timer goes off at the deadline; if progress has moved the deadline on
// meanwhile, it waits again until the new one, else it cancels what get_poem is waiting for.
asio::awaitable<void> watch(std::shared_ptr<connection> c, const client_options& options)
{
  while (!c->ended) {
    error_code ec;
    c->timer.expires_at(c->deadline);
    co_await c->timer.async_wait(into(ec));
    if (c->ended || c->deadline > steady_clock::now()) continue;
    c->timed_out = true;
    c->resolver.cancel();
    c->socket.close(ec);
    c->deadline = steady_clock::now() + *options.timeout;  // the next address's time, if any
  }
}

// Looks the host up (common/'s resolver runs getaddrinfo on a thread of its own, so neither
// the loop nor any other download waits for it).
asio::awaitable<resolver::results_type> resolve(connection& c, const address& from)
{
  error_code ec;
  auto addresses = co_await c.resolver.async_resolve(from.host, from.port, into(ec));
  if (ec) throw std::runtime_error(c.reason(ec));
  co_return addresses;
}

// Connects to each resolved address in turn until one answers; a refusal, or no answer within
// the --timeout, moves on to the next.
asio::awaitable<void> connect(connection& c, const resolver::results_type& addresses, const client_options& options)
{
  error_code ec = asio::error::host_not_found;
  for (const tcp::endpoint& to : addresses) {
    c.made_progress(options);
    c.socket.close(ec);
    co_await c.socket.async_connect(to, into(ec));  // opens the socket for to's family first
    if (!ec) {
      c.made_progress(options);  // connected: progress, as a chunk is
      co_return;
    }
    if (c.timed_out) ec = asio::error::timed_out;  // no answer within the --timeout
  }
  throw std::runtime_error(ec.message());
}

// Downloads one poem and sets ok when it arrived whole.
asio::awaitable<void> get_poem(asio::io_context& io, int task, const address& from, const client_options& options,
                               poem_output& output, char& ok)
{
  stopwatch clock;
  report_task_start(task, from);
  auto c = std::make_shared<connection>(io);
  if (options.timeout) {
    c->made_progress(options);
    asio::co_spawn(io, watch(c, options), asio::detached);
  }
  std::string poem;
  try {
    auto addresses = co_await resolve(*c, from);
    co_await connect(*c, addresses, options);
    std::array<char, 65536> buffer;
    for (;;) {
      error_code ec;
      std::size_t n = co_await c->socket.async_read_some(asio::buffer(buffer), into(ec));
      if (ec == asio::error::eof) break;  // end of stream is end of poem
      if (ec) throw std::runtime_error(c->reason(ec));
      c->made_progress(options);
      poem.append(buffer.data(), n);
      if (!options.quiet) report_task_bytes(task, n, from);
      output.received(task, std::string_view(buffer.data(), n));
    }
    output.complete(task, poem);
  } catch (const std::exception& e) {
    c->end();
    report_task_failed(task, from, e.what(), poem.size());
    co_return;
  }
  c->end();
  ok = 1;
  report_task_done(task, poem.size(), from, clock.seconds());
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = poetry::parse_client_options(argc, argv);
    if (!options) return 0;
    poetry::poem_output output(*options);
    poetry::stopwatch clock;
    // Every download at once on one io_context; each writes only its own result.
    std::vector<char> ok(options->addresses.size(), 0);
    asio::io_context io;
    for (std::size_t i = 0; i < options->addresses.size(); ++i)
      asio::co_spawn(io, get_poem(io, static_cast<int>(i + 1), options->addresses[i], *options, output, ok[i]),
                     asio::detached);
    io.run();  // the event loop: returns when every download has ended
    int got = static_cast<int>(std::count(ok.begin(), ok.end(), 1));
    int failed = static_cast<int>(ok.size()) - got;
    return poetry::report_summary(got, failed, clock.seconds());
  });
}
