// Slow Poetry server, model 5: asio_protocol. The same one thread and Asio loop as
// asio_callbacks, but the handler chains have moved into a small reusable layer (protocol.hpp):
// a Transport reads, writes and half-closes. What is left here is the poetry: a
// Protocol whose methods the layer calls when something happens, as in Twisted or asyncio.
//
// The events of one PoetryServerProtocol (one client):
//
//   connection_made --> send a chunk --buffer_drained--> wait for the delay --> send a chunk --> ...
//                          ^                  |            (none with --delay 0)     |
//                          |                  +-- all sent: "Sent", write_eof, linger|
//                          +---------------------------------------------------------+
//   connection_lost before the last byte: "Lost"
//
// data_received has nothing to do (the Transport reads and drops what the client sends), and
// the client's end of stream only means it has nothing more to say. With --pull, the server
// speaks another dialogue, a chunk per request: PullPoetryServerProtocol (pull.hpp). The loop
// writes the status lines too, when stdout can take them (common/asio_stdout.hpp), and sees the
// signals.
#include "asio_protocol/protocol.hpp"
#include "asio_protocol/pull.hpp"
#include "common/asio.hpp"
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
using boost::system::error_code;
using proto::Protocol;
using steady_clock = std::chrono::steady_clock;
using proto::Transport;

// Sends the poem to one client, a chunk every delay, then closes gracefully. Ownership: the
// Transport owns this protocol and outlives it; the protocol keeps a reference to it.
class PoetryServerProtocol : public Protocol {
public:
  PoetryServerProtocol(const std::string& poem, const server_options& options) : poem_(poem), options_(options) {}

  void connection_made(Transport& transport) override
  {
    transport_ = &transport;
    // Until the last byte, closing means "cut short". (Set on the native handle: Asio turns off
    // a linger option set through it when it destroys the socket, as at shutdown.)
    set_reset_on_close(transport.native_handle(), true);
    report_somebody(transport.peer());
    due_ = steady_clock::now();  // the first chunk is due at once
    do_next();
  }

  // Mid-poem, end of stream only means the client has nothing more to say: keep sending.
  // After the last byte, it is the end we were waiting for: the Transport closes.
  bool eof_received() override { return true; }

  // The chunk is in the kernel: on to the next.
  void buffer_drained() override
  {
    sent_ = next_;
    do_next();
  }

  // What was handed to the kernel: all but what the Transport still held.
  void connection_lost(const error_code& reason) override
  {
    sent_ = next_ - transport_->get_write_buffer_size();
    if (sent_ < poem_.size()) report_lost(transport_->peer(), sent_, poem_.size(), reason.message());
  }

private:
  // What follows a chunk: the next one (the first at once, later ones after the delay), or,
  // when the poem is all sent, the graceful close.
  void do_next()
  {
    if (sent_ == poem_.size()) {
      do_linger();
      return report_sent(sent_, transport_->peer());
    }
    if (sent_ == 0 || options_.delay == std::chrono::nanoseconds::zero()) return do_write();
    do_wait();
  }

  // Waits for the delay without blocking: the Transport calls back when the next chunk is due
  // (and never, if the client goes first). The next chunk is due a delay after this one was
  // due, not after it was written, so time spent on other clients does not add up over a poem;
  // if this one is late (a slow reader, a busy loop), the next is due at once, but never two at once.
  void do_wait()
  {
    due_ = std::max(due_ + options_.delay, steady_clock::now());
    transport_->call_at(due_, [this] { do_write(); });
  }

  // Sends one chunk. The chunk points into the one shared poem: nothing is copied per client.
  void do_write()
  {
    std::string_view chunk = std::string_view(poem_).substr(sent_, options_.num_bytes);
    if (!options_.quiet) report_sending(chunk.size(), transport_->peer());
    transport_->write_borrowed(chunk);
    next_ += chunk.size();
  }

  // The end of the poem: the graceful close (pull.hpp).
  void do_linger() { end_of_poem(*transport_, unacknowledged_); }

  const std::string& poem_;
  const server_options& options_;
  Transport* transport_ = nullptr;
  std::size_t sent_ = 0;            // handed to the kernel
  std::size_t next_ = 0;            // where the next chunk starts
  steady_clock::time_point due_;    // when the next chunk is due
  std::size_t unacknowledged_ = 0;  // lingering: for end_of_poem
};

// Runs every connection on this one thread until a signal stops the loop.
void serve(asio::io_context& io, proto::Server& listener, asio::signal_set& signals)
{
  // Ctrl-C or SIGTERM: no more clients, and the loop stops. Stopping the io_context abandons
  // every pending operation at once, so run() returns and main says "Shutting down.";
  // destroying the io_context then destroys the abandoned handlers, and with them the last
  // shared_ptr to each Transport, whose socket closes.
  signals.async_wait([&](error_code ec, int) {
    if (ec) return;
    listener.close();
    io.stop();
  });
  for (;;) {
    try {
      io.run();  // the event loop: returns only when a signal stops it
      return;
    } catch (const std::exception& e) {
      // A handler let an exception out (out of memory where no connection could take the loss):
      // Asio passes it on through run(), which may then be called again.
      report_lost("a handler", e.what());
      listener.restart();
    }
  }
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = poetry::parse_server_options(argc, argv, {.pull = true});
    if (!options) return 0;
    std::string poem = poetry::load_poem(options->poem_file);
    asio::io_context io(1);  // one thread runs every handler
    // Status lines wait until the loop sees that stdout can take them.
    poetry::asio_stdout out(io);
    poetry::report_to(&out);
    // The factory: one protocol per connection, all sharing the one poem. A client sends little
    // (nothing, or "poems"): each connection reads 512 bytes at a time, not the layer's 64 KiB.
    auto listener = proto::listen(
      io, options->iface, options->port,
      [&]() -> std::unique_ptr<Protocol> {
        if (options->pull) return std::make_unique<PullPoetryServerProtocol>(poem, *options);
        return std::make_unique<PoetryServerProtocol>(poem, *options);
      },
      512);
    // From here on, a signal is an event for the loop.
    asio::signal_set signals(io);
    for (int s : poetry::stop_signals()) signals.add(s);
    poetry::report_serving(options->poem_file, listener->port());
    serve(io, *listener, signals);
    // The loop has ended: the last line, with a second at most for stdout to take what is left.
    poetry::report_shutting_down();
    out.drain(std::chrono::seconds(1));
    return 0;
  });
}
