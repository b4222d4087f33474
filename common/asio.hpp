// Include Boost.Asio through this header, never <boost/asio.hpp> directly.
//
// Boost 1.74's boost/asio/awaitable.hpp calls std::exchange without including <utility>, so
// with g++ 12 in C++20 mode (where <utility> is no longer pulled in by other headers) the
// plain include fails to compile. Including <utility> first is the whole fix; newer Boost
// releases include it themselves, so this is harmless there.
#pragma once

#include <utility>

#include <boost/asio.hpp>
