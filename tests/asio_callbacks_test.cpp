// The asio_callbacks server under load: every session ends with its client, and with --delay 0
// the poem streams at full speed. (A thousand clients at once: tests/load_test.cpp, every model.)
#define BOOST_TEST_MODULE asio_callbacks
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include "common/poem.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

using namespace poetry::test;

namespace {

// How many descriptors a process has open.
std::size_t open_files(pid_t pid)
{
  auto fds = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd");
  return static_cast<std::size_t>(std::distance(fds, std::filesystem::directory_iterator()));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(asio_callbacks_server)

BOOST_AUTO_TEST_CASE(every_session_ends_with_its_client)
{
  BOOST_TEST_REQUIRE(std::filesystem::exists(loadgen()), "build bench/loadgen first");
  temp_dir dir;
  std::string poem = dir.write("poem", large_poem(400));
  server s("asio_callbacks", poem, {"--delay", "0.01", "--quiet"}, room_for(500));
  std::size_t idle = open_files(s.process().pid());

  result r = run({loadgen(), "--port", s.address(), "--clients", "500", "--expect", poem}, 120s);
  BOOST_TEST_REQUIRE(r.status == 0, r.out << r.err);
  BOOST_TEST(s.process().wait_for_output("Sent 400 bytes", 10s));
  // Each client closes after its last byte, so its session closes too: the server is back to
  // the descriptors it had before any client came (a session kept alive by a stray handler
  // would keep its socket). Bounded wait: the last closes may still be on their way.
  auto until = std::chrono::steady_clock::now() + 10s;
  while (open_files(s.process().pid()) > idle && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);  // polling a condition, with a bound
  BOOST_TEST(open_files(s.process().pid()) == idle);
  BOOST_TEST(s.process().out().find("Lost") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(with_no_delay_a_large_poem_streams_at_full_speed)
{
  BOOST_TEST_REQUIRE(std::filesystem::exists(loadgen()), "build bench/loadgen first");
  temp_dir dir;
  const long poem_kib = 64 * 1024;
  std::string poem = dir.write("poem", large_poem(poem_kib * 1024));
  server s("asio_callbacks", poem, {"--delay", "0", "--num-bytes", "65536", "--quiet"});

  result r = run({loadgen(), "--port", s.address(), "--clients", "4", "--expect", poem}, 120s);
  BOOST_TEST_REQUIRE(r.status == 0, r.out << r.err);
  // 256 MiB over loopback takes about a second here; the bound is generous for a busy machine.
  BOOST_TEST(load_fields(r.out)["wall"] < 15.0);
  // Every session writes from the one poem in memory. Loading it may briefly take twice its
  // size (more under a sanitizer); a copy per client would add four more.
  BOOST_TEST(peak_kib(s.process().pid()) < 4 * poem_kib);
}

BOOST_AUTO_TEST_SUITE_END()
