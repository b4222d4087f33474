#include "common/asio_listener.hpp"

#include "common/address.hpp"
#include "common/sockets.hpp"

#include <cstring>
#include <stdexcept>
#include <vector>

namespace poetry {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

tcp::acceptor open_listener(asio::io_context& io, const std::string& iface, std::uint16_t port)
{
  error_code ec = make_error_code(boost::system::errc::address_not_available);
  for (const endpoint& e : resolve_listen(iface, port)) {
    tcp::endpoint at;
    std::memcpy(at.data(), e.get(), e.length);
    at.resize(e.length);
    tcp::acceptor acceptor(io);
    acceptor.open(at.protocol(), ec);
    if (ec) continue;
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (at.protocol() == tcp::v6()) acceptor.set_option(asio::ip::v6_only(false), ec);
    // As listen_on: accepted sockets inherit reset-on-close from birth. (Set on the native
    // handle: Asio turns off a linger option set through it when it destroys the socket.)
    set_reset_on_close(acceptor.native_handle(), true);
    acceptor.bind(at, ec);
    if (!ec) acceptor.listen(longest_listen_queue, ec);  // as listen_on
    // The accept loops take every waiting client when the listener is readable: accept says
    // would_block when none is left (not wait), and a client gone before it was accepted is
    // reported, not waited past (Asio's synchronous accept would otherwise block on it).
    if (!ec) acceptor.non_blocking(true, ec);
    if (!ec) acceptor.set_option(asio::socket_base::enable_connection_aborted(true), ec);
    if (!ec) return acceptor;
    // As listen_on: only an address this machine cannot use sends us on to the next one.
    if (!unusable_address(ec.value())) break;
  }
  throw std::runtime_error("cannot listen on " + to_string(address{iface, port}) + ": " + ec.message());
}

std::shared_ptr<accept_loop> accept_loop::start(tcp::acceptor acceptor, handler on_accept)
{
  std::shared_ptr<accept_loop> loop(new accept_loop(std::move(acceptor), std::move(on_accept)));
  loop->do_accept();
  return loop;
}

accept_loop::accept_loop(tcp::acceptor acceptor, handler on_accept)
  : acceptor_(std::move(acceptor)), pause_(acceptor_.get_executor()), on_accept_(std::move(on_accept))
{
}

std::uint16_t accept_loop::port() const { return acceptor_.local_endpoint().port(); }

void accept_loop::close()
{
  error_code ignored;
  acceptor_.close(ignored);
  pause_.cancel();
}

void accept_loop::restart()
{
  error_code ignored;
  acceptor_.cancel(ignored);
  pause_.cancel();
  do_accept();
}

void accept_loop::do_accept()
{
  acceptor_.async_wait(tcp::acceptor::wait_read,
                       [self = shared_from_this()](const error_code& ec) { self->on_readable(ec); });
}

void accept_loop::on_readable(const error_code& ec)
{
  if (!acceptor_.is_open() || ec == asio::error::operation_aborted) return;  // closed, or restarted
  // Every waiting client, without waiting, as the Asio servers do.
  for (;;) {
    error_code accept_ec;
    tcp::endpoint peer;
    tcp::socket socket = acceptor_.accept(peer, accept_ec);
    if (accept_ec == asio::error::would_block) break;
    // The client left before we accepted it, or a network error: on to the next at once.
    if (accept_ec && retry_accept_at_once(accept_ec.value())) continue;
    if (accept_ec) {
      // Anything else (out of descriptors or memory): wait a moment for some to be freed.
      pause_.expires_after(accept_pause);
      pause_.async_wait([self = shared_from_this()](const error_code& pause_ec) {
        if (!pause_ec && self->acceptor_.is_open()) self->do_accept();
      });
      return;
    }
    try {
      on_accept_(std::move(socket), peer);
    } catch (...) {
      // Out of memory for this client: its socket, reset-on-close from accept on, closes with a
      // reset, and the others go on.
    }
    if (!acceptor_.is_open()) return;  // on_accept_ closed it: the others stay unaccepted
  }
  do_accept();
}

}  // namespace poetry
