// Runs first (a ctest fixture): every server serves a lone client the whole poem, and every
// client fetches a whole poem, each within seconds. When a model cannot do that (an exercise
// left it broken: exercise 1.3's server waits for a second client), every other test of the
// programs would fail the same way, one bound at a time; ctest runs none of them then, and this
// test's lines say what is wrong.
#define BOOST_TEST_MODULE smoke
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

namespace bdata = boost::unit_test::data;
using namespace poetry::test;

namespace {

// About 0.1 s of poem; the bound is a hundred times that.
const std::vector<std::string> quick{"--delay", "0.005", "--num-bytes", "20", "-q"};
constexpr auto bound = sanitized_build ? 30s : 10s;

// Waits for a client; one line saying what it got when it did not end well in time.
void check_client(child& c, const std::string& poem, const std::string& what)
{
  auto status = c.wait(bound);
  if (!status) {
    c.kill_all();
    c.wait(5s);
  }
  BOOST_TEST_REQUIRE(status.has_value(), what << ": still waiting after "
                                              << std::chrono::duration<double>(bound).count() << " s, with "
                                              << c.out().size() << " of " << poem.size()
                                              << " bytes (a client alone must get the whole poem)");
  BOOST_TEST(*status == 0, what << ": exit status " << *status);
  BOOST_TEST(same_bytes(c.out(), poem), what);
}

}  // namespace

BOOST_DATA_TEST_CASE(a_server_serves_a_lone_client, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = ascii_poem();
  server s(model, dir.write("poem", poem), quick);
  child c({program("threaded", "client"), "-q", s.address()});
  check_client(c, poem, "the " + model + " server");
}

BOOST_DATA_TEST_CASE(a_client_fetches_a_poem, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = ascii_poem();
  server s("threaded", dir.write("poem", poem), quick);
  child c({program(model, "client"), "-q", s.address()});
  check_client(c, poem, "the " + model + " client");
}
