// Slow Poetry server, model 4: asio_callbacks. One thread, and the loop belongs to Boost.Asio:
// io_context::run() waits for the sockets and timers and calls a completion handler when an
// operation finishes. Each step starts the next operation and returns at once, so a
// connection's life is a chain of handlers rather than a loop. The loop writes the status lines
// too, when stdout can take them (common/asio_stdout.hpp), and sees the signals.
//
// The states of one session (one client), and the operation pending in each:
//
//   start()
//    | the first chunk at once
//    v                    on_write: more to send
//   writing --------------------------------------------> waiting
//   (async_write) <-------------------------------------- (steady_timer)
//    |    ^  |            on_wait: the next chunk is due
//    |    +--+ on_write, --delay 0: the next chunk at once, no timer
//    |
//    | on_write: the last byte is out ("Sent"); shutdown(send)
//    v
//   lingering --------------------------------------------> closed
//   (steady_timer)   on_read: the client closed,
//                    or on_linger: the linger time passed, and the
//                    client has all the poem or stopped reading
//
//   In every state a read is pending too (async_read_some): whatever the client sends is read
//   and thrown away, since unread input would turn our close into a reset. A write error, or a
//   reset seen by that read, ends the session early ("Lost ..."). Once closed, no operation is
//   pending, no handler holds the session, and it is destroyed.
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

// Sends the poem to one client, a chunk every delay, then closes gracefully. Ownership: the
// session owns its socket and timer; nothing owns the session but the handlers of its own
// pending operations, each of which holds a shared_ptr to it (self).
class session : public std::enable_shared_from_this<session> {
public:
  session(tcp::socket socket, std::string peer, const std::string& poem, const server_options& options)
    : socket_(std::move(socket)), timer_(socket_.get_executor()), poem_(poem), options_(options), peer_(std::move(peer))
  {
  }

  // The socket is reset-on-close from accept on (open_listener): until the last byte, closing
  // means "cut short".
  void start()
  {
    guarded([&] {
      report_somebody(peer_);
      timer_.expires_at(steady_clock::now());  // the first chunk is due at once
      do_read();
      do_next();
    });
  }

private:
  // A completion handler that holds this session (self) and runs member with its results.
  template <typename... Results>
  auto handler(void (session::*member)(Results...))
  {
    return [self = shared_from_this(), member](Results... results) {
      self->guarded([&] { (self.get()->*member)(results...); });
    };
  }

  // Runs one step. Out of memory (for a status line, or the next operation) costs this client
  // only: "Lost", and its socket closes with a reset. Once the whole poem is out, only the line
  // is lost: the socket is no longer reset-on-close (do_linger), and the close stays graceful.
  template <typename Step>
  void guarded(Step step)
  {
    try {
      step();
    } catch (const std::exception& e) {
      if (sent_ < poem_.size()) report_lost(peer_, sent_, poem_.size(), e.what());
      close();
    }
  }

  // What follows a chunk: the next one (the first at once, later ones after the delay), or,
  // when the poem is all sent, the graceful close.
  void do_next()
  {
    if (sent_ == poem_.size()) {
      do_linger();
      return report_sent(sent_, peer_);
    }
    if (sent_ == 0 || options_.delay == std::chrono::nanoseconds::zero()) return do_write();
    do_wait();
  }

  // Waits for the delay without blocking: the timer's handler runs when it is due. The next
  // chunk is due a delay after this one was due, not after it was written, so time spent on
  // other clients does not add up over a poem; if this one is late (a slow reader, a busy
  // loop), the next is due at once, but never two at once.
  void do_wait()
  {
    timer_.expires_at(std::max(timer_.expiry() + options_.delay, steady_clock::now()));
    timer_.async_wait(handler(&session::on_wait));
  }

  void on_wait(error_code ec)
  {
    if (!socket_.is_open() || ec) return;  // the session ended while we waited
    do_write();
  }

  // Sends one chunk. async_write finishes only when the whole chunk is in the kernel, and the
  // next write starts from its handler, so there is never more than one write on this socket.
  // The chunk points into the one shared poem: nothing is copied per session.
  void do_write()
  {
    std::string_view chunk = std::string_view(poem_).substr(sent_, options_.num_bytes);
    if (!options_.quiet) report_sending(chunk.size(), peer_);
    writing_ = true;
    asio::async_write(socket_, asio::buffer(chunk), handler(&session::on_write));
  }

  void on_write(error_code ec, std::size_t n)
  {
    writing_ = false;
    // Even after an error, n says how much of the chunk reached the kernel.
    sent_ += n;
    if (!socket_.is_open()) return;  // the session already ended
    if (ec) return fail(read_error_ ? read_error_ : ec);
    do_next();
  }

  // Reads and discards whatever the client sends, for as long as the session lasts.
  void do_read() { socket_.async_read_some(discard_.space(), handler(&session::on_read)); }

  void on_read(error_code ec, std::size_t n)
  {
    if (!socket_.is_open()) return;  // the session already ended
    discard_.filled(n);
    if (!ec) return do_read();
    client_closed_ = true;
    // After the last byte, the client's close (or its reset) is the end we were waiting for.
    if (lingering_) return close();
    // Mid-poem, end of stream only means the client has nothing more to say: keep sending.
    if (ec == asio::error::eof) return;
    // A reset: the session ends now, with the reason the read saw. A write in flight is
    // cancelled first, and its handler reports how far it got (its own error would only say
    // "Broken pipe").
    read_error_ = ec;
    error_code ignored;
    if (writing_) return socket_.cancel(ignored);
    fail(ec);
  }

  // The end of the poem: half-close, then keep reading (see on_read) until the client closes
  // or the linger time passes.
  void do_linger()
  {
    lingering_ = true;
    error_code ignored;
    set_reset_on_close(socket_.native_handle(), false);
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    if (client_closed_) return close();
    unacknowledged_ = unacknowledged_bytes(socket_.native_handle());
    timer_.expires_after(linger_time);
    timer_.async_wait(handler(&session::on_linger));
  }

  void on_linger(error_code ec)
  {
    if (!socket_.is_open() || ec) return;  // the client closed first
    // It did not close: we do, unless it is still taking the poem in.
    if (linger_may_end(socket_.native_handle(), unacknowledged_)) return close();
    timer_.expires_after(linger_time);
    timer_.async_wait(handler(&session::on_linger));
  }

  // Reports a lost client and ends this session (and only this one).
  void fail(error_code ec)
  {
    report_lost(peer_, sent_, poem_.size(), ec.message());
    close();
  }

  // Closing the socket and cancelling the timer make every pending operation complete at once
  // (with operation_aborted); their handlers see the closed socket and return, dropping the
  // last references to this session.
  void close()
  {
    error_code ignored;
    socket_.close(ignored);
    timer_.cancel();
  }

  tcp::socket socket_;
  asio::steady_timer timer_;  // the delay between chunks, then the linger time
  const std::string& poem_;
  const server_options& options_;
  std::string peer_;
  std::size_t sent_ = 0;
  bool writing_ = false;            // an async_write is in flight
  bool lingering_ = false;          // the poem is sent and our side is shut down
  std::size_t unacknowledged_ = 0;  // lingering: bytes the client's TCP had not acknowledged when last asked
  bool client_closed_ = false;      // the read saw the end of the client's stream (or an error)
  error_code read_error_;           // the reset the read saw, while a write was in flight
  discard_buffer discard_;
};

// Accepts clients and starts a session for each; every session then runs on its own handlers,
// so a slow client delays nobody else.
class server {
public:
  server(asio::io_context& io, tcp::acceptor& acceptor, asio::signal_set& signals, const std::string& poem,
         const server_options& options)
    : io_(io), acceptor_(acceptor), signals_(signals), pause_(io), poem_(poem), options_(options)
  {
  }

  void start()
  {
    signals_.async_wait([this](error_code ec, int) { on_signal(ec); });
  }

  // Starts the chain of accepts, first cancelling whatever wait or pause is pending: none at the
  // start; after an exception has left run(), the wait in flight may have gone with it (Asio can
  // throw from inside its completion, before on_readable), so the chain starts afresh.
  void accept()
  {
    error_code ignored;
    acceptor_.cancel(ignored);
    pause_.cancel();
    do_accept();
  }

private:
  void do_accept()
  {
    acceptor_.async_wait(tcp::acceptor::wait_read, [this](error_code ec) { on_readable(ec); });
  }

  // Clients are waiting: accepts every one, without waiting (the listener is non-blocking:
  // open_listener), so that a burst of connects is taken before the sessions' handlers run and
  // never overflows the kernel's queue; then waits again.
  void on_readable(error_code ec)
  {
    // Closed: the server is shutting down; cancelled: accept() starts afresh.
    if (!acceptor_.is_open() || ec == asio::error::operation_aborted) return;
    for (;;) {
      tcp::endpoint peer;  // where accept puts the client's address
      tcp::socket socket = acceptor_.accept(peer, ec);
      if (ec == asio::error::would_block) break;  // nobody left: wait again
      // The client left before we accepted it, or a network error: on to the next at once.
      if (ec && retry_accept_at_once(ec.value())) continue;
      if (ec) {
        // Anything else (out of descriptors or memory): wait a moment for some to be freed.
        pause_.expires_after(accept_pause);
        pause_.async_wait([this](error_code pause_ec) { on_pause(pause_ec); });
        return;
      }
      try {
        // Named as accept saw it: the client may have reset since (its socket is reset-on-close).
        std::make_shared<session>(std::move(socket), to_string(peer.data()), poem_, options_)->start();
      } catch (const std::exception& e) {
        // Out of memory: this client's socket closes with a reset; the others go on.
        report_lost(peer.data(), 0, poem_.size(), e.what());
      }
    }
    do_accept();
  }

  void on_pause(error_code ec)
  {
    if (ec) return;
    do_accept();
  }

  // Ctrl-C or SIGTERM: no more clients, and the loop stops. Stopping the io_context abandons
  // every pending operation at once, so run() returns and main says "Shutting down."; destroying
  // the io_context then destroys the abandoned handlers, and with them the last shared_ptr to
  // each session, whose socket closes. No registry of sessions is needed for that.
  void on_signal(error_code ec)
  {
    if (ec) return;
    error_code ignored;
    acceptor_.close(ignored);
    io_.stop();
  }

  asio::io_context& io_;
  tcp::acceptor& acceptor_;
  asio::signal_set& signals_;
  asio::steady_timer pause_;  // the pause after a failed accept
  const std::string& poem_;
  const server_options& options_;
};

// Runs every session on this one thread until a signal stops the loop.
void serve(asio::io_context& io, tcp::acceptor& listener, asio::signal_set& signals, const std::string& poem,
           const server_options& options)
{
  server s(io, listener, signals, poem, options);
  s.start();
  for (;;) {
    try {
      s.accept();
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
    asio::io_context io(1);  // one thread runs every handler
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
