#include "asio_protocol/protocol.hpp"

#include "common/asio_listener.hpp"
#include "common/sockets.hpp"

#include <utility>

namespace proto {

using asio::ip::tcp;

// How long to stop accepting after accept fails (out of descriptors, most likely): the
// listening socket stays readable, so trying again at once would spin.
constexpr std::chrono::milliseconds accept_pause{100};

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
}

void Transport::start(std::unique_ptr<Protocol> protocol)
{
  protocol_ = std::move(protocol);
  protocol_->connection_made(*this);
  if (state_ != state::closed) do_read();
}

// Reads whatever arrives, for as long as the connection lasts, and hands it to the Protocol.
void Transport::do_read()
{
  socket_.async_read_some(asio::buffer(read_buffer_.get(), read_buffer_size_),
                          [self = shared_from_this()](const error_code& ec, std::size_t n) { self->on_read(ec, n); });
}

void Transport::on_read(const error_code& ec, std::size_t n)
{
  if (state_ == state::closed) return;  // the connection already ended
  if (ec == asio::error::eof) {
    peer_ended_ = true;
    // After write_eof, the peer's close is the end we were waiting for.
    if (state_ == state::lingering) return finish({});
    // Mid-connection, the Protocol decides: stay half-open, or close.
    if (state_ == state::open && !protocol_->eof_received()) close(asio::error::eof);
    return;  // no more reads: the peer will send nothing more
  }
  if (ec) return finish(ec);
  protocol_->data_received(std::string_view(read_buffer_.get(), n));
  if (state_ != state::closed) do_read();
}

void Transport::write(std::string_view bytes)
{
  if (state_ != state::open || bytes.empty()) return;
  queue_.push_back(bytes);
  if (!writing_) do_write();
}

// Writes the front of the queue. async_write finishes only when all of it is in the kernel,
// and the next write starts from its handler, so there is never more than one write in flight.
void Transport::do_write()
{
  writing_ = true;
  asio::async_write(socket_, asio::buffer(queue_.front()),
                    [self = shared_from_this()](const error_code& ec, std::size_t) { self->on_write(ec); });
}

void Transport::on_write(const error_code& ec)
{
  if (state_ == state::closed) return;  // the connection already ended
  if (ec) return finish(ec);
  queue_.erase(queue_.begin());
  if (!queue_.empty()) return do_write();
  writing_ = false;
  all_written();
}

// The queue is empty: tell the Protocol, or carry on with the close it asked for.
void Transport::all_written()
{
  switch (state_) {
  case state::open: return protocol_->buffer_drained();
  case state::draining: return do_linger();
  case state::closing: return finish(close_reason_);
  default: return;
  }
}

void Transport::write_eof()
{
  if (state_ != state::open) return;
  state_ = state::draining;
  if (!writing_) do_linger();
}

void Transport::close(error_code reason)
{
  if (state_ == state::closed || state_ == state::closing) return;
  // A deliberate close: the peer sees an end of stream, not a reset (abort() is the reset).
  poetry::set_reset_on_close(socket_.native_handle(), false);
  if (state_ == state::lingering) return finish(reason);
  state_ = state::closing;
  close_reason_ = reason;
  if (!writing_) finish(reason);
}

void Transport::abort(error_code reason) { finish(reason); }

// The graceful close: half-close, then keep reading (see on_read) until the peer closes or
// the linger time passes.
void Transport::do_linger()
{
  state_ = state::lingering;
  error_code ignored;
  poetry::set_reset_on_close(socket_.native_handle(), false);  // from now on, close means "done"
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  if (peer_ended_) return finish({});
  call_later(poetry::linger_time, [this] { finish({}); });
}

// Ends the connection once: cancels the timers, closes the socket (so the pending read and
// write complete at once, see state_, and drop their references to this Transport), and
// tells the Protocol.
void Transport::finish(const error_code& reason)
{
  if (state_ == state::closed) return;
  state_ = state::closed;
  for (auto& weak : timers_)
    if (auto s = weak.lock()) TimerHandle(s).cancel();
  timers_.clear();
  queue_.clear();
  error_code ignored;
  socket_.close(ignored);
  protocol_->connection_lost(reason);
}

TimerHandle Transport::call_later(std::chrono::nanoseconds delay, std::function<void()> callback)
{
  return call_at(std::chrono::steady_clock::now() + delay, std::move(callback));
}

TimerHandle Transport::call_at(std::chrono::steady_clock::time_point when, std::function<void()> callback)
{
  if (state_ == state::closed) return {};
  auto s = std::make_shared<TimerHandle::state>(socket_.get_executor());
  s->timer.expires_at(when);
  std::erase_if(timers_, [](const auto& weak) { return weak.expired(); });
  timers_.push_back(s);
  s->timer.async_wait([self = shared_from_this(), s, callback = std::move(callback)](const error_code& ec) {
    if (ec || s->cancelled || self->state_ == state::closed) return;
    callback();
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
  acceptor_.async_accept([self = shared_from_this()](const error_code& ec, tcp::socket socket) {
    self->on_accept(ec, std::move(socket));
  });
}

// A new connection: a Transport and a Protocol of its own, then the next accept.
void Server::on_accept(const error_code& ec, tcp::socket socket)
{
  if (!acceptor_.is_open()) return;  // closed
  if (ec) {
    // Out of descriptors, or the client left before we accepted it: try again shortly.
    pause_.expires_after(accept_pause);
    pause_.async_wait([self = shared_from_this()](const error_code& pause_ec) {
      if (!pause_ec && self->acceptor_.is_open()) self->do_accept();
    });
    return;
  }
  // Until write_eof, closing a server's connection resets it, so a client can tell a stream cut
  // short (a crash, Ctrl-C) from one that ended. (Set on the native handle: Asio turns off a
  // linger option set through it when it destroys the socket, as at shutdown.)
  poetry::set_reset_on_close(socket.native_handle(), true);
  std::make_shared<Transport>(std::move(socket), server_read_buffer)->start(factory_());
  do_accept();
}

std::shared_ptr<Server> listen(asio::io_context& io, const std::string& host, std::uint16_t port,
                               ProtocolFactory factory)
{
  auto server = std::make_shared<Server>(poetry::open_listener(io, host, port), std::move(factory));
  server->do_accept();
  return server;
}

// --- connect -------------------------------------------------------------------------------

namespace {

// One connection attempt: resolve, then connect to each address in turn, within the timeout.
// Nothing owns it but the handlers of its pending operations.
class Connector : public std::enable_shared_from_this<Connector> {
public:
  Connector(asio::io_context& io, ProtocolFactory factory, std::function<void(const error_code&)> on_failure)
    : resolver_(io), socket_(io), timer_(io), factory_(std::move(factory)), on_failure_(std::move(on_failure))
  {
  }

  void start(const std::string& host, std::uint16_t port, std::optional<std::chrono::nanoseconds> timeout)
  {
    if (timeout) {
      timer_.expires_after(*timeout);
      timer_.async_wait([self = shared_from_this()](const error_code& ec) {
        if (!ec && !self->done_) self->fail(asio::error::timed_out);
      });
    }
    // Asio runs getaddrinfo on a helper thread, so the loop never waits for it.
    resolver_.async_resolve(host, std::to_string(port),
                            [self = shared_from_this()](const error_code& ec, tcp::resolver::results_type results) {
                              self->on_resolve(ec, results);
                            });
  }

private:
  void on_resolve(const error_code& ec, const tcp::resolver::results_type& results)
  {
    if (done_) return;
    if (ec) return fail(ec);
    asio::async_connect(socket_, results, [self = shared_from_this()](const error_code& connect_ec, const tcp::endpoint&) {
      self->on_connect(connect_ec);
    });
  }

  void on_connect(const error_code& ec)
  {
    if (done_) return;
    if (ec) return fail(ec);
    done_ = true;
    timer_.cancel();
    std::make_shared<Transport>(std::move(socket_), client_read_buffer)->start(factory_());
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

  tcp::resolver resolver_;
  tcp::socket socket_;
  asio::steady_timer timer_;  // the timeout
  ProtocolFactory factory_;
  std::function<void(const error_code&)> on_failure_;
  bool done_ = false;
};

}  // namespace

void connect(asio::io_context& io, const std::string& host, std::uint16_t port, ProtocolFactory factory,
             std::function<void(const error_code&)> on_failure, std::optional<std::chrono::nanoseconds> timeout)
{
  std::make_shared<Connector>(io, std::move(factory), std::move(on_failure))->start(host, port, timeout);
}

}  // namespace proto
