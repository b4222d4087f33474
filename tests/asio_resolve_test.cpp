// common/asio_resolve.hpp: common/'s resolve() as an Asio operation, for the Asio models. The
// same addresses and words as resolve(), with a plain handler and with co_await; cancel() ends
// the wait at once, and so does destroying the io_context under a lookup still running.
#define BOOST_TEST_MODULE asio_resolve
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include "common/asio_resolve.hpp"

#include <boost/version.hpp>
#if BOOST_VERSION >= 107700
#include <boost/asio/experimental/awaitable_operators.hpp>
#endif

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

namespace asio = boost::asio;
using boost::system::error_code;
using namespace poetry::test;

namespace {

// The words poetry::resolve uses for host, or "" if it resolves.
std::string resolve_reason(const std::string& host)
{
  try {
    poetry::resolve(host, 10000);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_handler_gets_the_addresses_resolve_gives)
{
  asio::io_context io;
  poetry::resolver resolver(io);
  error_code result = asio::error::would_block;
  poetry::resolver::results_type endpoints;
  resolver.async_resolve("127.0.0.1", 10000, [&](error_code ec, poetry::resolver::results_type r) {
    result = ec;
    endpoints = std::move(r);
  });
  io.run();  // returns once the lookup has completed: it kept the loop busy until then
  BOOST_TEST(!result);
  BOOST_TEST_REQUIRE(endpoints.size() == 1u);
  BOOST_TEST(endpoints[0].address().to_string() == "127.0.0.1");
  BOOST_TEST(endpoints[0].port() == 10000);
}

BOOST_AUTO_TEST_CASE(a_name_that_does_not_resolve_fails_in_resolves_words)
{
  asio::io_context io;
  poetry::resolver resolver(io);
  error_code result;
  resolver.async_resolve("no-such-host.invalid", 10000, [&](error_code ec, auto) { result = ec; });
  io.run();
  BOOST_TEST(!!result);
  BOOST_TEST(result.message() == resolve_reason("no-such-host.invalid"));  // not Asio's own words
}

// Boost 1.74 turns Asio's coroutine support on for g++ only (clang++ with libstdc++ needs it
// switched on by hand; the coroutine model does that).
#if defined(BOOST_ASIO_HAS_CO_AWAIT)
BOOST_AUTO_TEST_CASE(a_coroutine_awaits_it)
{
  asio::io_context io;
  poetry::resolver resolver(io);
  std::size_t found = 0;
  std::string failure;
  asio::co_spawn(
    io,
    [&]() -> asio::awaitable<void> {
      auto endpoints = co_await resolver.async_resolve("::1", 10000, asio::use_awaitable);
      found = endpoints.size();
      try {
        co_await resolver.async_resolve("no-such-host.invalid", 10000, asio::use_awaitable);
      } catch (const boost::system::system_error& e) {
        failure = e.code().message();
      }
    },
    asio::detached);
  io.run();
  BOOST_TEST(found == 1u);
  BOOST_TEST(failure == resolve_reason("no-such-host.invalid"));
}
#endif

BOOST_AUTO_TEST_CASE(cancel_ends_the_wait_at_once)
{
  // A lookup of a slow name (tests/faults.cpp, preloaded: four seconds) runs in a child
  // process, this test program itself with the case below; it must end well before.
  if (std::getenv("POETRY_SLOW_NAME") != nullptr) {
    asio::io_context io;
    poetry::resolver resolver(io);
    error_code result;
    resolver.async_resolve("slow.poetry.test", 10000, [&](error_code ec, auto) { result = ec; });
    asio::steady_timer timer(io, std::chrono::milliseconds(100));
    timer.async_wait([&](error_code) { resolver.cancel(); });
    io.run();
    BOOST_TEST(result == asio::error::operation_aborted);
    return;
  }
  auto argv = with_faults({"POETRY_SLOW_NAME=slow.poetry.test"});
  argv.insert(argv.end(), {build_dir() + "/tests/asio_resolve_test", "--run_test=cancel_ends_the_wait_at_once"});
  auto r = run(argv, 30s);
  BOOST_TEST(r.status == 0, r.out << r.err);
  BOOST_TEST(r.seconds < 3.0);  // the lookup itself takes 4 s: nobody waited for it
}

#if BOOST_VERSION >= 107700
// Per-operation cancellation (Boost 1.77 on): `resolve || timer` ends with the timer, and the
// lookup's wait ends with it, as cancel() ends it.
BOOST_AUTO_TEST_CASE(a_timer_raced_against_it_cancels_it)
{
  if (std::getenv("POETRY_SLOW_NAME") != nullptr) {
    using namespace boost::asio::experimental::awaitable_operators;
    asio::io_context io;
    poetry::resolver resolver(io);
    asio::steady_timer timer(io, std::chrono::milliseconds(100));
    bool timer_won = false;
    asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto first = co_await (resolver.async_resolve("slow.poetry.test", 10000, asio::use_awaitable) ||
                               timer.async_wait(asio::use_awaitable));
        timer_won = first.index() == 1;
      },
      asio::detached);
    io.run();
    BOOST_TEST(timer_won);
    return;
  }
  auto argv = with_faults({"POETRY_SLOW_NAME=slow.poetry.test"});
  argv.insert(argv.end(), {build_dir() + "/tests/asio_resolve_test", "--run_test=a_timer_raced_against_it_cancels_it"});
  auto r = run(argv, 30s);
  BOOST_TEST(r.status == 0, r.out << r.err);
  BOOST_TEST(r.seconds < 3.0);  // the lookup itself takes 4 s: the race did not wait for it
}
#endif

BOOST_AUTO_TEST_CASE(an_io_context_may_end_under_a_running_lookup)
{
  if (std::getenv("POETRY_SLOW_NAME") != nullptr) {
    {
      asio::io_context io;
      auto resolver = std::make_unique<poetry::resolver>(io);
      resolver->async_resolve("slow.poetry.test", 10000, [](error_code, auto) {});
      io.poll();
      resolver.reset();
    }  // the io_context is gone; the lookup's thread must deliver nothing to it
    std::this_thread::sleep_for(std::chrono::seconds(5));  // outlive the lookup (not synchronisation)
    return;
  }
  auto argv = with_faults({"POETRY_SLOW_NAME=slow.poetry.test"});
  argv.insert(argv.end(),
              {build_dir() + "/tests/asio_resolve_test", "--run_test=an_io_context_may_end_under_a_running_lookup"});
  auto r = run(argv, 30s);
  BOOST_TEST(r.status == 0, r.out << r.err);  // no crash, no sanitizer report
}

BOOST_AUTO_TEST_CASE(a_thousand_slow_names_take_four_threads)
{
  if (std::getenv("POETRY_SLOW_NAME") != nullptr) {
    asio::io_context io;
    std::vector<std::unique_ptr<poetry::resolver>> resolvers;
    std::size_t aborted = 0;
    for (int i = 0; i < 1000; ++i) {
      resolvers.push_back(std::make_unique<poetry::resolver>(io));
      resolvers.back()->async_resolve("slow.poetry.test", 10000, [&](error_code ec, auto) {
        if (ec == asio::error::operation_aborted) ++aborted;
      });
    }
    // Every lookup is queued or running: this thread and four lookup threads, each in a lookup
    // that takes four seconds.
    BOOST_TEST(status_field(::getpid(), "Threads") == 5);
    for (auto& r : resolvers) r->cancel();
    io.run();
    BOOST_TEST(aborted == 1000u);
    return;
  }
  auto argv = with_faults({"POETRY_SLOW_NAME=slow.poetry.test"});
  argv.insert(argv.end(),
              {build_dir() + "/tests/asio_resolve_test", "--run_test=a_thousand_slow_names_take_four_threads"});
  auto r = run(argv, 30s);
  BOOST_TEST(r.status == 0, r.out << r.err);
  BOOST_TEST(r.seconds < 3.0);  // nobody waited for the lookups
}

BOOST_AUTO_TEST_CASE(a_lookup_without_a_thread_fails_with_the_reason)
{
  if (std::getenv("POETRY_FAIL") != nullptr) {
    ::raise(SIGUSR1);  // tests/faults.cpp: the next thread start fails with EAGAIN
    asio::io_context io;
    poetry::resolver resolver(io);
    error_code result;
    resolver.async_resolve("127.0.0.1", 10000, [&](error_code ec, auto) { result = ec; });
    io.run();
    BOOST_TEST(result == boost::system::errc::resource_unavailable_try_again, result.message());
    // The next lookup gets its thread.
    poetry::resolver::results_type endpoints;
    resolver.async_resolve("127.0.0.1", 10000, [&](error_code ec, poetry::resolver::results_type r) {
      result = ec;
      endpoints = std::move(r);
    });
    io.restart();
    io.run();
    BOOST_TEST(!result);
    BOOST_TEST(endpoints.size() == 1u);
    return;
  }
  auto argv = with_faults({"POETRY_FAIL=thread:0"});
  argv.insert(argv.end(),
              {build_dir() + "/tests/asio_resolve_test", "--run_test=a_lookup_without_a_thread_fails_with_the_reason"});
  auto r = run(argv, 30s);
  BOOST_TEST(r.status == 0, r.out << r.err);
  BOOST_TEST(r.err.find("faults: failed thread") != std::string::npos, r.err);
}
