// Slow Poetry server, model 6: asio_coroutines. One thread and Asio's loop, as in asio_callbacks,
// but each client is served by a coroutine that reads like the blocking server's loop: write a
// chunk, wait for the delay, write the next. Each co_await suspends this coroutine only; the
// loop runs the other clients meanwhile and resumes it when its operation has finished. The loop
// writes the status lines too, when stdout can take them (common/asio_stdout.hpp), and sees the
// signals.
//
// One connection, two coroutines on its socket:
//
//   send_poem:     write, wait, write, wait, ... write --> "Sent", shutdown(send) --> linger --> close
//                  (async_write, steady_timer)                                      (timer)
//   discard_input: read, read, ... until the client's stream ends, or the close aborts the read
//
//   The reader throws away whatever the client sends, since unread input would turn our close
//   into a reset; when it sees the client close during the linger, it cuts the linger short. A
//   write error ends the connection early ("Lost ..."); so does a reset that the reader sees
//   first: it cancels the writer's wait or write, and the writer says what the reader saw.
#include "common/asio.hpp"
#include "common/asio_listener.hpp"
#include "common/asio_stdout.hpp"
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/poem.hpp"
#include "common/report.hpp"
#include "common/signals.hpp"
#include "common/sockets.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

namespace {

using namespace poetry;
namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using steady_clock = std::chrono::steady_clock;

// One client's socket, shared by its two coroutines. Ownership: each coroutine holds a
// shared_ptr to it, so the socket lives until the later of the two has ended.
struct connection {
  explicit connection(tcp::socket socket) : socket(std::move(socket)), timer(this->socket.get_executor()) {}
  tcp::socket socket;
  asio::steady_timer timer;  // the delay between chunks, then the linger time
  bool reading = true;       // the reader has not yet seen the end of the client's stream
  bool lingering = false;    // the poem is sent: the reader's end cuts the linger short
  error_code reset;          // the reader saw the client reset the connection (or another error)
};

// Closes a connection when it goes out of scope (with the reset-on-close mark still set, a
// reset).
struct closes_at_end {
  connection& client;
  ~closes_at_end()
  {
    error_code ignored;
    client.socket.close(ignored);
  }
};

// Reads and discards whatever the client sends, until its stream ends (or a reset, or our
// close). Then the client has closed: if we are lingering, we need wait no longer; a reset
// mid-poem ends the connection now, so the writer's wait or write is cancelled.
asio::awaitable<void> discard_input(std::shared_ptr<connection> client)
{
  discard_buffer discard;
  error_code ec;
  while (!ec) discard.filled(co_await client->socket.async_read_some(discard.space(), into(ec)));
  client->reading = false;
  if (ec != asio::error::eof && ec != asio::error::operation_aborted) client->reset = ec;
  if (client->reset || client->lingering) {
    client->socket.cancel(ec);
    client->timer.cancel();
  }
}

// Sends the poem to one client, a chunk every delay, then closes gracefully.
asio::awaitable<void> send_poem(std::shared_ptr<connection> client, std::string peer, const std::string& poem,
                                const server_options& options)
{
  // However this coroutine ends, the socket closes with it, and the reader's read ends: also when
  // its frame is destroyed without being resumed (an exception that left io.run() took the
  // handler that held it), which would otherwise leave the client waiting for ever.
  closes_at_end closer{*client};
  std::size_t sent = 0;
  error_code ec;
  try {
    report_somebody(peer);
    asio::co_spawn(client->socket.get_executor(), discard_input(client), asio::detached);
    client->timer.expires_at(steady_clock::now());
    while (sent < poem.size()) {
      // The first chunk goes at once; each later one is due a delay after the previous one was
      // due, so time spent on other clients does not add up over a poem. At --delay 0 the next
      // chunk goes at once, with no timer.
      if (sent > 0 && options.delay != std::chrono::nanoseconds::zero()) {
        client->timer.expires_at(std::max(client->timer.expiry() + options.delay, steady_clock::now()));
        co_await client->timer.async_wait(into(ec));  // this waits, but only this client waits
      }
      if (client->reset) break;  // the reader saw a reset while we waited
      std::string_view chunk = std::string_view(poem).substr(sent, options.num_bytes);
      if (!options.quiet) report_sending(chunk.size(), peer);
      // What the kernel took counts, even when the write then failed.
      sent += co_await asio::async_write(client->socket, asio::buffer(chunk), into(ec));
      if (ec) break;
    }
    if (sent < poem.size()) {
      // The reader's reason first: after its reset, a write only says "Broken pipe".
      report_lost(peer, sent, poem.size(), (client->reset ? client->reset : ec).message());
      co_return;  // the closer resets the connection
    }
    report_sent(sent, peer);
  } catch (const std::exception& e) {
    // Out of memory (for a status line, or the next operation): this client is cut short (its
    // socket closes with a reset), not the server. Once the whole poem is out, only its Sent
    // line is lost: a reset now could throw away what the client has not read yet.
    if (sent < poem.size()) {
      report_lost(peer, sent, poem.size(), e.what());
      co_return;
    }
  }
  // The graceful close: half-close, wait until the reader sees the client close (or the
  // linger time passes, and the client has all the poem or stopped reading); then the closer
  // closes.
  set_reset_on_close(client->socket.native_handle(), false);
  client->socket.shutdown(tcp::socket::shutdown_send, ec);
  client->lingering = true;
  std::size_t unacknowledged = unacknowledged_bytes(client->socket.native_handle());
  ec = {};
  while (client->reading && !ec) {
    client->timer.expires_after(linger_time);
    co_await client->timer.async_wait(into(ec));
    if (!ec && linger_may_end(client->socket.native_handle(), unacknowledged)) break;
  }
}

// Accepts clients and starts a coroutine for each; every coroutine then runs on its own, so a
// slow client delays nobody else.
asio::awaitable<void> accept_clients(tcp::acceptor& acceptor, asio::steady_timer& pause, const std::string& poem,
                                     const server_options& options)
{
  for (;;) {
    error_code ec;
    tcp::endpoint peer;  // where accept puts the client's address
    bool accepted = false;
    try {
      co_await acceptor.async_wait(tcp::acceptor::wait_read, into(ec));  // only this coroutine waits
      // Closed: the server is shutting down; cancelled: serve() starts afresh.
      if (!acceptor.is_open() || ec == asio::error::operation_aborted) co_return;
      // Clients are waiting: accepts every one, without waiting (the listener is non-blocking:
      // open_listener), so that a burst of connects is taken before the other coroutines run
      // and never overflows the kernel's queue; then waits again.
      for (;;) {
        accepted = false;
        tcp::socket client = acceptor.accept(peer, ec);
        if (ec == asio::error::would_block) break;  // nobody left: wait again
        // The client left before we accepted it, or a network error: on to the next at once.
        if (ec && retry_accept_at_once(ec.value())) continue;
        if (ec) {
          // Anything else (out of descriptors or memory): wait a moment for some to be freed.
          pause.expires_after(accept_pause);
          co_await pause.async_wait(into(ec));
          if (ec) co_return;  // cancelled: serve() starts afresh
          break;
        }
        accepted = true;
        // Named as accept saw it: the client may have reset since (its socket is reset-on-close).
        asio::co_spawn(
          acceptor.get_executor(),
          send_poem(std::make_shared<connection>(std::move(client)), to_string(peer.data()), poem, options),
          asio::detached);
      }
    } catch (const std::exception& e) {
      // Out of memory, for this client (its socket closes with a reset) or for the next wait
      // (tried again at once); the others go on.
      if (accepted) report_lost(peer.data(), 0, poem.size(), e.what());
    }
  }
}

// Ctrl-C or SIGTERM: no more clients, and the loop stops. Stopping the io_context abandons every
// suspended coroutine at once, so run() returns and main says "Shutting down."; destroying the
// io_context then destroys the abandoned coroutines, and with them the last shared_ptr to each
// connection, whose socket closes.
asio::awaitable<void> stop_on_signal(asio::io_context& io, asio::signal_set& signals, tcp::acceptor& acceptor)
{
  error_code ec;
  co_await signals.async_wait(into(ec));
  if (ec) co_return;
  acceptor.close(ec);
  io.stop();
}

// Runs every connection's coroutine on this one thread until a signal stops the loop.
void serve(asio::io_context& io, tcp::acceptor& listener, asio::signal_set& signals, const std::string& poem,
           const server_options& options)
{
  asio::co_spawn(io, stop_on_signal(io, signals, listener), asio::detached);
  asio::steady_timer pause(io);  // the pause after a failed accept
  for (;;) {
    try {
      // The accept loop, first ending the one before, if any: after an exception has left run(),
      // its wait in flight may have gone with it (Asio can throw from inside its completion,
      // before the coroutine resumes), so the loop starts afresh.
      error_code ignored;
      listener.cancel(ignored);
      pause.cancel();
      asio::co_spawn(io, accept_clients(listener, pause, poem, options), asio::detached);
      io.run();  // the event loop: returns only when a signal stops it
      return;
    } catch (const std::exception& e) {
      // A handler let an exception out (out of memory where no client could take the loss):
      // Asio passes it on through run(), which may then be called again.
      report_lost("a handler", e.what());
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
    asio::io_context io(1);  // one thread runs every coroutine
    // Status lines wait until the loop sees that stdout can take them.
    poetry::asio_stdout out(io);
    poetry::report_to(&out);
    tcp::acceptor listener = poetry::open_listener(io, options->iface, options->port);
    // From here on, a signal is an event for the loop.
    asio::signal_set signals(io);
    for (int s : poetry::stop_signals()) signals.add(s);
    poetry::report_serving(options->poem_file, listener.local_endpoint().port());
    serve(io, listener, signals, poem, *options);
    // The loop has ended: the last line, with a second at most for stdout to take what is left.
    poetry::report_shutting_down();
    out.drain(std::chrono::seconds(1));
    return 0;
  });
}
