// The harness itself: nothing a test starts outlives it. Every child starts a process group of
// its own, which the harness kills whole when the child's object goes, and every live group
// when the test program is interrupted (SIGINT, SIGTERM, SIGHUP: Ctrl-C in scripts/test); a
// program that outlives its bound in run() ends the test case with one line.
#define BOOST_TEST_MODULE harness
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include <csignal>
#include <iostream>
#include <memory>
#include <sstream>

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace bdata = boost::unit_test::data;
using namespace poetry::test;

namespace {

// A process that is not ours to wait for: a pidfd, readable once the process has ended.
struct watched {
  explicit watched(pid_t pid) : fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))) {}
  ~watched()
  {
    if (fd >= 0) ::close(fd);
  }
  bool ends_within(std::chrono::milliseconds bound) const
  {
    pollfd p{fd, POLLIN, 0};
    return fd >= 0 && ::poll(&p, 1, static_cast<int>(bound.count())) == 1;
  }
  int fd;
};

// A script that leaves a process of its own behind: `sleep` in the background (as scripts/peer
// once did), its PID on the first line.
const std::vector<std::string> script_with_a_sleeper{"/bin/bash", "-c", "sleep 3600 & echo $!; wait"};

}  // namespace

// Run only by the test below, which interrupts it (disabled otherwise): starts a server and a
// script with a process of its own, prints their PIDs, and waits for the signal.
BOOST_AUTO_TEST_CASE(starts_processes_and_waits_to_be_interrupted, *boost::unit_test::disabled())
{
  server s(models().front(), source_dir() + "/poems/ecstasy.txt");
  child script(script_with_a_sleeper);
  auto sleeper = script.wait_for_line("", 10s);
  BOOST_TEST_REQUIRE(sleeper.has_value());
  std::cout << "ready " << s.process().pid() << " " << script.pid() << " " << *sleeper << std::endl;
  std::this_thread::sleep_for(60s);  // the signal comes at once; bounded all the same
}

BOOST_DATA_TEST_CASE(an_interrupted_test_leaves_no_process_behind, bdata::make({SIGINT, SIGTERM, SIGHUP}), sig)
{
  // Its own log stays quiet whatever scripts/test asks of this one (BOOST_TEST_LOG_LEVEL): only
  // the "ready" line is wanted from it.
  child test({"/usr/bin/env", "BOOST_TEST_LOG_LEVEL=error", build_dir() + "/tests/harness_test",
              "--run_test=starts_processes_and_waits_to_be_interrupted"});
  auto ready = test.wait_for_line("ready ", 45s);  // a server and a script start: 45 s on a very busy machine
  BOOST_TEST_REQUIRE(ready.has_value(), "the interrupted test never got its processes going: " << test.err());
  std::istringstream pids(ready->substr(6));
  std::vector<std::unique_ptr<watched>> started;
  for (pid_t pid = 0; pids >> pid;) started.push_back(std::make_unique<watched>(pid));
  BOOST_TEST_REQUIRE(started.size() == 3u);
  for (const auto& p : started) BOOST_TEST_REQUIRE(!p->ends_within(0ms), "a process ended before the signal");

  test.signal(sig);
  BOOST_TEST(test.wait(10s).value_or(-1) == 128 + sig);  // it ends of the signal, as without the harness
  const char* names[] = {"the server", "the script", "the script's sleep"};
  for (std::size_t i = 0; i < started.size(); ++i)
    BOOST_TEST(started[i]->ends_within(10s), names[i] << " outlived the interrupted test");
}

// At the end of a test, a child's whole group goes with it: what a script left behind too.
BOOST_AUTO_TEST_CASE(what_a_child_leaves_behind_ends_with_it)
{
  std::unique_ptr<watched> sleeper;
  {
    child script({"/bin/bash", "-c", "sleep 3600 >/dev/null 2>&1 & echo $!"});  // ends at once
    auto pid = script.wait_for_line("", 10s);
    BOOST_TEST_REQUIRE(pid.has_value());
    BOOST_TEST_REQUIRE(script.wait(10s).value_or(-1) == 0);
    sleeper = std::make_unique<watched>(std::stoi(*pid));
    BOOST_TEST_REQUIRE(!sleeper->ends_within(0ms));
  }
  BOOST_TEST(sleeper->ends_within(10s), "the script's sleep outlived the child object");
}

// A program that outlives its bound is killed and ends the test case with a failure naming it.
// (Checked from outside: the failure is the point, so it runs in a test program of its own.)
BOOST_AUTO_TEST_CASE(a_program_that_outlives_its_bound_is_one_failure_line, *boost::unit_test::disabled())
{
  run({"/bin/sleep", "3600"}, 200ms);
  BOOST_ERROR("run() returned after its bound");
}

BOOST_AUTO_TEST_CASE(run_fails_the_test_case_when_its_bound_passes)
{
  auto r = run({build_dir() + "/tests/harness_test", "--run_test=a_program_that_outlives_its_bound_is_one_failure_line",
                "--color_output=no"},
               30s);
  BOOST_TEST(r.status != 0);
  BOOST_TEST(r.out.find("/bin/sleep 3600: still running after 0.2 s, killed") != std::string::npos, r.out);
  BOOST_TEST(r.out.find("returned after its bound") == std::string::npos, r.out);
}
