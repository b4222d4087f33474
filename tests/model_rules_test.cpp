// Every model is what it says it is: the threads each server runs (read from /proc/PID/task, as
// a student would), how its status lines wait for stdout, how it sees its signals, and what an
// allocation or a thread start that fails costs it. Run against every model of the build.
#define BOOST_TEST_MODULE model_rules
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include "common/sockets.hpp"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/syscall.h>

namespace bdata = boost::unit_test::data;
using namespace poetry::test;
using poetry::unique_fd;

namespace {

// The threads a server of this model runs while it serves `serving` clients: the model's rule.
long threads_named(const std::string& model, long serving) { return model == "threaded" ? 1 + serving : 1; }

long threads_of(pid_t pid) { return status_field(pid, "Threads"); }

// n connections from this test, which read nothing (the server's chunks wait in their buffers).
std::vector<unique_fd> connect_many(std::uint16_t port, int n)
{
  std::vector<unique_fd> all;
  for (int i = 0; i < n; ++i) all.push_back(poetry::connect_to(poetry::address{"127.0.0.1", port}, 30s));
  return all;
}

// True while some thread of the process is inside write(2) on its stdout (/proc/PID/task/T/syscall
// starts with the call's number and its first argument).
bool writing_stdout(pid_t pid)
{
  std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(tasks, ec)) {
    std::ifstream syscall(task.path() / "syscall");
    std::string number, fd;
    if (syscall >> number >> fd && number == std::to_string(SYS_write) && fd == "0x1") return true;
  }
  return false;
}

// Every line of a server's stdout is one of its status lines, whole; returns the first that is not.
std::optional<std::string> torn_or_glued_line(const std::string& out)
{
  static const std::regex line(R"((Serving .* on port \d+\.|Somebody at [0-9.:\[\]a-f]+ wants poetry!)"
                               R"(|Sending \d+ bytes to [0-9.:\[\]a-f]+|Sent \d+ bytes to [0-9.:\[\]a-f]+)"
                               R"(|Lost [0-9.:\[\]a-f]+ after \d+ of \d+ bytes: [^\n]+|\(\d+ status lines dropped\))"
                               R"(|Shutting down\.))");
  std::istringstream lines(out);
  for (std::string l; std::getline(lines, l);)
    if (!std::regex_match(l, line)) return l;
  if (!out.empty() && out.back() != '\n') return "(no newline at the end)";
  return std::nullopt;
}

// The status lines a server printed, plus those it said it dropped.
std::size_t lines_said(const std::string& out)
{
  std::size_t lines = occurrences(out, "\n");
  static const std::regex dropped(R"(\n\((\d+) status lines dropped\)\n)");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), dropped); it != std::sregex_iterator(); ++it)
    lines += std::stoul((*it)[1]) - 1;
  return lines;
}

std::string last_line(const std::string& out)
{
  if (out.size() < 2) return out;
  auto start = out.rfind('\n', out.size() - 2);
  return out.substr(start == std::string::npos ? 0 : start + 1);
}

double seconds_since(std::chrono::steady_clock::time_point start)
{
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

bool event_loop(const std::string& model) { return model != "blocking" && model != "threaded"; }

}  // namespace

BOOST_DATA_TEST_CASE(each_server_runs_the_threads_its_model_names, bdata::make(models()), model)
{
  temp_dir dir;
  // A long poem: every connection is still being served while the test counts.
  server s(model, dir.write("poem", large_poem(20000)), {"--delay", "0.1", "-q"});
  pid_t pid = s.process().pid();
  BOOST_TEST(threads_of(pid) == threads_named(model, 0), "idle");

  auto clients = connect_many(s.port(), 60);
  // Each concurrent model has said hello to all 60 (blocking: to the first; the rest wait).
  std::size_t greeted = model == "blocking" ? 1 : 60;
  BOOST_TEST_REQUIRE(poll_until([&] { return occurrences(s.process().out(), "Somebody at") >= greeted; }, 20s));
  long serving = model == "blocking" ? 1 : 60;
  BOOST_TEST(poll_until([&] { return threads_of(pid) == threads_named(model, serving); }, 10s),
             "with 60 clients: " << threads_of(pid) << " threads");

  // Clients gone: a finished thread is gone within a second (threaded), no thread is left over.
  clients.clear();
  auto gone = std::chrono::steady_clock::now();
  BOOST_TEST(poll_until([&] { return threads_of(pid) == threads_named(model, 0); }, 10s),
             "after the clients left: " << threads_of(pid) << " threads");
  BOOST_TEST(seconds_since(gone) < 2.0);
  // Its inherited stdout (the test's pipe) keeps the flags it came with.
  BOOST_TEST((file_flags(pid, 1) & O_NONBLOCK) == 0);
}

BOOST_DATA_TEST_CASE(with_stdout_never_read_the_threads_and_the_pipe_stay_as_they_were, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = large_poem(20000);
  // As a paused `server | less`: one-byte chunks make about 700 KB of status lines.
  spawn_options paused;
  paused.reader = stdout_reader::stalls_after_first_line;
  child s({program(model, "server"), "--delay", "0", "--num-bytes", "1", dir.write("poem", poem)}, paused);
  BOOST_TEST_REQUIRE(s.wait_for_line("Serving ", 20s).has_value());
  std::uint16_t port = static_cast<std::uint16_t>(std::stoi(s.out().substr(s.out().rfind("port ") + 5)));
  auto clients = connect_many(port, 3);
  if (event_loop(model)) {
    // The loop never waits for stdout: every poem goes on to its end.
    for (auto& c : clients) {
      std::string got;
      char buffer[65536];
      for (ssize_t n; (n = ::recv(c.get(), buffer, sizeof buffer, 0)) > 0;)
        got.append(buffer, static_cast<std::size_t>(n));
      BOOST_TEST(got.size() == poem.size());
    }
  } else {
    // A blocking write stalls the thread that makes it: that is this model's lesson.
    BOOST_TEST_REQUIRE(poll_until([&] { return writing_stdout(s.pid()); }, 20s));
  }
  BOOST_TEST(threads_of(s.pid()) == threads_named(model, model == "threaded" ? 3 : 1));
  BOOST_TEST((file_flags(s.pid(), 1) & O_NONBLOCK) == 0);
  auto start = std::chrono::steady_clock::now();
  s.signal(SIGTERM);
  auto status = s.wait(10s);
  BOOST_TEST(status.value_or(-1) == 0);
  BOOST_TEST(seconds_since(start) < 2.0 + 0.3);  // two seconds, and slack for a busy machine
}

// A slow terminal, and one the shell left in non-blocking mode: every line whole, none glued to
// another, the dropped ones counted, "Shutting down." last.
BOOST_DATA_TEST_CASE(status_lines_stay_whole_with_a_slow_or_nonblocking_stdout,
                     bdata::make(models()) * bdata::make({false, true}), model, nonblocking)
{
  temp_dir dir;
  std::string poem = large_poem(3000);
  spawn_options slow;
  slow.reader = stdout_reader::reads_slowly;
  slow.stdout_nonblocking = nonblocking;
  child s({program(model, "server"), "--delay", "0", "--num-bytes", "1", dir.write("poem", poem)}, slow);
  BOOST_TEST_REQUIRE(s.wait_for_line("Serving ", 20s).has_value());
  auto r = run_client("threaded", {"-q", std::to_string(std::stoi(s.out().substr(s.out().rfind("port ") + 5)))}, 60s);
  BOOST_TEST(r.status == 0);
  BOOST_TEST((r.out == poem), "got " << r.out.size() << " of " << poem.size() << " bytes");
  auto start = std::chrono::steady_clock::now();
  s.signal(SIGTERM);
  BOOST_TEST(s.wait(10s).value_or(-1) == 0);
  BOOST_TEST(seconds_since(start) < 2.0 + 0.3);
  // The reader takes what the pipe still holds, at its pace.
  BOOST_TEST_REQUIRE(s.wait_for_output("Shutting down.\n", 20s));
  std::string out = s.out();
  auto bad = torn_or_glued_line(out);
  BOOST_TEST(!bad.has_value(), "torn or glued: " << bad.value_or(""));
  BOOST_TEST(last_line(out) == "Shutting down.\n");
  // Serving, Somebody, one Sending per byte, Sent, Shutting down: each printed or counted.
  BOOST_TEST(lines_said(out) == poem.size() + 4);
}

BOOST_DATA_TEST_CASE(from_the_signal_on_no_client_is_accepted, bdata::make(models()), model)
{
  temp_dir dir;
  server s(model, dir.write("poem", large_poem(2000)), {"--delay", "0.05"});
  // A burst of connections, going on while the signal comes.
  std::atomic<bool> stop{false};
  std::vector<unique_fd> clients;
  std::thread burst([&] {
    while (!stop && clients.size() < 400) {
      unique_fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(s.port());
      to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) break;
      clients.push_back(std::move(fd));
    }
  });
  std::size_t some = model == "blocking" ? 1 : 20;
  BOOST_TEST(poll_until([&] { return occurrences(s.process().out(), "Somebody at") >= some; }, 20s));
  s.process().signal(SIGTERM);
  BOOST_TEST(s.process().wait(10s).value_or(-1) == 0);
  stop = true;
  burst.join();
  BOOST_TEST_REQUIRE(s.process().wait_for_output("Shutting down.\n", 10s));
  // Nothing after the last line: no client accepted, no poem started, once the signal was seen.
  BOOST_TEST(last_line(s.process().out()) == "Shutting down.\n");
}

BOOST_DATA_TEST_CASE(a_sigint_ignored_at_start_stays_ignored, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = large_poem(200);
  spawn_options background;  // as `server &` from a script, or under nohup
  background.sigint_ignored = true;
  server s(model, dir.write("poem", poem), {"--delay", "0.05"}, background);
  s.process().signal(SIGINT);
  auto r = run_client("blocking", {"-q", s.address()});
  BOOST_TEST(r.status == 0);
  BOOST_TEST((r.out == poem), "got " << r.out.size() << " of " << poem.size() << " bytes");
  BOOST_TEST(s.process().running());
  s.process().signal(SIGTERM);
  BOOST_TEST(s.process().wait(10s).value_or(-1) == 0);
}

// Out of memory costs one client, never the server. tests/faults.cpp makes one operator new
// throw std::bad_alloc, SKIP allocations after each SIGUSR1; sweeping SKIP puts the failure at
// every step of accepting and serving a client in turn.
BOOST_TEST_DECORATOR(*boost::unit_test::enable_if<!sanitized_build>())  // the preload cannot replace new there
BOOST_DATA_TEST_CASE(an_allocation_that_fails_costs_one_client_at_most,
                     bdata::make(std::vector<std::string>{"blocking", "threaded", "select"}), model)
{
  auto built = models();
  if (std::find(built.begin(), built.end(), model) == built.end()) return;
  temp_dir dir;
  std::string poem = large_poem(100);
  std::string file = dir.write("poem", poem);
  for (int skip : {0, 1, 2, 3, 5, 8, 12, 16, 24, 32, 48}) {
    BOOST_TEST_CONTEXT("an allocation fails after " << skip << " more")
    {
      auto argv = with_faults({"POETRY_FAIL=new:" + std::to_string(skip)});
      for (std::string a : {program(model, "server"), std::string("--delay"), std::string("0"),
                            std::string("--num-bytes"), std::string("10"), file})
        argv.push_back(a);
      child s(argv);
      BOOST_TEST_REQUIRE(s.wait_for_line("Serving ", 20s).has_value());
      std::string port = std::to_string(std::stoi(s.out().substr(s.out().rfind("port ") + 5)));
      s.signal(SIGUSR1);
      // The client it strikes gets its poem or a reset: never a short poem that looks complete.
      for (int i = 0; i < 3; ++i) {
        auto r = run_client("blocking", {"-q", port}, 30s);
        if (r.status == 0) BOOST_TEST((r.out == poem), "got " << r.out.size() << " of " << poem.size() << " bytes");
        else BOOST_TEST(r.err.find("Connection reset by peer") != std::string::npos, r.err);
      }
      BOOST_TEST(s.wait_for_output("faults: failed new", 10s, true), "the fault never struck");
      // A reset cuts a poem short, never follows a whole one (it could destroy what the client
      // has not read yet): a failure after the last byte costs the Sent line only.
      BOOST_TEST(lost_after_whole_poem(s.out(), poem.size()).empty(), s.out());
      // And the server goes on.
      auto after = run_client("blocking", {"-q", port}, 30s);
      BOOST_TEST(after.status == 0);
      BOOST_TEST((after.out == poem), "got " << after.out.size() << " of " << poem.size() << " bytes");
      BOOST_TEST(s.running());
      BOOST_TEST(poll_until([&] { return threads_of(s.pid()) == threads_named(model, 0); }, 5s));
      s.signal(SIGTERM);
      BOOST_TEST(s.wait(10s).value_or(-1) == 0);
    }
  }
}

BOOST_TEST_DECORATOR(*boost::unit_test::enable_if<!sanitized_build>())
BOOST_AUTO_TEST_CASE(a_thread_that_cannot_start_costs_its_client_only)
{
  auto built = models();
  if (std::find(built.begin(), built.end(), "threaded") == built.end()) return;
  temp_dir dir;
  std::string poem = large_poem(100);
  auto argv = with_faults({"POETRY_FAIL=thread:0"});
  argv.push_back(program("threaded", "server"));
  argv.push_back(dir.write("poem", poem));
  child s(argv);
  BOOST_TEST_REQUIRE(s.wait_for_line("Serving ", 20s).has_value());
  std::string port = std::to_string(std::stoi(s.out().substr(s.out().rfind("port ") + 5)));
  s.signal(SIGUSR1);
  auto lost = run_client("blocking", {"-q", port}, 30s);
  BOOST_TEST(lost.status == 1);
  BOOST_TEST(lost.err.find("Connection reset by peer") != std::string::npos, lost.err);
  BOOST_TEST(s.wait_for_output("faults: failed thread", 10s, true));
  BOOST_TEST(s.wait_for_output("after 0 of 100 bytes: Resource temporarily unavailable", 10s), s.out());
  auto served = run_client("blocking", {"-q", port}, 30s);
  BOOST_TEST(served.status == 0);
  BOOST_TEST((served.out == poem));
  s.signal(SIGTERM);
  BOOST_TEST(s.wait(10s).value_or(-1) == 0);
}

// Every server asks for the longest accept queue the kernel allows (net.core.somaxconn), not
// SOMAXCONN's fixed 4,096, so that a machine whose administrator raised the limit for a burst
// gets it. Each server runs in a network namespace of its own (root only: unshare -n) whose
// somaxconn is 8,192; ss, run in that namespace, shows the listening socket's queue length
// (Send-Q of a LISTEN line).
BOOST_DATA_TEST_CASE(the_accept_queue_is_as_long_as_the_kernel_allows, bdata::make(models()), model)
{
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("skipped: a network namespace of its own needs root");
    return;
  }
  temp_dir dir;
  std::string script = "echo 8192 > /proc/sys/net/core/somaxconn && exec \"$0\" -q \"$1\"";
  child s({"/usr/bin/unshare", "-n", "/bin/sh", "-c", script, program(model, "server"), dir.write("poem", "verse")});
  auto serving = s.wait_for_line("Serving ", 20s);
  BOOST_TEST_REQUIRE(serving.has_value(), s.err());
  std::string port = std::to_string(std::stoi(serving->substr(serving->rfind("port ") + 5)));
  auto ss = run({"/usr/bin/nsenter", "-t", std::to_string(s.pid()), "-n", "ss", "-Hlnt", "sport = :" + port});
  BOOST_TEST_REQUIRE(ss.status == 0, ss.err);
  std::istringstream fields(ss.out);
  std::string state, received, queue;
  fields >> state >> received >> queue;
  BOOST_TEST(state == "LISTEN", ss.out);
  BOOST_TEST(queue == "8192", "the accept queue is " << queue << " long, where the kernel allows 8192: " << ss.out);
  s.signal(SIGTERM);
  BOOST_TEST(s.wait(10s).has_value());
}
