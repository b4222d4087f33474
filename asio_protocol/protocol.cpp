#include "asio_protocol/protocol.hpp"

#include "common/asio_listener.hpp"
#include "common/asio_resolve.hpp"
#include "common/sockets.hpp"

#include <array>
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <unordered_set>
#include <utility>

namespace proto {

// How long to stop accepting after accept fails for want of descriptors or memory: the
// listening socket stays readable, so trying again at once would spin.
constexpr std::chrono::milliseconds accept_pause{100};

// --- the connections of one io_context -----------------------------------------------------

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

// --- Transport -----------------------------------------------------------------------------

Transport::Transport(tcp::socket socket, std::size_t read_buffer_size)
  : socket_(std::move(socket)),
    peer_(poetry::peer_name(socket_.native_handle())),
    read_buffer_(std::make_unique_for_overwrite<char[]>(read_buffer_size)),
    read_buffer_size_(read_buffer_size)
{
  error_code ignored;
  peername_ = socket_.remote_endpoint(ignored);
  sockname_ = socket_.local_endpoint(ignored);
}

bool Transport::start(tcp::socket socket, std::size_t read_buffer_size, const ProtocolFactory& factory)
{
  std::shared_ptr<Transport> self;
  try {
    self.reset(new Transport(std::move(socket), read_buffer_size));
    self->protocol_ = factory();
  } catch (...) {
    // No Protocol, no connection. (A server's socket is reset-on-close from accept on,
    // common/asio_listener.hpp, so its peer sees a reset.)
    complain(self ? self->peer_ : "a new connection", "the factory failed");
    return false;
  }
  // From here on the Protocol decides: a connection closes gracefully, as in asyncio, unless
  // its Protocol marks it (the poetry servers' do).
  poetry::set_reset_on_close(self->socket_.native_handle(), false);
  connections_of(self->socket_.get_executor()).live.insert(self);
  self->guard([&] { self->protocol_->connection_made(*self); });
  if (!self->ended_) self->do_read();
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

// Reads whatever arrives, for as long as the connection lasts, and hands it to the Protocol.
void Transport::do_read()
{
  socket_.async_read_some(asio::buffer(read_buffer_.get(), read_buffer_size_),
                          [self = shared_from_this()](const error_code& ec, std::size_t n) { self->on_read(ec, n); });
}

void Transport::on_read(const error_code& ec, std::size_t n)
{
  if (ended_) return;  // the connection already ended
  // Paused: keep what was read for resume_reading.
  if (paused_) {
    held_.emplace(ec, n);
    return;
  }
  if (ec == asio::error::eof) {
    read_ended_ = true;
    if (closing_) return;  // no more events after close()
    // The Protocol decides: stay half-open, or close.
    bool keep_open = false;
    guard([&] { keep_open = protocol_->eof_received(); });
    if (ended_) return;
    if (!keep_open) return close();
    if (write_ended_) finish({});  // both directions have ended
    return;
  }
  if (ec) return finish(ec);
  // After close(), what the peer sends is read and dropped. (n is 0 only for a read held while
  // paused that brought nothing: see below.)
  if (n > 0 && !closing_) guard([&] { protocol_->data_received(std::string_view(read_buffer_.get(), n)); });
  if (ended_) return;
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

void Transport::write(std::string_view bytes)
{
  if (is_closing()) return;
  if (eof_asked_) throw std::logic_error("write after write_eof");
  queue(bytes, true);
}

void Transport::write_borrowed(std::string_view bytes)
{
  if (is_closing()) return;
  if (eof_asked_) throw std::logic_error("write after write_eof");
  queue(bytes, false);
}

void Transport::queue(std::string_view bytes, bool copy)
{
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
  if (!writing_) do_write();
}

// Hands the kernel what the queue holds, up to 16 writes in one writev: many small writes
// cost one system call, and a large one goes as far as the kernel takes it. The next write
// starts from the handler, so there is never more than one in flight.
void Transport::do_write()
{
  std::array<asio::const_buffer, 16> buffers;
  for (std::size_t i = 0; i < buffers.size() && i < queue_.size(); ++i) buffers[i] = asio::buffer(queue_[i].bytes);
  writing_ = true;
  socket_.async_write_some(buffers,
                           [self = shared_from_this()](const error_code& ec, std::size_t n) { self->on_write(ec, n); });
}

void Transport::on_write(const error_code& ec, std::size_t n)
{
  // Handed to the kernel, even if the connection has ended since. (This handler runs before
  // connection_lost: finish() posts that after closing the socket, which completes the write.)
  buffered_ -= n;
  if (ended_) return;  // the connection already ended
  if (ec) return finish(ec);
  // Drop what the kernel took: whole writes from the front, then the start of a partial one.
  while (n > 0 && n >= queue_.front().bytes.size()) {
    n -= queue_.front().bytes.size();
    queue_.pop_front();
  }
  if (n > 0) queue_.front().bytes.remove_prefix(n);
  if (!queue_.empty()) return do_write();
  writing_ = false;
  all_written();
}

// The queue is empty: carry on with the close or half-close asked for, or tell the Protocol.
void Transport::all_written()
{
  if (closing_) return finish({});
  if (eof_asked_) return do_shutdown();
  guard([&] { protocol_->buffer_drained(); });
}

void Transport::write_eof()
{
  if (is_closing() || eof_asked_) return;
  eof_asked_ = true;
  if (!writing_) do_shutdown();
}

// The half-close: our side is shut down, and if the peer's side is too, the connection is over.
void Transport::do_shutdown()
{
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  write_ended_ = true;
  if (read_ended_) finish({});
}

void Transport::close()
{
  if (is_closing()) return;
  closing_ = true;
  // Go on reading, to drop what the peer sends until the end.
  if (paused_) resume_reading();
  if (!writing_) finish({});
}

void Transport::abort()
{
  closing_ = true;
  finish({});
}

// Ends the connection once: cancels the timers, closes the socket (so the pending read and
// write complete at once, see ended_, and drop their references to this Transport), and tells
// the Protocol later, on the loop.
void Transport::finish(const error_code& reason)
{
  if (ended_) return;
  ended_ = true;
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

TimerHandle Transport::call_later(std::chrono::nanoseconds delay, std::function<void()> callback)
{
  return call_at(std::chrono::steady_clock::now() + delay, std::move(callback));
}

TimerHandle Transport::call_at(std::chrono::steady_clock::time_point when, std::function<void()> callback)
{
  if (ended_) return {};
  auto s = std::make_shared<TimerHandle::state>(socket_.get_executor());
  s->timer.expires_at(when);
  std::erase_if(timers_, [](const auto& weak) { return weak.expired(); });
  timers_.push_back(s);
  s->timer.async_wait([self = shared_from_this(), s, callback = std::move(callback)](const error_code& ec) {
    if (ec || s->cancelled || self->ended_) return;
    self->guard(callback);
  });
  return TimerHandle(s);
}

// --- Server --------------------------------------------------------------------------------

Server::Server(tcp::acceptor acceptor, ProtocolFactory factory)
  : acceptor_(std::move(acceptor)), pause_(acceptor_.get_executor()), factory_(std::move(factory))
{
}

std::uint16_t Server::port() const { return acceptor_.local_endpoint().port(); }

void Server::close()
{
  error_code ignored;
  acceptor_.close(ignored);
  pause_.cancel();
}

void Server::do_accept()
{
  acceptor_.async_accept(
    [self = shared_from_this()](const error_code& ec, tcp::socket socket) { self->on_accept(ec, std::move(socket)); });
}

// A new connection: a Transport and a Protocol of its own, then the next accept.
void Server::on_accept(const error_code& ec, tcp::socket socket)
{
  if (!acceptor_.is_open()) return;  // closed
  // The client left before we accepted it, or a network error: on to the next at once.
  if (ec && poetry::retry_accept_at_once(ec.value())) return do_accept();
  if (ec) {
    // Anything else (out of descriptors or memory): wait a moment for some to be freed.
    pause_.expires_after(accept_pause);
    pause_.async_wait([self = shared_from_this()](const error_code& pause_ec) {
      if (!pause_ec && self->acceptor_.is_open()) self->do_accept();
    });
    return;
  }
  Transport::start(std::move(socket), server_read_buffer, factory_);
  do_accept();
}

std::shared_ptr<Server> listen(asio::io_context& io, const std::string& host, std::uint16_t port,
                               ProtocolFactory factory)
{
  std::shared_ptr<Server> server(new Server(poetry::open_listener(io, host, port), std::move(factory)));
  server->do_accept();
  return server;
}

// --- connect -------------------------------------------------------------------------------

// One connection attempt: resolve, then connect to each address in turn, each within the
// timeout. Nothing owns it but the handlers of its pending operations.
class Connector : public std::enable_shared_from_this<Connector> {
public:
  Connector(asio::io_context& io, ProtocolFactory factory, std::function<void(const error_code&)> on_failure,
            std::optional<std::chrono::nanoseconds> timeout)
    : resolver_(io),
      socket_(io),
      timer_(io),
      factory_(std::move(factory)),
      on_failure_(std::move(on_failure)),
      timeout_(timeout)
  {
  }

  // Resolves host (the one place that does), then connects.
  void start(const std::string& host, std::uint16_t port)
  {
    start_timer();
    // common/'s resolver runs getaddrinfo on a thread of its own, so neither the loop nor another
    // connection's lookup waits for it.
    resolver_.async_resolve(host, port,
                            [self = shared_from_this()](const error_code& ec, std::vector<tcp::endpoint> endpoints) {
                              self->on_resolve(ec, std::move(endpoints));
                            });
  }

private:
  // The --timeout: no progress for that long, and the current step (resolving, or one address)
  // is given up.
  void start_timer()
  {
    if (!timeout_) return;
    timer_.expires_after(*timeout_);
    timer_.async_wait([self = shared_from_this(), attempt = attempt_](const error_code& ec) {
      if (!ec && attempt == self->attempt_) self->on_timeout();
    });
  }

  void on_resolve(const error_code& ec, std::vector<tcp::endpoint> endpoints)
  {
    if (done_) return;
    if (ec) return fail(ec);
    endpoints_ = std::move(endpoints);
    do_connect(asio::error::host_not_found);
  }

  // Tries the next address; reason is why the previous one failed.
  void do_connect(const error_code& reason)
  {
    error_code ec = reason;
    while (next_ < endpoints_.size()) {
      const tcp::endpoint& to = endpoints_[next_++];
      ++attempt_;
      error_code ignored;
      socket_.close(ignored);
      socket_.open(to.protocol(), ec);
      if (ec) continue;  // e.g. no IPv6 here: on to the next
      start_timer();
      socket_.async_connect(to, [self = shared_from_this(), attempt = attempt_](const error_code& connect_ec) {
        if (attempt == self->attempt_) self->on_connect(connect_ec);
      });
      return;
    }
    fail(ec);
  }

  void on_connect(const error_code& ec)
  {
    if (done_) return;
    if (ec) return do_connect(ec);
    done_ = true;
    timer_.cancel();
    // As asyncio's create_connection raises: a factory that throws is a failure to connect.
    if (!Transport::start(std::move(socket_), client_read_buffer, factory_))
      on_failure_(asio::error::connection_aborted);
  }

  void on_timeout()
  {
    if (done_) return;
    if (endpoints_.empty()) return fail(asio::error::timed_out);  // still resolving
    ++attempt_;  // the connect's handler, when it comes, is for an abandoned attempt
    do_connect(asio::error::timed_out);
  }

  void fail(const error_code& ec)
  {
    done_ = true;
    error_code ignored;
    resolver_.cancel();
    socket_.close(ignored);
    timer_.cancel();
    on_failure_(ec);
  }

  poetry::resolver resolver_;
  tcp::socket socket_;
  asio::steady_timer timer_;  // the timeout
  ProtocolFactory factory_;
  std::function<void(const error_code&)> on_failure_;
  std::optional<std::chrono::nanoseconds> timeout_;
  std::vector<tcp::endpoint> endpoints_;
  std::size_t next_ = 0;  // the next address to try
  unsigned attempt_ = 0;  // which attempt the pending handlers belong to
  bool done_ = false;
};

void connect(asio::io_context& io, const std::string& host, std::uint16_t port, ProtocolFactory factory,
             std::function<void(const error_code&)> on_failure, std::optional<std::chrono::nanoseconds> timeout)
{
  std::make_shared<Connector>(io, std::move(factory), std::move(on_failure), timeout)->start(host, port);
}

}  // namespace proto
