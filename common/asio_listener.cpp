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
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (!ec) return acceptor;
    // As listen_on: only an address this machine cannot use sends us on to the next one.
    if (!unusable_address(ec.value())) break;
  }
  throw std::runtime_error("cannot listen on " + to_string(address{iface, port}) + ": " + ec.message());
}

}  // namespace poetry
