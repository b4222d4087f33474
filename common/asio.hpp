// Include Boost.Asio through this header, never <boost/asio.hpp> directly.
//
// Boost 1.74's boost/asio/awaitable.hpp calls std::exchange without including <utility>, so
// with g++ 12 in C++20 mode (where <utility> is no longer pulled in by other headers) the
// plain include fails to compile. Including <utility> first is the whole fix; newer Boost
// releases include it themselves, so this is harmless there.
//
// Boost 1.74 turns on its C++20 coroutine support (co_spawn, use_awaitable, which
// asio_coroutines is built on) only for g++: for clang++ it looks for the Coroutines TS
// (__cpp_coroutines and <experimental/coroutine>), which clang++ 14 with libstdc++ lacks. clang++ 14 does implement C++20
// coroutines (it defines __cpp_impl_coroutine) and libstdc++ has <coroutine>, so where both
// are there we tell Asio so. Newer Boost releases detect this themselves.
#pragma once

#include <utility>

#if defined(__clang__) && defined(__cpp_impl_coroutine) && __has_include(<coroutine>)
#ifndef BOOST_ASIO_HAS_CO_AWAIT
#define BOOST_ASIO_HAS_CO_AWAIT 1
#endif
#ifndef BOOST_ASIO_HAS_STD_COROUTINE
#define BOOST_ASIO_HAS_STD_COROUTINE 1
#endif
#endif

#include <boost/asio.hpp>

#include <cstddef>
#include <new>
#include <vector>

namespace poetry {

// Where an Asio server reads what a client sends, only to throw it away: 64 bytes while the
// client is quiet (most clients send nothing), twice as many each time a read fills it, up to
// 64 KiB: a client that sends a lot costs a read per 64 KiB, not one per 64 bytes.
class discard_buffer {
public:
  boost::asio::mutable_buffer space() { return boost::asio::buffer(bytes_); }
  // After a read of n bytes into space().
  void filled(std::size_t n)
  {
    if (n < bytes_.size() || bytes_.size() >= 65536) return;
    try {
      bytes_.resize(bytes_.size() * 2);
    } catch (const std::bad_alloc&) {
      // Out of memory: the buffer stays as it is, and reading goes on.
    }
  }

private:
  std::vector<char> bytes_ = std::vector<char>(64);
};

}  // namespace poetry

#if defined(BOOST_ASIO_HAS_CO_AWAIT)
namespace poetry {

// The completion token of every co_await in asio_coroutines: the coroutine resumes with the
// operation's result, and its error (if any) in ec, instead of an exception.
inline auto into(boost::system::error_code& ec) { return boost::asio::redirect_error(boost::asio::use_awaitable, ec); }

}  // namespace poetry
#endif
