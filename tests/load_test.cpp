// Many clients at once against every model that overlaps them (all but blocking), through the
// race's load generator: a thousand get every byte of every poem in about the time of one
// client, at a small memory cost per client; every connection ends with its client; and with
// no delay, a large poem streams at full speed from the one copy in memory.
#define BOOST_TEST_MODULE load
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include "common/poem.hpp"

#include <filesystem>

namespace bdata = boost::unit_test::data;
using namespace poetry::test;

namespace {

std::vector<std::string> concurrent_models()
{
  auto all = models();
  std::erase(all, "blocking");
  return all;
}

}  // namespace

BOOST_DATA_TEST_CASE(a_thousand_clients_at_once_each_get_every_byte_in_about_the_time_of_one,
                     bdata::make(concurrent_models()), model)
{
  BOOST_TEST_REQUIRE(std::filesystem::exists(loadgen()), "build bench/loadgen first");
  temp_dir dir;
  std::string poem = dir.write("poem", large_poem(400));
  server s(model, poem, {"--delay", "0.1", "--num-bytes", "20", "--quiet"}, room_for(1000));
  double ideal = poetry::ideal_seconds(400, 20, 0.1);  // 1.9 s

  result r = run({loadgen(), "--port", s.address(), "--clients", "1000", "--expect", poem}, 120s);
  BOOST_TEST_INFO(r.out << r.err);
  BOOST_TEST_REQUIRE(r.status == 0);
  auto load = load_fields(r.out);
  BOOST_TEST(load["ok"] == 1000);
  // Every client overlaps with every other (generous for a busy test machine; one after
  // another would take a thousand times as long).
  BOOST_TEST(load["max"] < ideal * 2);
  // Each client costs little: the poem is shared, not copied (a thread's stack is mostly
  // untouched, so even the threaded server stays small at a thousand).
  if (!sanitized_build) BOOST_TEST(peak_kib(s.process().pid()) < 32 * 1024);
  BOOST_TEST_MESSAGE(model << ": 1000 clients, slowest " << load["max"] << "s (one ideally " << ideal << "s), peak "
                           << peak_kib(s.process().pid()) / 1024 << " MiB");
}

// Each client closes after its last byte, so the server's side of it ends too: the server is
// back to the descriptors it had before any client came (a connection kept alive by a stray
// handler, coroutine or thread would keep its socket).
BOOST_DATA_TEST_CASE(every_connection_ends_with_its_client, bdata::make(concurrent_models()), model)
{
  BOOST_TEST_REQUIRE(std::filesystem::exists(loadgen()), "build bench/loadgen first");
  temp_dir dir;
  std::string poem = dir.write("poem", large_poem(400));
  server s(model, poem, {"--delay", "0.01", "--quiet"}, room_for(500));
  std::size_t idle = open_files(s.process().pid());

  result r = run({loadgen(), "--port", s.address(), "--clients", "500", "--expect", poem}, 120s);
  BOOST_TEST_REQUIRE(r.status == 0, r.out << r.err);
  BOOST_TEST(s.process().wait_for_output("Sent 400 bytes", 10s));
  // The last closes may still be on their way.
  BOOST_TEST(poll_until([&] { return open_files(s.process().pid()) <= idle; }, 10s));
  BOOST_TEST(s.process().out().find("Lost") == std::string::npos);
}

BOOST_DATA_TEST_CASE(with_no_delay_a_large_poem_streams_at_full_speed, bdata::make(concurrent_models()), model)
{
  BOOST_TEST_REQUIRE(std::filesystem::exists(loadgen()), "build bench/loadgen first");
  temp_dir dir;
  const long poem_kib = 64 * 1024;
  std::string poem = dir.write("poem", large_poem(poem_kib * 1024));
  server s(model, poem, {"--delay", "0", "--num-bytes", "65536", "--quiet"});

  result r = run({loadgen(), "--port", s.address(), "--clients", "4", "--expect", poem}, 120s);
  BOOST_TEST_REQUIRE(r.status == 0, r.out << r.err);
  // 256 MiB over loopback takes about a second here; the bound is generous for a busy machine.
  BOOST_TEST(load_fields(r.out)["wall"] < 15.0);
  // Every connection writes from the one poem in memory. Loading it may briefly take twice its
  // size (more under a sanitizer); a copy per client would add four more.
  BOOST_TEST(peak_kib(s.process().pid()) < 4 * poem_kib);
}
