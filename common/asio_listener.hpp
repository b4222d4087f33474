// The listening socket of the Asio models (asio_callbacks, asio_protocol): what listen_on in
// sockets.hpp is for the models written with system calls.
#pragma once

#include "common/asio.hpp"

#include <cstdint>
#include <string>

namespace poetry {

// A listening socket on iface:port: the first resolved address that binds, with SO_REUSEADDR
// (restartable at once), dual-stack for IPv6 ("::") and reset-on-close inherited by every
// accepted socket, as listen_on. Throws
// std::runtime_error("cannot listen on IFACE:PORT: reason").
boost::asio::ip::tcp::acceptor open_listener(boost::asio::io_context& io, const std::string& iface, std::uint16_t port);

}  // namespace poetry
