// The listening socket of the Asio models (asio_callbacks, asio_protocol): what listen_on in
// sockets.hpp is for the models written with system calls.
#pragma once

#include "common/asio.hpp"
#include "common/sockets.hpp"  // accept_pause

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace poetry {

// A listening socket on iface:port: the first resolved address that binds, with SO_REUSEADDR
// (restartable at once), dual-stack for IPv6 ("::"), the longest accept queue and reset-on-close
// inherited by every accepted socket, as listen_on; non-blocking, so that accept says
// would_block when nobody is waiting, and a client gone before it was accepted is an error
// (connection_aborted), not a wait. Throws std::runtime_error("cannot listen on IFACE:PORT: reason").
boost::asio::ip::tcp::acceptor open_listener(boost::asio::io_context& io, const std::string& iface, std::uint16_t port);

// The accept loop of an Asio server: each time the listener is readable, accepts every waiting
// client and hands its socket to on_accept, with the peer's address as accept returned it (the
// client may have reset since, and then the socket no longer knows it), for as long as the
// listening socket is open. The errors accept(2) says to retry (the client left first, a
// network hiccup) are retried at once; any other (out of descriptors or memory) pauses
// accepting for accept_pause. Nothing owns it but its pending handlers, and whoever keeps the
// pointer. (The Protocol layer's Server; asio_callbacks and asio_coroutines write the same loop out.)
class accept_loop : public std::enable_shared_from_this<accept_loop> {
public:
  using handler = std::function<void(boost::asio::ip::tcp::socket, const boost::asio::ip::tcp::endpoint& peer)>;
  static std::shared_ptr<accept_loop> start(boost::asio::ip::tcp::acceptor acceptor, handler on_accept);
  std::uint16_t port() const;  // the port bound (port 0 picks a free one)
  void close();                // stops accepting; what was accepted goes on
  // Accepts afresh: after an exception has left io_context::run(), the wait in flight may have
  // gone with it (Asio can fail inside a wait's completion, before the handler runs).
  void restart();

private:
  accept_loop(boost::asio::ip::tcp::acceptor acceptor, handler on_accept);
  void do_accept();
  void on_readable(const boost::system::error_code& ec);

  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer pause_;  // the pause after running out of descriptors
  handler on_accept_;
};

}  // namespace poetry
