#include "common/asio_connect.hpp"

#include "common/asio_resolve.hpp"

#include <memory>
#include <utility>
#include <vector>

namespace poetry {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

// One connection attempt: resolve, then connect to each address in turn, each within the
// timeout. Nothing owns it but the handlers of its pending operations.
class connector : public std::enable_shared_from_this<connector> {
public:
  using handler = std::function<void(const error_code&, tcp::socket)>;
  connector(asio::io_context& io, std::optional<std::chrono::nanoseconds> timeout, handler on_done)
    : resolver_(io), socket_(io), timer_(io), timeout_(timeout), on_done_(std::move(on_done))
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
    on_done_({}, std::move(socket_));
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
    on_done_(ec, std::move(socket_));
  }

  resolver resolver_;
  tcp::socket socket_;
  asio::steady_timer timer_;  // the timeout
  std::optional<std::chrono::nanoseconds> timeout_;
  handler on_done_;
  std::vector<tcp::endpoint> endpoints_;
  std::size_t next_ = 0;  // the next address to try
  unsigned attempt_ = 0;  // which attempt the pending handlers belong to
  bool done_ = false;
};

}  // namespace

void connect_each(asio::io_context& io, const std::string& host, std::uint16_t port,
                  std::optional<std::chrono::nanoseconds> timeout,
                  std::function<void(const error_code&, tcp::socket)> on_done)
{
  std::make_shared<connector>(io, timeout, std::move(on_done))->start(host, port);
}

}  // namespace poetry
