// The lab's scripts: scripts/lab starts servers in the background and stops exactly those;
// scripts/peer connects and never reads, so a blocking server stalls behind it.
#define BOOST_TEST_MODULE lab
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include <csignal>
#include <regex>

using namespace poetry::test;

namespace {

// The ports in scripts/lab's "  port N (log ...)" lines.
std::vector<std::string> ports_in(const std::string& out)
{
  std::vector<std::string> ports;
  std::regex line(R"(\n  port (\d+) \(log )");
  for (std::sregex_iterator it(out.begin(), out.end(), line), end; it != end; ++it) ports.push_back((*it)[1]);
  return ports;
}

// Runs scripts/lab with the lab's folder in dir and the programs of this build.
result lab(const temp_dir& dir, std::vector<std::string> args)
{
  std::vector<std::string> argv{"/usr/bin/env", "POETRY_LAB_DIR=" + dir.path(),
                                "/bin/bash",    source_dir() + "/scripts/lab",
                                "--no-build",   "--build-dir",
                                build_dir()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, 30s);
}

// The lab's servers are made to outlive scripts/lab: however a test ends, they are stopped.
struct lab_stopped_at_end {
  const temp_dir& dir;
  ~lab_stopped_at_end()
  {
    try {
      lab(dir, {"--stop"});
    } catch (...) {  // a failure of its own is reported already; a destructor must not throw
    }
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(lab_starts_servers_that_serve_and_stops_only_them)
{
  temp_dir dir;
  lab_stopped_at_end stopper{dir};
  result started = lab(dir, {"threaded", "2", "--", "--delay", "0.01", "-q"});
  BOOST_TEST_INFO_SCOPE(started.out << started.err);
  BOOST_TEST_REQUIRE(started.status == 0);
  auto ports = ports_in(started.out);
  BOOST_TEST_REQUIRE(ports.size() == 2u);
  BOOST_TEST(started.out.find("scripts/lab --stop") != std::string::npos);

  result fetched = run_client("blocking", {"-q", ports[0], ports[1]}, 60s);
  BOOST_TEST(fetched.status == 0, fetched.err);
  BOOST_TEST(lab(dir, {"--list"}).out.find("on port " + ports[1]) != std::string::npos);

  result stopped = lab(dir, {"--stop"});
  BOOST_TEST(stopped.out.find("Stopped 2 server(s).") != std::string::npos, stopped.out);
  // Stopped: nothing listens on those ports any more.
  result refused = run_client("blocking", {"-q", ports[0]}, 10s);
  BOOST_TEST(refused.status == 1);
  BOOST_TEST(lab(dir, {"--list"}).out.find("No lab servers") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_peer_that_never_reads_stalls_the_blocking_server)
{
  temp_dir dir;
  std::string poem = large_poem(16 << 20);
  server s("blocking", dir.write("poem", poem), {"--delay", "0", "--num-bytes", "65536", "-q"});
  child peer({"/bin/bash", source_dir() + "/scripts/peer", s.address()});
  BOOST_TEST_REQUIRE(peer.wait_for_output("never reading", 10s, true));
  BOOST_TEST_REQUIRE(s.process().wait_for_output("Somebody at", 10s));
  child second({program("threaded", "client"), "-q", s.address()});
  BOOST_TEST(!second.wait(2s).has_value());  // stuck behind the peer
  peer.signal(SIGTERM);
  BOOST_TEST(peer.wait(10s).value_or(-1) == 0);
  BOOST_TEST(second.wait(30s).value_or(-1) == 0);
  BOOST_TEST(same_bytes(second.out(), poem));
}
