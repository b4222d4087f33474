// A small Protocol/Transport/Factory layer on Boost.Asio, after Twisted and Python's asyncio.
// It knows nothing about poems: it owns the sockets and the handler chains of asio_callbacks,
// and turns them into four events for a Protocol object.
//
//   listen(io, host, port, factory)      connect(io, host, port, factory, on_failure)
//              |  accepted                          |  resolved, connected
//              v                                    v
//          Transport (one per connection; owns the socket and the Protocol from factory())
//              |  calls the Protocol:  connection_made -> data_received* -> eof_received?
//              |                       -> connection_lost (exactly once)
//              |  the Protocol calls:  write, write_eof, close, abort, call_later, call_at
//
// The states of one Transport:
//
//   [ open ] --write_eof()--> [ draining ] --all written: shutdown(send)--> [ lingering ] --+
//     |   \--close()--------> [ closing ]  --all written-----------------------------------+--> [ closed ]
//     |                                       peer closed, or linger_time passed --------+    |
//     +--error, abort(), or the peer's end of stream and eof_received() said false ----------+
//
// All along, from connection_made to closed, a read is pending: whatever the peer sends reaches
// data_received (so unread input never turns our close into a reset). One thread runs everything:
// the Protocol's methods are called from io_context::run(), one at a time, and must never block.
#pragma once

#include "common/asio.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace proto {

namespace asio = boost::asio;
using boost::system::error_code;

class Transport;

// What a connection does: override the events you need. Nothing here blocks; a Protocol acts by
// calling its Transport, which it may keep (as a reference) from connection_made on.
class Protocol {
public:
  virtual ~Protocol() = default;
  // The connection is up; transport lives until connection_lost has returned.
  virtual void connection_made(Transport&) {}
  // Some bytes arrived: any amount, split or joined however TCP pleased.
  virtual void data_received(std::string_view) {}
  // The peer will send nothing more. Return true to keep the connection open for writing (a
  // half-closed connection); false, the default, closes it (after what is queued is written).
  virtual bool eof_received() { return false; }
  // Everything given to write() has been written (to the kernel): a good moment to write more.
  // Like Twisted's pull producer resumeProducing, or asyncio's resume_writing with a high-water
  // mark of zero. Not called once write_eof, close or abort has been.
  virtual void buffer_drained() {}
  // The connection is gone, for reason: empty when this side ended it (close, or the graceful
  // close after write_eof); else why (asio::error::eof for the peer's end of stream after
  // eof_received returned false, connection_reset, broken_pipe, ...). Called exactly once.
  virtual void connection_lost(const error_code&) {}
};

// Makes one Protocol for each connection.
using ProtocolFactory = std::function<std::unique_ptr<Protocol>()>;

// A callback that call_later scheduled. Cancelling it (or closing the connection) guarantees
// it will not run, even if its time has already come.
class TimerHandle {
public:
  TimerHandle() = default;
  void cancel();

private:
  friend class Transport;
  struct state;
  explicit TimerHandle(std::weak_ptr<state> s) : state_(std::move(s)) {}
  std::weak_ptr<state> state_;
};

// One connection. Ownership: nothing owns a Transport but the handlers of its own pending
// operations (each holds a shared_ptr to it); the Transport owns its socket and its Protocol.
class Transport : public std::enable_shared_from_this<Transport> {
public:
  Transport(asio::ip::tcp::socket socket, std::size_t read_buffer_size);
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Queues bytes to be written after what is already queued; one async_write runs at a time.
  // write() does not copy: the bytes must stay alive until written, so pass a string literal or
  // a view into a buffer that outlives the Transport (a server's one poem for all its clients).
  // Ignored once write_eof, close or abort has been called.
  void write(std::string_view bytes);
  // When everything queued is written: half-close (shutdown send), keep reading until the peer
  // closes or linger_time passes, then close. connection_lost() gets an empty reason.
  void write_eof();
  // When everything queued is written: close; the peer sees an end of stream.
  // connection_lost() gets reason.
  void close(error_code reason = {});
  // Close now, dropping whatever is queued. On a server's connection the peer sees a reset,
  // as it does when the server ends (Ctrl-C, a crash) before write_eof or close.
  // connection_lost() gets reason.
  void abort(error_code reason = {});

  // The peer's address, "127.0.0.1:51234" or "[::1]:51234".
  const std::string& peer() const { return peer_; }

  // Runs callback after delay (call_later) or at a time (call_at), on the loop, unless it is
  // cancelled or the connection closes first. Like asyncio's loop.call_later and loop.call_at.
  TimerHandle call_later(std::chrono::nanoseconds delay, std::function<void()> callback);
  TimerHandle call_at(std::chrono::steady_clock::time_point when, std::function<void()> callback);

  // Gives the connection its Protocol and starts it: connection_made, then reading.
  void start(std::unique_ptr<Protocol> protocol);

private:
  enum class state { open, draining, lingering, closing, closed };

  void do_read();
  void on_read(const error_code& ec, std::size_t n);
  void do_write();
  void on_write(const error_code& ec);
  void all_written();
  void do_linger();
  void finish(const error_code& reason);

  asio::ip::tcp::socket socket_;
  std::unique_ptr<Protocol> protocol_;
  std::string peer_;
  state state_ = state::open;
  bool writing_ = false;     // an async_write is in flight
  bool peer_ended_ = false;  // the read saw the peer's end of stream
  error_code close_reason_;  // for close(): what connection_lost will be told
  std::vector<std::string_view> queue_;  // front: being written; the rest: waiting
  std::vector<std::weak_ptr<TimerHandle::state>> timers_;  // to cancel them all at the end
  std::unique_ptr<char[]> read_buffer_;
  std::size_t read_buffer_size_;
};

// Read buffer sizes: a server has many connections, each reading little; a client has a few,
// each reading a whole poem.
constexpr std::size_t server_read_buffer = 512;
constexpr std::size_t client_read_buffer = 65536;

// Listens on host:port, like asyncio's create_server. Every accepted connection gets a
// Transport and a Protocol from factory. If accept fails (out of descriptors, most likely),
// accepting pauses for a moment instead of spinning. Throws std::runtime_error if nothing on
// host:port can be bound.
class Server : public std::enable_shared_from_this<Server> {
public:
  Server(asio::ip::tcp::acceptor acceptor, ProtocolFactory factory);
  std::uint16_t port() const;  // the port bound (port 0 picks a free one)
  void close();                // stops accepting; the connections go on

private:
  friend std::shared_ptr<Server> listen(asio::io_context&, const std::string&, std::uint16_t, ProtocolFactory);
  void do_accept();
  void on_accept(const error_code& ec, asio::ip::tcp::socket socket);

  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer pause_;  // the pause after a failed accept
  ProtocolFactory factory_;
};

std::shared_ptr<Server> listen(asio::io_context& io, const std::string& host, std::uint16_t port,
                               ProtocolFactory factory);

// Connects to host:port, like asyncio's create_connection (and Twisted's connectTCP with its
// timeout): resolves host, tries each address in turn, and on success starts a Transport with a
// Protocol from factory. If that fails, or takes longer than timeout (when given), on_failure
// gets the reason (asio::error::timed_out for the timeout) and factory is never called.
void connect(asio::io_context& io, const std::string& host, std::uint16_t port, ProtocolFactory factory,
             std::function<void(const error_code&)> on_failure,
             std::optional<std::chrono::nanoseconds> timeout = std::nullopt);

}  // namespace proto
