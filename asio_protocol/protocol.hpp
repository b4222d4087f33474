// A small Protocol/Transport/Factory layer on Boost.Asio, after Twisted and Python's asyncio.
// It knows nothing about poems: it owns the sockets and the handler chains of asio_callbacks,
// and turns them into events for a Protocol object.
//
//   listen(io, host, port, factory)      connect(io, host, port, factory, on_failure)
//              |  accepted                          |  resolved, connected
//              v                                    v
//          Transport (one per connection; owns the socket and the Protocol from factory())
//              |  calls the Protocol:  connection_made -> data_received* -> eof_received?
//              |                       -> connection_lost (exactly once, always)
//              |  the Protocol calls:  write, write_eof, close, abort, pause_reading, call_later...
//
// The contract, as asyncio's:
// - Who owns what. The layer owns every Transport from connection_made until connection_lost has
//   returned, whatever is pending (nothing, on a half-open connection); a Transport owns its
//   socket and its Protocol. So a Protocol may keep a reference to its Transport, and others may
//   keep a pointer to the Protocol, until connection_lost. Destroying the io_context destroys
//   the connections still open, without connection_lost (as at a server's shutdown).
// - When callbacks run. Only from io_context::run(), one at a time, never from inside a call the
//   Protocol makes: connection_lost in particular runs later, on the loop, after close(),
//   abort() or an error, so a Protocol may call close() anywhere and go on using its members.
//   Nothing is called after connection_lost. A callback must not block.
// - Exceptions, of any type. One escaping a callback ends that connection only: the layer says
//   so on stderr ("proto: PEER: a callback failed...: what"; stdout is the program's), aborts
//   the connection, and calls connection_lost (connection_aborted). So does one escaping
//   connection_made (asyncio logs that one and leaves the connection open). A factory that
//   throws: the same on stderr; a server closes that connection, connect calls on_failure.
//
// A connection's states. Reading and writing end separately (the columns); the connection ends
// (connection_lost follows, on the loop) at close() once the queue is written, at abort() or an
// error, or when both directions have ended, as in Twisted (asyncio waits for close()):
//
//   state        entered by                  writing                   reading
//   open         connection_made             write() queues            a read is pending, except
//   eof_asked    write_eof()                 queue drains, then ...    while paused
//   write_ended  ... shutdown(send)          nothing more              (pause_reading) and after
//   closing      close()                     queue drains, then end    the peer's end of stream;
//   ended        the end                     nothing                   after close(), read and
//                                                                      dropped; none once ended
//
//   reading:  data_received* --peer's end of stream--> eof_received() --false--> close()
//                                                                     --true---> half-open
//
// Input still unread when the socket closes turns the close into a reset: a Protocol that wants
// a clean end half-closes first and waits for the peer's end (as the poetry server's linger does).
#pragma once

#include "common/asio.hpp"
#include "common/asio_listener.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace proto {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

class Transport;

// What a connection does: override the events you need. Nothing here blocks; a Protocol acts by
// calling its Transport, which it may keep (as a reference) from connection_made on.
class Protocol {
public:
  virtual ~Protocol() = default;
  // The connection is up; transport lives until connection_lost has returned.
  virtual void connection_made(Transport&) {}
  // Some bytes arrived: any amount, split or joined however TCP pleased. The view points into
  // the Transport's read buffer and is valid only during this call: copy what you keep.
  virtual void data_received(std::string_view) {}
  // The peer will send nothing more. Return true to keep the connection open for writing (a
  // half-open connection, until the Protocol closes it or its own write_eof is done); false,
  // the default, calls close(). Called after write_eof too.
  virtual bool eof_received() { return false; }
  // Everything given to write() has been handed to the kernel: a good moment to write more.
  // Like Twisted's pull producer resumeProducing. Not called once write_eof, close or abort has been.
  virtual void buffer_drained() {}
  // The connection is gone, for reason: empty when it ended cleanly (close, abort, or both
  // directions ended); else why (connection_reset, broken_pipe, connection_aborted after a
  // callback threw...). Called exactly once for every connection_made, on the loop.
  virtual void connection_lost(const error_code&) {}
};

// Makes one Protocol for each connection.
using ProtocolFactory = std::function<std::unique_ptr<Protocol>()>;

// A callback that call_later scheduled. Cancelling it (or the end of the connection) guarantees
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

// How much a connection reads at a time, unless listen or connect is told otherwise: asyncio's
// 64 KiB. A server of many connections that each send little may pass less.
constexpr std::size_t default_read_size = 64 * 1024;

// One connection. listen and connect make Transports, through start (see the contract above
// for who owns them); a Protocol gets a reference to its own in connection_made.
class Transport : public std::enable_shared_from_this<Transport> {
public:
  // Queues a copy of bytes, to be written after what is already queued; one write runs at a
  // time. Ignored once close or abort has been called; after write_eof, an error
  // (std::logic_error).
  void write(std::string_view bytes);
  // The same without the copy, for bytes that outlive the Transport (a server's one poem for
  // all its clients, a string literal): only the view is queued.
  void write_borrowed(std::string_view bytes);
  // When everything queued is written: shut down the sending side (a half-close). Reading goes
  // on; eof_received and connection_lost follow the peer.
  void write_eof();
  // When everything queued is written: close; the peer sees an end of stream. No more
  // data_received or eof_received from now on.
  void close();
  // Close now, dropping whatever is queued.
  void abort();
  // True once close or abort has been called, or the connection has ended (not after write_eof
  // alone, even when the peer's end has come too: the end then follows, on the loop).
  bool is_closing() const { return state_ == state::closing || state_ == state::ended; }

  // Bytes given to write() and not yet handed to the kernel; once the connection has ended,
  // those that never were.
  std::size_t get_write_buffer_size() const { return buffered_; }

  // Stop and restart calling data_received (and eof_received), like asyncio's: while paused
  // the kernel's buffer fills and TCP slows the peer down.
  void pause_reading();
  void resume_reading();

  // The peer's address, printable: "127.0.0.1:51234" or "[::1]:51234".
  const std::string& peer() const { return peer_; }
  // The addresses of both ends, like get_extra_info("peername") and ("sockname").
  const tcp::endpoint& peername() const { return peername_; }
  const tcp::endpoint& sockname() const { return sockname_; }
  // The socket's descriptor, for socket options (like get_extra_info("socket")); -1 once the
  // connection has ended.
  int native_handle() { return socket_.native_handle(); }

  // Runs callback after delay (call_later) or at a time (call_at), on the loop, unless it is
  // cancelled or the connection ends first (close() alone cancels nothing: a timer still runs
  // while the queue is written). Like asyncio's loop.call_later and loop.call_at.
  TimerHandle call_later(std::chrono::nanoseconds delay, std::function<void()> callback);
  TimerHandle call_at(std::chrono::steady_clock::time_point when, std::function<void()> callback);

  // For listen and connect: makes a Transport for socket (peer: as accept or connect saw it) with
  // a Protocol from factory, and starts it (connection_made, reading). False if factory threw.
  static bool start(tcp::socket socket, const tcp::endpoint& peer, std::size_t read_size,
                    const ProtocolFactory& factory);

private:
  enum class state { open, eof_asked, write_ended, closing, ended };  // see the table above

  Transport(tcp::socket socket, const tcp::endpoint& peer, std::size_t read_size);
  void do_read();
  void on_read(const error_code& ec, std::size_t n);
  void queue(std::string_view bytes, bool copy);
  void do_write();
  void on_write(const error_code& ec, std::size_t n);
  void do_shutdown();
  void finish(const error_code& reason);
  template <class Callback>
  void guard(Callback&& callback);

  // One write: bytes points into owned, or (write_borrowed) into the caller's buffer.
  struct pending {
    std::unique_ptr<char[]> owned;
    std::string_view bytes;
  };

  tcp::socket socket_;
  std::unique_ptr<Protocol> protocol_;
  std::string peer_;
  tcp::endpoint peername_, sockname_;
  state state_ = state::open;
  bool read_ended_ = false;  // the peer's end of stream was read (and eof_received said true)
  bool paused_ = false;      // pause_reading()
  std::optional<std::pair<error_code, std::size_t>> held_;  // a read that completed while paused
  std::deque<pending> queue_;  // what the kernel has not taken yet, oldest first; a write is in flight if not empty
  std::size_t buffered_ = 0;   // bytes in queue_
  std::vector<std::weak_ptr<TimerHandle::state>> timers_;  // to cancel them all at the end
  std::unique_ptr<char[]> read_buffer_;
  std::size_t read_size_;
};

// Listens on host:port, like asyncio's create_server: every accepted connection gets a
// Transport and a Protocol from factory, and reads up to read_size bytes at a time. Accept errors
// are handled as common/'s accept_loop says (a pause when out of descriptors). close() stops
// accepting. Throws std::runtime_error if nothing on host:port can be bound.
using Server = poetry::accept_loop;
std::shared_ptr<Server> listen(asio::io_context& io, const std::string& host, std::uint16_t port,
                               ProtocolFactory factory, std::size_t read_size = default_read_size);

// Connects to host:port, like asyncio's create_connection (and Twisted's connectTCP with its
// timeout): resolves host, tries each address in turn (common/'s connect_each: one that makes no
// progress for timeout, when given, gives way to the next), and on success starts a Transport
// with a Protocol from factory. If no address is left, on_failure gets the last reason
// (asio::error::timed_out for the timeout) and factory is never called. If factory throws,
// on_failure gets asio::error::connection_aborted (asyncio's create_connection raises).
void connect(asio::io_context& io, const std::string& host, std::uint16_t port, ProtocolFactory factory,
             std::function<void(const error_code&)> on_failure,
             std::optional<std::chrono::nanoseconds> timeout = std::nullopt, std::size_t read_size = default_read_size);

}  // namespace proto
