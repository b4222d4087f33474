#include "asio_protocol/protocol.hpp"

#include "common/asio_connect.hpp"
#include "common/sockets.hpp"

#include <array>
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <unordered_set>
#include <utility>

namespace proto {

namespace {

// Owns every Transport of one io_context from connection_made until connection_lost has
// returned, so a connection with nothing pending (half-open, waiting for its Protocol) still has
// an owner. An Asio service: destroying the io_context shuts it down, which drops them all.
class connections : public asio::execution_context::service {
public:
  using key_type = connections;
  static inline asio::execution_context::id id;
  explicit connections(asio::execution_context& context) : service(context) {}
  std::unordered_set<std::shared_ptr<Transport>> live;

private:
  void shutdown() override { live.clear(); }
};

connections& connections_of(const tcp::socket::executor_type& executor)
{
  return asio::use_service<connections>(asio::query(executor, asio::execution::context));
}

// The layer's own diagnostics, called from a catch block: on stderr, as asyncio's logger, never
// on stdout, which is the program's. One write, so lines never mix.
void complain(const std::string& peer, const char* what_failed)
{
  std::string why = "unknown exception";
  try {
    throw;
  } catch (const std::exception& e) {
    why = e.what();
  } catch (...) {
  }
  std::string line = "proto: " + peer + ": " + what_failed + ": " + why + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace

// --- TimerHandle ---------------------------------------------------------------------------

// A timer and whether it was cancelled: cancel() on an Asio timer cannot stop a handler that is
// already queued to run, so the handler checks the flag too.
struct TimerHandle::state {
  explicit state(const asio::any_io_executor& executor) : timer(executor) {}
  asio::steady_timer timer;
  bool cancelled = false;
};

void TimerHandle::cancel()
{
  if (auto s = state_.lock()) {
    s->cancelled = true;
    s->timer.cancel();
  }
}

// --- Transport: the start and the end ------------------------------------------------------

Transport::Transport(tcp::socket socket, const tcp::endpoint& peer, std::size_t read_size)
  : socket_(std::move(socket)),
    peer_(poetry::to_string(peer.data())),
    peername_(peer),
    read_buffer_(std::make_unique_for_overwrite<char[]>(read_size)),
    read_size_(read_size)
{
  error_code ignored;
  sockname_ = socket_.local_endpoint(ignored);
}

bool Transport::start(tcp::socket socket, const tcp::endpoint& peer, std::size_t read_size,
                      const ProtocolFactory& factory)
{
  std::shared_ptr<Transport> self;
  try {
    self.reset(new Transport(std::move(socket), peer, read_size));
    self->protocol_ = factory();
    connections_of(self->socket_.get_executor()).live.insert(self);
  } catch (...) {
    // No Protocol, no connection (a server's socket is reset-on-close: its peer sees a reset).
    complain(self ? self->peer_ : "a new connection", "the factory failed");
    return false;
  }
  // From here on the Protocol decides: a connection closes gracefully, as in asyncio, unless
  // its Protocol marks it (the poetry servers' do).
  poetry::set_reset_on_close(self->socket_.native_handle(), false);
  self->guard([&] {
    self->protocol_->connection_made(*self);
    if (self->state_ != state::ended) self->do_read();
  });
  return true;
}

// Runs one callback of the Protocol. An exception, whatever it is, ends this connection only.
template <class Callback>
void Transport::guard(Callback&& callback)
{
  try {
    callback();
  } catch (...) {
    complain(peer_, "a callback failed, the connection is aborted");
    finish(asio::error::connection_aborted);
  }
}

// Ends the connection once: cancels the timers, closes the socket (so the pending read and
// write complete at once and drop their references to this Transport; the write's count comes
// before connection_lost, which is posted after it), and tells the Protocol later, on the loop.
void Transport::finish(const error_code& reason)
{
  if (state_ == state::ended) return;
  state_ = state::ended;
  for (auto& weak : timers_)
    if (auto s = weak.lock()) TimerHandle(s).cancel();
  timers_.clear();
  queue_.clear();
  error_code ignored;
  socket_.close(ignored);
  asio::post(socket_.get_executor(), [self = shared_from_this(), reason] {
    try {
      self->protocol_->connection_lost(reason);
    } catch (...) {
      complain(self->peer_, "connection_lost failed");
    }
    connections_of(self->socket_.get_executor()).live.erase(self);
  });
}

void Transport::close()
{
  if (is_closing()) return;
  state_ = state::closing;
  if (paused_) resume_reading();  // go on reading, to drop what the peer sends until the end
  if (queue_.empty()) finish({});
}

void Transport::abort() { finish({}); }

// --- Transport: reading --------------------------------------------------------------------

// Reads whatever arrives, for as long as the connection lasts, and hands it to the Protocol.
void Transport::do_read()
{
  socket_.async_read_some(asio::buffer(read_buffer_.get(), read_size_),
                          [self = shared_from_this()](const error_code& ec, std::size_t n) { self->on_read(ec, n); });
}

void Transport::on_read(const error_code& ec, std::size_t n)
{
  if (state_ == state::ended) return;
  // Paused: keep what was read for resume_reading.
  if (paused_) {
    held_.emplace(ec, n);
    return;
  }
  if (ec == asio::error::eof) {
    if (state_ == state::closing) return;  // no more events after close()
    // The Protocol decides: stay half-open, or close.
    bool keep_open = false;
    guard([&] { keep_open = protocol_->eof_received(); });
    if (state_ == state::ended) return;
    if (!keep_open) return close();
    read_ended_ = true;
    if (state_ == state::write_ended) finish({});  // both directions have ended
    return;
  }
  if (ec) return finish(ec);
  // After close(), what the peer sends is read and dropped. (n is 0 only for a read held while
  // paused that brought nothing: see below.)
  if (n > 0 && state_ != state::closing)
    guard([&] { protocol_->data_received(std::string_view(read_buffer_.get(), n)); });
  if (state_ == state::ended) return;
  // Paused from data_received: resume_reading starts the next read.
  if (paused_) {
    held_.emplace(error_code{}, 0);
    return;
  }
  do_read();
}

void Transport::pause_reading()
{
  if (!is_closing()) paused_ = true;  // after close(), reading goes on, to drop what arrives
}

void Transport::resume_reading()
{
  if (!paused_) return;
  paused_ = false;
  // Hand over the read that completed meanwhile, on the loop (not from inside this call).
  if (auto held = std::exchange(held_, std::nullopt)) {
    asio::post(socket_.get_executor(), [self = shared_from_this(), held] { self->on_read(held->first, held->second); });
  }
}

// --- Transport: writing --------------------------------------------------------------------

void Transport::write(std::string_view bytes) { queue(bytes, true); }

void Transport::write_borrowed(std::string_view bytes) { queue(bytes, false); }

void Transport::queue(std::string_view bytes, bool copy)
{
  if (is_closing()) return;
  if (state_ != state::open) throw std::logic_error("write after write_eof");
  if (bytes.empty()) return;
  pending next;
  if (copy) {
    // A buffer of its own on the heap: it stays put when the queue grows, even mid-write.
    next.owned = std::make_unique_for_overwrite<char[]>(bytes.size());
    std::memcpy(next.owned.get(), bytes.data(), bytes.size());
    bytes = std::string_view(next.owned.get(), bytes.size());
  }
  next.bytes = bytes;
  queue_.push_back(std::move(next));
  buffered_ += bytes.size();
  if (queue_.size() == 1) do_write();  // else a write is in flight, and its handler goes on
}

// Hands the kernel what the queue holds: one write as it is (send), or up to 16 in one sendmsg,
// so that many small writes cost one system call; a large one goes as far as the kernel takes
// it. The next write starts from the handler, so there is never more than one in flight.
void Transport::do_write()
{
  auto handler = [self = shared_from_this()](const error_code& ec, std::size_t n) { self->on_write(ec, n); };
  if (queue_.size() == 1) return socket_.async_write_some(asio::buffer(queue_.front().bytes), std::move(handler));
  std::array<asio::const_buffer, 16> buffers;  // by value into the operation; the rest stay empty
  for (std::size_t i = 0; i < buffers.size() && i < queue_.size(); ++i) buffers[i] = asio::buffer(queue_[i].bytes);
  socket_.async_write_some(buffers, std::move(handler));
}

void Transport::on_write(const error_code& ec, std::size_t n)
{
  // Handed to the kernel, even if the connection has ended since (see finish).
  buffered_ -= n;
  if (state_ == state::ended) return;
  if (ec) return finish(ec);
  // Drop what the kernel took: whole writes from the front, then the start of a partial one.
  while (n > 0 && n >= queue_.front().bytes.size()) {
    n -= queue_.front().bytes.size();
    queue_.pop_front();
  }
  if (n > 0) queue_.front().bytes.remove_prefix(n);
  if (!queue_.empty()) return do_write();
  // All written: carry on with the close or half-close asked for, or tell the Protocol.
  if (state_ == state::closing) return finish({});
  if (state_ == state::eof_asked) return do_shutdown();
  guard([&] { protocol_->buffer_drained(); });
}

void Transport::write_eof()
{
  if (state_ != state::open) return;
  state_ = state::eof_asked;
  if (queue_.empty()) do_shutdown();
}

// The half-close. If the peer's side has ended too, so has the connection: on the loop, so that
// a write_eof() in a callback does not end it under the Protocol's feet.
void Transport::do_shutdown()
{
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  state_ = state::write_ended;
  if (read_ended_) asio::post(socket_.get_executor(), [self = shared_from_this()] { self->finish({}); });
}

// --- Transport: timers ---------------------------------------------------------------------

TimerHandle Transport::call_later(std::chrono::nanoseconds delay, std::function<void()> callback)
{
  return call_at(std::chrono::steady_clock::now() + delay, std::move(callback));
}

TimerHandle Transport::call_at(std::chrono::steady_clock::time_point when, std::function<void()> callback)
{
  if (state_ == state::ended) return {};
  auto s = std::make_shared<TimerHandle::state>(socket_.get_executor());
  s->timer.expires_at(when);
  std::erase_if(timers_, [](const auto& weak) { return weak.expired(); });
  timers_.push_back(s);
  s->timer.async_wait([self = shared_from_this(), s, callback = std::move(callback)](const error_code& ec) {
    if (ec || s->cancelled || self->state_ == state::ended) return;
    self->guard(callback);
  });
  return TimerHandle(s);
}

// --- listen and connect --------------------------------------------------------------------

std::shared_ptr<Server> listen(asio::io_context& io, const std::string& host, std::uint16_t port,
                               ProtocolFactory factory, std::size_t read_size)
{
  auto start = [factory = std::move(factory), read_size](tcp::socket socket, const tcp::endpoint& peer) {
    Transport::start(std::move(socket), peer, read_size, factory);
  };
  return poetry::accept_loop::start(poetry::open_listener(io, host, port), std::move(start));
}

void connect(asio::io_context& io, const std::string& host, std::uint16_t port, ProtocolFactory factory,
             std::function<void(const error_code&)> on_failure, std::optional<std::chrono::nanoseconds> timeout,
             std::size_t read_size)
{
  auto start = [factory = std::move(factory), on_failure = std::move(on_failure), read_size](const error_code& ec,
                                                                                             tcp::socket socket) {
    if (ec) return on_failure(ec);
    error_code ignored;
    tcp::endpoint peer = socket.remote_endpoint(ignored);  // as connect saw it
    // As asyncio's create_connection raises: a factory that throws is a failure to connect.
    if (!Transport::start(std::move(socket), peer, read_size, factory)) on_failure(asio::error::connection_aborted);
  };
  poetry::connect_each(io, host, port, timeout, std::move(start));
}

}  // namespace proto
