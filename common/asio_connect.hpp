// Connecting for the Asio models: resolve, then each address in turn, each within a timeout.
#pragma once

#include "common/asio.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace poetry {

// Connects to host:port, as an Asio client does (the Protocol layer's connect; asio_callbacks
// and asio_coroutines write the same steps out): resolves host with common/'s resolver (a
// thread per lookup, resolve()'s messages), then tries each address in turn. An address whose
// socket cannot be opened (no IPv6 here) or that cannot be reached gives way to the next; so
// does one that makes no progress for timeout, when given (while resolving, the lookup fails).
// Calls on_done once, on the loop: with the connected socket, or with the last reason
// (asio::error::timed_out for the timeout) and a closed socket.
void connect_each(boost::asio::io_context& io, const std::string& host, std::uint16_t port,
                  std::optional<std::chrono::nanoseconds> timeout,
                  std::function<void(const boost::system::error_code&, boost::asio::ip::tcp::socket)> on_done);

}  // namespace poetry
