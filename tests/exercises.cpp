// The exercises' checks: one test case per exercise of the guide (ex_CHAPTER_N), run by
// scripts/check CHAPTER.N against the student's tree. Not a ctest suite: on the unmodified tree
// every case fails, by design. Each case passes only when the exercise is done; its first
// failed requirement says, in one sentence, what is still missing (scripts/check prints it).
// .ci/exercises proves each one fails on the unmodified tree and passes with
// solutions/CHAPTER.N.patch applied.
//
// Adding a check: a test case here, a patch in solutions/, a line in scripts/check's table.
#define BOOST_TEST_MODULE exercises
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include "common/address.hpp"
#include "common/poem.hpp"
#include "common/sockets.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <regex>
#include <sstream>
#include <thread>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace poetry::test;
using poetry::unique_fd;

namespace {

unique_fd connect_raw(std::uint16_t port)
{
  return poetry::connect_to(poetry::address{"127.0.0.1", port}, std::chrono::seconds(30));
}

// The number of threads of a running process; 0 once it is gone.
int thread_count(pid_t pid) { return static_cast<int>(status_field(pid, "Threads")); }

// The threads a server runs besides those it makes for clients: the blocking server's, idle (its
// one thread: common/ starts none).
int idle_threads(const std::string& poem_file)
{
  server idle("blocking", poem_file, {"-q"});
  return thread_count(idle.process().pid());
}

// Runs the load generator against a server in the background and samples the server's thread
// count until the load ends; returns the load's summary line and the highest count seen.
std::pair<result, int> load_and_count_threads(server& s, const std::string& poem_file, int clients)
{
  child load({loadgen(), "--port", s.address(), "--clients", std::to_string(clients), "--expect", poem_file});
  int peak = 0;
  for (auto until = std::chrono::steady_clock::now() + 120s; std::chrono::steady_clock::now() < until;) {
    peak = std::max(peak, thread_count(s.process().pid()));
    if (load.wait(10ms)) break;
  }
  result r;
  r.status = load.wait(10s).value_or(-1);
  r.out = load.out();
  r.err = load.err();
  return {r, peak};
}

std::string source(const std::string& path) { return read_file(source_dir() + "/" + path); }

// The code of a source file, without its comments and the insides of its string and character
// literals: a check that reads the source looks for what the program does, not for a word in a
// "// TODO: co_spawn" or in a message.
std::string code(const std::string& path)
{
  std::string text = source(path), out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '/' && i + 1 < text.size() && text[i + 1] == '/') {
      i = std::min(text.find('\n', i), text.size()) - 1;  // to the end of the line
    } else if (c == '/' && i + 1 < text.size() && text[i + 1] == '*') {
      std::size_t end = text.find("*/", i + 2);
      i = end == std::string::npos ? text.size() : end + 1;
      out += ' ';
    } else if (c == '"' || (c == '\'' && (i == 0 || !std::isalnum(static_cast<unsigned char>(text[i - 1]))))) {
      // (a ' after a digit is a digit separator, as in 1'000)
      out += c;  // the quotes stay, what is between them goes
      for (++i; i < text.size() && text[i] != c && text[i] != '\n'; ++i)
        if (text[i] == '\\') ++i;
      if (i < text.size()) out += text[i];
    } else {
      out += c;
    }
  }
  return out;
}

// The number after "Got N poem(s) in " in a client's last line.
double summary_seconds(const std::string& err)
{
  std::smatch m;
  if (!std::regex_search(err, m, std::regex("Got \\d+ poems? in ([0-9.]+)s"))) return -1;
  return std::stod(m[1]);
}

}  // namespace

// 1.1 A send timeout: a client that never reads is dropped, and the next client is served.
BOOST_AUTO_TEST_CASE(ex_1_1)
{
  temp_dir dir;
  std::string poem = large_poem(8 << 20);
  server s("blocking", dir.write("poem", poem), {"--delay", "0", "--num-bytes", "65536", "-q"});
  unique_fd stuck = connect_raw(s.port());
  BOOST_TEST_REQUIRE(s.process().wait_for_output("Somebody at", 10s), "the server never accepted the first client");
  auto start = std::chrono::steady_clock::now();
  child second({program("threaded", "client"), "-q", s.address()});
  BOOST_TEST_REQUIRE(s.process().wait_for_output("Lost ", 40s),
                     "a client that never reads still stalls the server after 40 s: no send timeout yet");
  double after = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Each timed-out send that moved a few bytes starts the clock again: about 15 s on Linux.
  BOOST_TEST_MESSAGE("the stuck client was dropped after " << after << "s");
  BOOST_TEST_REQUIRE(after > 4, "the stuck client was dropped after " << after << "s: the timeout should be 5 s");
  BOOST_TEST_REQUIRE(second.wait(20s).value_or(-1) == 0, "the next client failed: " << second.err());
  BOOST_TEST_REQUIRE((second.out() == poem), "the next client did not get the whole poem");
}

// 1.2 Where the client's time goes: a line per poem with the seconds spent inside recv.
BOOST_AUTO_TEST_CASE(ex_1_2)
{
  temp_dir dir;
  server s("blocking", dir.write("poem", large_poem(200)), {"--delay", "0.1", "--num-bytes", "20", "-q"});
  result r = run_client("blocking", {"-q", s.address()}, 20s);
  BOOST_TEST_REQUIRE(r.status == 0, "the client failed: " << r.err);
  std::smatch m;
  BOOST_TEST_REQUIRE(std::regex_search(r.err, m, std::regex("Task 1: ([0-9.]+)s of ([0-9.]+)s in recv")),
                     "the client prints no line 'Task 1: Xs of Ys in recv'");
  double in_recv = std::stod(m[1]), total = std::stod(m[2]);
  // Nine delays of 0.1 s: nearly all of it waiting in recv.
  BOOST_TEST_REQUIRE((in_recv >= 0.8 && in_recv <= total),
                     "the time in recv (" << in_recv << "s of " << total << "s) should be most of the download");
}

// 1.3 Two clients without threads: both get the poem in about the time of one.
BOOST_AUTO_TEST_CASE(ex_1_3)
{
  temp_dir dir;
  std::string poem = large_poem(400);
  server s("blocking", dir.write("poem", poem), {"--delay", "0.1", "--num-bytes", "20", "-q"});
  double ideal = poetry::ideal_seconds(400, 20, 0.1);  // 1.9 s
  child first({program("blocking", "client"), "-q", s.address()});
  child second({program("blocking", "client"), "-q", s.address()});
  BOOST_TEST_REQUIRE(first.wait(20s).value_or(-1) == 0, "the first client failed: " << first.err());
  BOOST_TEST_REQUIRE(second.wait(20s).value_or(-1) == 0, "the second client failed: " << second.err());
  BOOST_TEST_REQUIRE((first.out() == poem && second.out() == poem), "a client did not get the whole poem");
  double slowest = std::max(summary_seconds(first.err()), summary_seconds(second.err()));
  BOOST_TEST_REQUIRE(slowest < ideal * 1.5, "the two clients took " << slowest << "s, not about one poem's " << ideal
                                                                    << "s: they did not overlap");
}

// 2.1 At most 1,000 threads for clients: 1,100 clients at once, the server never has more than
// 1,000 threads besides its idle ones (those the blocking server has), and every client is served.
BOOST_AUTO_TEST_CASE(ex_2_1)
{
  temp_dir dir;
  std::string poem = dir.write("poem", large_poem(400));
  server s("threaded", poem, {"--delay", "0.1", "--num-bytes", "20", "-q"}, room_for(1100));
  int idle = idle_threads(poem);
  auto [r, peak] = load_and_count_threads(s, poem, 1100);
  BOOST_TEST_REQUIRE(r.status == 0, "not every one of 1,100 clients got the whole poem: " << r.err);
  int for_clients = peak - idle;
  // 1,000, and one more: a thread that has just given back its place may not have exited yet.
  BOOST_TEST_REQUIRE(for_clients <= 1001, "the server ran " << for_clients << " threads for 1,100 clients (and " << idle
                                                            << " others); the limit is 1,000");
  BOOST_TEST_REQUIRE(for_clients >= 900,
                     "the server ran only " << for_clients << " threads for clients: it should serve 1,000 at once");
}

// 2.2 A pool of four: eight clients at once, the server has four threads besides its idle ones
// (those the blocking server has), every client gets the poem, and the last four wait a poem.
BOOST_AUTO_TEST_CASE(ex_2_2)
{
  temp_dir dir;
  std::string poem = dir.write("poem", large_poem(200));
  server s("threaded", poem, {"--delay", "0.05", "--num-bytes", "20", "-q"});
  double ideal = poetry::ideal_seconds(200, 20, 0.05);  // 0.45 s
  int idle = idle_threads(poem);
  auto [r, peak] = load_and_count_threads(s, poem, 8);
  BOOST_TEST_REQUIRE(r.status == 0, "not every one of 8 clients got the whole poem: " << r.err);
  int for_clients = peak - idle;
  BOOST_TEST_REQUIRE(for_clients <= 4, "the server ran " << for_clients << " threads for 8 clients (and " << idle
                                                         << " others); a pool of four makes 4");
  BOOST_TEST_REQUIRE(for_clients == 4, "the server ran only " << for_clients << " threads for clients: a pool of four");
  double slowest = load_fields(r.out)["max"];
  BOOST_TEST_REQUIRE(slowest > ideal * 1.5,
                     "the slowest of 8 clients took " << slowest << "s, not about two poems (" << ideal << "s each)");
}

// 2.3 A shared count of poems sent, without a data race: "Poems sent: N" on stderr, and
// ThreadSanitizer (scripts/check builds this one with it) reports nothing.
BOOST_AUTO_TEST_CASE(ex_2_3)
{
  temp_dir dir;
  server s("threaded", dir.write("poem", large_poem(100)), {"--delay", "0.05", "--num-bytes", "20", "-q"});
  std::vector<std::unique_ptr<child>> clients;
  for (int i = 0; i < 8; ++i)
    clients.push_back(
      std::make_unique<child>(std::vector<std::string>{program("blocking", "client"), "-q", s.address()}));
  for (auto& c : clients) BOOST_TEST_REQUIRE(c->wait(30s).value_or(-1) == 0, "a client failed: " << c->err());
  BOOST_TEST_REQUIRE(s.process().wait_for_output("Poems sent: 8", 10s, true),
                     "the server never printed 'Poems sent: 8' on stderr after 8 poems");
  std::string err = s.process().err();
  auto report = err.find("WARNING: ThreadSanitizer");
  BOOST_TEST_REQUIRE(report == std::string::npos,
                     "ThreadSanitizer reports: " << err.substr(std::min(report, err.size())));
  BOOST_TEST_REQUIRE(thread_sanitizer_build, "this check needs the ThreadSanitizer build (scripts/check makes it)");
}

// 3.1 The selector on poll(2): more clients than an fd_set holds, all served at once.
BOOST_AUTO_TEST_CASE(ex_3_1)
{
  temp_dir dir;
  std::string poem = dir.write("poem", large_poem(800));
  server s("select", poem, {"--delay", "0.1", "--num-bytes", "20", "-q"}, room_for(1100));
  double ideal = poetry::ideal_seconds(800, 20, 0.1);  // 3.9 s
  result r = run({loadgen(), "--port", s.address(), "--clients", "1100", "--expect", poem}, 120s);
  BOOST_TEST_REQUIRE(r.status == 0, "not every one of 1,100 clients got the whole poem: " << r.err);
  double slowest = load_fields(r.out)["max"];
  BOOST_TEST_REQUIRE(slowest < ideal * 1.5, "1,100 clients at once: the slowest took "
                                              << slowest << "s, about two poems, so some waited for a free "
                                              << "descriptor below FD_SETSIZE (one poem takes " << ideal << "s)");
}

// 3.2 The cost of a round: at shutdown the server prints "Rounds: N, visited per round: X, ready
// per round: Y" on stderr; with 200 clients, it visits nearly all of them each round and few are
// ready or due. The clients arrive spread over one delay, as clients do that come one by one: 200
// that arrive together have their chunks due together, and then most rounds find them all due.
BOOST_AUTO_TEST_CASE(ex_3_2)
{
  temp_dir dir;
  std::string poem = dir.write("poem", large_poem(400));
  server s("select", poem, {"--delay", "0.1", "--num-bytes", "20", "-q"}, room_for(200));
  result r = run({loadgen(), "--port", s.address(), "--clients", "200", "--spread", "0.1", "--expect", poem}, 60s);
  BOOST_TEST_REQUIRE(r.status == 0, "not every one of 200 clients got the whole poem: " << r.err);
  s.process().signal(SIGTERM);
  BOOST_TEST_REQUIRE(s.process().wait(10s).value_or(-1) == 0, "the server did not end with status 0 on SIGTERM");
  std::smatch m;
  std::string err = s.process().err();
  BOOST_TEST_REQUIRE(
    std::regex_search(err, m, std::regex("Rounds: (\\d+), visited per round: ([0-9.]+), ready per round: ([0-9.]+)")),
    "at shutdown the server prints no line 'Rounds: N, visited per round: X, ready per round: Y'");
  double visited = std::stod(m[2]), ready = std::stod(m[3]);
  BOOST_TEST_REQUIRE(visited > 100, "with 200 clients a round visits " << visited << " connections: count every one");
  BOOST_TEST_REQUIRE(ready < visited / 4, "ready or due per round (" << ready << ") should be a small part of the "
                                                                     << visited << " visited");
}

namespace {

// How many descriptors a process's epoll instances watch: the tfd: lines of /proc/PID/fdinfo/FD
// for each FD that is anon_inode:[eventpoll] (the largest list, if it has several). -1 if it has no
// epoll instance (or has gone).
int epoll_watches(pid_t pid)
{
  std::string proc = "/proc/" + std::to_string(pid);
  int most = -1;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(proc + "/fd", ec)) {
    if (std::filesystem::read_symlink(entry.path(), ec) != "anon_inode:[eventpoll]") continue;
    std::ifstream info(proc + "/fdinfo/" + entry.path().filename().string());
    int watched = 0;
    for (std::string line; std::getline(info, line);)
      if (line.rfind("tfd:", 0) == 0) ++watched;
    most = std::max(most, watched);
  }
  return most;
}

}  // namespace

// 3.3 The select server on epoll: while 1,100 clients are connected (more than an fd_set holds),
// its epoll instance watches each of them, and every one gets the poem in about the time of one.
BOOST_AUTO_TEST_CASE(ex_3_3)
{
  temp_dir dir;
  std::string poem = dir.write("poem", large_poem(800));
  server s("select", poem, {"--delay", "0.1", "--num-bytes", "20", "-q"}, room_for(1100));
  double ideal = poetry::ideal_seconds(800, 20, 0.1);  // 3.9 s
  child load({loadgen(), "--port", s.address(), "--clients", "1100", "--expect", poem});
  // Sampled until the load ends: the most descriptors epoll watched at once (all 1,100 clients
  // are connected for most of a poem), or -1 if the server never had an epoll instance.
  int most = -1;
  for (auto until = std::chrono::steady_clock::now() + 120s; std::chrono::steady_clock::now() < until;) {
    if (most < 1100) most = std::max(most, epoll_watches(s.process().pid()));
    if (load.wait(50ms)) break;
  }
  int status = load.wait(10s).value_or(-1);
  BOOST_TEST_MESSAGE("epoll watched at most " << most << " descriptors at once");
  BOOST_TEST_REQUIRE(most >= 0,
                     "the select server has no epoll instance (no anon_inode:[eventpoll] in /proc/PID/fd): "
                     "it still waits with select");
  BOOST_TEST_REQUIRE(most >= 1000, "with 1,100 clients connected the server's epoll watched at most "
                                     << most << " descriptors: add each client with epoll_ctl(EPOLL_CTL_ADD)");
  BOOST_TEST_REQUIRE(status == 0, "not every one of 1,100 clients got the whole poem: " << load.err());
  double slowest = load_fields(load.out())["max"];
  BOOST_TEST_REQUIRE(slowest < ideal * 1.5, "1,100 clients at once: the slowest took "
                                              << slowest << "s, about two poems, so some waited for a free "
                                              << "descriptor below FD_SETSIZE (one poem takes " << ideal << "s)");
}

// 4.1 The session as a coroutine, started with co_spawn: its loop co_awaits async_write (not a
// coroutine that only starts the old chain of handlers, nor a blocking write); a client that
// connects while another waits for its next chunk is served at once (nothing in the coroutine
// blocks the loop: a sleep, a blocking wait); then a thousand clients at once, every byte, in
// about the time of one.
BOOST_AUTO_TEST_CASE(ex_4_1)
{
  std::string server_code = code("asio_callbacks/server.cpp");
  BOOST_TEST_REQUIRE(server_code.find("co_spawn") != std::string::npos,
                     "asio_callbacks/server.cpp starts no coroutine yet (no co_spawn)");
  BOOST_TEST_REQUIRE(std::regex_search(server_code, std::regex("co_await[^;]*\\basync_write")),
                     "asio_callbacks/server.cpp starts a coroutine, but no coroutine co_awaits an async_write: "
                       << "the poem still goes out through handlers (or a blocking write); send_poem's loop "
                       << "should co_await asio::async_write");
  temp_dir dir;
  {
    // A client that connects while another's coroutine waits for its next chunk gets its first
    // chunk at once: a wait that blocks the loop (a sleep, the timer's blocking wait()) holds it up.
    std::string poem = large_poem(60);
    server s("asio_callbacks", dir.write("short", poem), {"--delay", "0.5", "--num-bytes", "20", "-q"});
    unique_fd first = connect_raw(s.port());
    std::array<char, 20> chunk;
    BOOST_TEST_REQUIRE(::recv(first.get(), chunk.data(), chunk.size(), MSG_WAITALL) == 20,
                       "a client got no first chunk in 30 s");
    pollfd next{first.get(), POLLIN, 0};
    BOOST_TEST_REQUIRE(::poll(&next, 1, 100) == 0, "with --delay 0.5 a client got its second chunk within 0.1 s");
    auto start = std::chrono::steady_clock::now();
    unique_fd second = connect_raw(s.port());
    BOOST_TEST_REQUIRE(::recv(second.get(), chunk.data(), 1, 0) == 1, "a second client got no first chunk in 30 s");
    double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    BOOST_TEST_REQUIRE(waited < 0.25, "a client that connected while another one's coroutine waited 0.5 s for its "
                                        << "next chunk got its own first chunk only after " << waited
                                        << "s: that wait blocks the loop (co_await the timer's async_wait)");
  }
  std::string poem = dir.write("poem", large_poem(400));
  server s("asio_callbacks", poem, {"--delay", "0.1", "--num-bytes", "20", "-q"}, room_for(1000));
  double ideal = poetry::ideal_seconds(400, 20, 0.1);  // 1.9 s
  result r = run({loadgen(), "--port", s.address(), "--clients", "1000", "--expect", poem}, 120s);
  BOOST_TEST_REQUIRE(r.status == 0, "not every one of 1,000 clients got the whole poem: " << r.err);
  double slowest = load_fields(r.out)["max"];
  BOOST_TEST_REQUIRE(slowest < ideal * 2,
                     "1,000 clients at once: the slowest took " << slowest << "s, one poem takes " << ideal << "s");
}

namespace {

// Text on one line: each line break, with the indentation after it, becomes " | ".
std::string one_line(const std::string& text)
{
  std::string line;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\n') {
      line += text[i];
      continue;
    }
    while (i + 1 < text.size() && (text[i + 1] == ' ' || text[i + 1] == '\n')) ++i;
    if (i + 1 < text.size()) line += " | ";
  }
  return line;
}

// The first of ThreadSanitizer's reports in a program's stderr, whole: from its WARNING line to
// its SUMMARY line (the stacks of both accesses, and where each thread was made), and how many
// more followed; on one line, " | " between its lines, since scripts/check shows the first line
// of a failure. Empty if there is none.
std::string first_race_report(const std::string& err)
{
  auto start = err.find("WARNING: ThreadSanitizer");
  if (start == std::string::npos) return "";
  auto summary = err.find("SUMMARY: ThreadSanitizer", start);
  auto end = summary == std::string::npos ? err.size() : std::min(err.find('\n', summary), err.size());
  std::size_t more = occurrences(err.substr(end), "WARNING: ThreadSanitizer");
  return one_line(err.substr(start, end - start)) + (more ? " | (and " + std::to_string(more) + " more reports)" : "");
}

// The text of a call's first argument: what follows "name(" up to the first comma or closing
// parenthesis outside nested brackets.
std::string first_argument(const std::string& text, std::size_t open)
{
  int depth = 0;
  for (std::size_t i = open + 1; i < text.size(); ++i) {
    char c = text[i];
    if (c == '(' || c == '{' || c == '[') ++depth;
    if (depth == 0 && (c == ',' || c == ')' || c == '}')) return text.substr(open + 1, i - open - 1);
    if (c == ')' || c == '}' || c == ']') --depth;
    if (c == ';') break;
  }
  return "";
}

// Whether a server's clients' sockets are made on strands, read from its code: a strand as
// async_accept's first argument (asio::make_strand(...), or a variable made with make_strand or
// declared a strand<...>), or a tcp::socket built on one, then accepted into.
bool accepts_onto_strands(const std::string& text)
{
  std::vector<std::string> strands{"make_strand"};
  std::regex made("\\b(\\w+)\\s*(?:=|\\(|\\{)\\s*(?:boost::)?(?:asio::)?make_strand\\s*\\("),
    declared("\\bstrand\\s*<[^;{}()]*>\\s*(\\w+)");
  for (const auto& re : {made, declared})
    for (std::sregex_iterator m(text.begin(), text.end(), re), end; m != end; ++m) strands.push_back((*m)[1]);
  auto on_strand = [&](const std::string& argument) {
    return std::any_of(strands.begin(), strands.end(), [&](const std::string& name) {
      return std::regex_search(argument, std::regex("\\b" + name + "\\b"));
    });
  };
  // async_accept(strand, ...), and tcp::socket s(strand) / s{strand} / make_shared<tcp::socket>(strand),
  // and a socket member built on one in a constructor's list (socket_(make_strand(io))).
  std::vector<std::string> sockets;
  std::regex named("\\btcp::socket\\s+(\\w+)\\s*[;({=]");
  for (std::sregex_iterator m(text.begin(), text.end(), named), end; m != end; ++m) sockets.push_back((*m)[1]);
  std::string calls = "\\basync_accept\\s*\\(|\\btcp::socket\\s*>\\s*\\(";
  for (const auto& name : sockets) calls += "|\\b" + name + "\\s*[({]";
  std::regex call(calls);
  for (std::sregex_iterator m(text.begin(), text.end(), call), end; m != end; ++m) {
    std::size_t open = static_cast<std::size_t>(m->position() + m->length() - 1);
    if (on_strand(first_argument(text, open))) return true;
  }
  return false;
}

// Exercises 4.2 and 6.2, in the ThreadSanitizer build. First, read from the source, since whether
// ThreadSanitizer sees two handlers of one connection run at once depends on timing: the clients'
// sockets are made on strands. Then 1,000 clients at once (the model's own client, given the
// server's address 1,000 times) each get the whole poem while 50 more reset theirs after the
// first chunk; ThreadSanitizer reports nothing (its report, whole, comes before what the race
// may have broken); two of the server's threads share the work; and nothing is reported up to
// and through the end on SIGTERM.
void check_two_threads(const std::string& model)
{
  BOOST_TEST_REQUIRE(thread_sanitizer_build, "this check needs the ThreadSanitizer build (scripts/check makes it)");
  std::string file = model + "/server.cpp", text = code(file);
  BOOST_TEST_REQUIRE(
    std::regex_search(text, std::regex("make_strand|strand\\s*<")),
    file << " makes no strand (no make_strand): with the loop on two threads, one connection's handlers can "
         << "run on both at once (ThreadSanitizer catches it only when the timing shows it, so the check "
         << "reads the source)");
  BOOST_TEST_REQUIRE(accepts_onto_strands(text),
                     file << " makes a strand, but its clients' sockets are not made on strands: give "
                          << "async_accept a strand as its first argument (async_accept(asio::make_strand(io), "
                          << "...)), or build the socket on one, so that each connection's handlers run on "
                          << "its own strand, one at a time");

  constexpr int clients = 1000, resets = 50;
  temp_dir dir;
  std::string poem = large_poem(400);  // 20 chunks, 0.1 s apart
  server s(model, dir.write("poem", poem), {"--delay", "0.1", "--num-bytes", "20", "-q"}, room_for(clients + resets));
  // Cheap first: the second thread that runs the loop exists (it has 1 thread, or 3 with
  // ThreadSanitizer's own, once it has started one).
  BOOST_TEST_REQUIRE(poll_until([&] { return thread_count(s.process().pid()) >= 2; }, 2s),
                     "the server still runs its loop on one thread: 2 s after it started it has "
                       << thread_count(s.process().pid()) << " (start a second thread that calls io.run() too, "
                       << "before the loop)");
  std::vector<std::string> argv{program(model, "client"), "-q"};
  argv.insert(argv.end(), clients, s.address());
  child load(argv, room_for(clients));
  for (int i = 0; i < resets; ++i) {
    unique_fd reset = connect_raw(s.port());
    char first;
    if (::recv(reset.get(), &first, 1, 0) != 1) break;  // (the server is stuck or gone: see below)
    poetry::set_reset_on_close(reset.get(), true);      // the close that ends this scope sends a reset
  }
  // The load's end, or the first whole report of a race, whichever comes first.
  std::optional<int> status;
  for (auto until = std::chrono::steady_clock::now() + 60s; !status && std::chrono::steady_clock::now() < until;) {
    status = load.wait(100ms);
    if (s.process().err().find("SUMMARY: ThreadSanitizer") != std::string::npos) break;
  }
  std::string race = first_race_report(s.process().err());
  BOOST_TEST_REQUIRE(race.empty(), "ThreadSanitizer reports a data race in the server: " << race);
  BOOST_TEST_REQUIRE(s.process().running(),
                     "the server ended during the load: " << one_line(s.process().err().substr(0, 3000)));
  BOOST_TEST_REQUIRE(status.value_or(-1) == 0,
                     "not every one of 1,000 clients got the whole poem: " << load.err().substr(0, 2000));
  std::string poems;
  for (int i = 0; i < clients; ++i) poems += poem;
  BOOST_TEST_REQUIRE((load.out() == poems), "1,000 clients got " << load.out().size() << " bytes, not 1,000 poems");
  BOOST_TEST_REQUIRE(poll_until([&] { return occurrences(s.process().out(), "Lost ") >= resets; }, 10s),
                     "50 clients reset their connections mid-poem, and the server said 'Lost' for only "
                       << occurrences(s.process().out(), "Lost ") << " of them");

  // Both threads of the loop ran handlers: the second busiest thread used at least a quarter of
  // the busiest's CPU time (with the loop on one thread, no other thread does any of the work).
  std::vector<double> cpu = thread_cpu_seconds(s.process().pid());
  std::ostringstream shares;
  for (double seconds : cpu) shares << " " << seconds;
  BOOST_TEST_MESSAGE(model << " server, CPU seconds per thread:" << shares.str());
  BOOST_TEST_REQUIRE(
    (cpu.size() >= 2 && cpu[1] >= cpu[0] / 4),
    "the server still runs its loop on one thread: of its "
      << cpu.size() << " threads, one did the work for 1,050 clients (CPU seconds per thread:" << shares.str() << ")");

  s.process().signal(SIGTERM);
  status = s.process().wait(20s);
  race = first_race_report(s.process().err());
  BOOST_TEST_REQUIRE(race.empty(), "on SIGTERM, ThreadSanitizer reports a data race in the server: " << race);
  BOOST_TEST_REQUIRE(status.value_or(-1) == 0, "the server did not end with status 0 on SIGTERM: "
                                                 << (status ? "status " + std::to_string(*status) : "still running")
                                                 << ": " << one_line(s.process().err().substr(0, 3000)));
}

}  // namespace

// 4.2 Two threads, and strands: io.run() on two threads, each session on a strand; checked
// under ThreadSanitizer with 1,000 clients at once, and by reading the source for the strand.
BOOST_AUTO_TEST_CASE(ex_4_2) { check_two_threads("asio_callbacks"); }

namespace {

// How the server names the client of a connected socket: its local address, "127.0.0.1:PORT".
std::string peer_name(int fd)
{
  sockaddr_storage local{};
  socklen_t length = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
  return poetry::to_string(reinterpret_cast<const sockaddr*>(&local));
}

// Whether a line is the server's "Lost PEER after ..." or "Lost PEER: ..." for this client.
bool lost_line_of(const std::string& line, const std::string& peer)
{
  return line.rfind("Lost " + peer + " ", 0) == 0 || line.rfind("Lost " + peer + ":", 0) == 0;
}

// The "Lost" lines of a server's output.
std::vector<std::string> lost_lines(const std::string& out)
{
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("Lost ", 0) == 0) lines.push_back(line);
  return lines;
}

// Lines on one line (scripts/check shows the first line of a failure), " / " between them.
std::string joined(const std::vector<std::string>& lines)
{
  std::string all;
  for (const auto& line : lines) all += (all.empty() ? "" : " / ") + line;
  return all.empty() ? "none" : all;
}

// The server's Lost line for this client, or "" if there is none (yet).
std::string lost_line(const std::string& out, const std::string& peer)
{
  for (const auto& line : lost_lines(out))
    if (lost_line_of(line, peer)) return line;
  return "";
}

// A client that reads, but slowly: 16 KiB every 0.2 s (80 kB/s) through a small receive buffer, so
// the server's writes to it never stall for long, yet it needs minutes for a big poem. Reads on a
// thread of its own until the connection ends or the reader is destroyed.
class slow_reader {
public:
  explicit slow_reader(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM, 0))
  {
    int size = 8192;
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_TEST_REQUIRE(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) == 0,
                       "the slow reader could not connect: " << std::strerror(errno));
    peer = peer_name(fd_.get());
    thread_ = std::thread([this] {
      std::vector<char> buffer(16384);
      while (!stop_) {
        ssize_t n = ::recv(fd_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) break;  // the end, or a reset
        std::this_thread::sleep_for(200ms);                                       // the pace of a slow reader
      }
    });
  }
  ~slow_reader()
  {
    stop_ = true;
    thread_.join();
  }
  std::string peer;

private:
  unique_fd fd_;
  std::atomic<bool> stop_ = false;
  std::thread thread_;
};

// Exercises 4.3 and 6.1: a client still unfinished 30 seconds after it connected is dropped, with
// a Lost line that says it timed out, whether it never reads or reads too slowly to finish (an
// inactivity timeout lets that one go on for ever); the clients beside them, at a real delay, get
// their whole poems without a Lost line, also one whose poem spans the moment the others are
// dropped. A 12 MiB poem in chunks of 256 KiB, 0.1 s apart: about 4.7 s for a client that reads.
void check_time_limit(const std::string& model)
{
  temp_dir dir;
  std::string poem = large_poem(12 << 20);
  double ideal = poetry::ideal_seconds(poem.size(), 262144, 0.1);
  server s(model, dir.write("poem", poem), {"--delay", "0.1", "--num-bytes", "262144", "-q"});
  auto start = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  unique_fd stuck = connect_raw(s.port());
  std::string stuck_peer = peer_name(stuck.get());
  slow_reader slow(s.port());
  auto reader = [&] {
    return std::make_unique<child>(std::vector<std::string>{program("blocking", "client"), "-q", s.address()});
  };
  // Two clients that read, beside them: whole poems, and no Lost line (a time limit whose end
  // says "timed out" even when the poem was sent, or that breaks the chunks' timer, shows here).
  std::vector<std::unique_ptr<child>> readers;
  for (int i = 0; i < 2; ++i) readers.push_back(reader());
  // Whole, with a clean end; if not, what the server said of it.
  auto served = [&](child& c, const std::string& who) {
    std::optional<int> status = c.wait(20s);
    BOOST_TEST_REQUIRE((status == 0 && c.out() == poem),
                       who << " got " << c.out().size() << " of " << poem.size() << " bytes"
                           << (status ? (*status == 0 ? "" : " and failed") : " in 20 s")
                           << "; the server's Lost lines: " << joined(lost_lines(s.process().out())));
  };
  for (auto& c : readers) served(*c, "a client that reads, beside one that does not,");
  // Nobody is dropped before 27 s.
  auto early = std::chrono::milliseconds(static_cast<long>((27 - seconds()) * 1000));
  if (s.process().wait_for_output("Lost ", early)) {
    std::string line = lost_lines(s.process().out()).front();
    bool ours = lost_line_of(line, stuck_peer) || lost_line_of(line, slow.peer);
    BOOST_TEST_REQUIRE(ours, "a client that got its whole poem (in about "
                               << ideal << "s) was reported lost: '" << line << "': once the poem is sent, "
                               << "the time limit must end quietly (cancelled, it must not fire)");
    BOOST_TEST_REQUIRE(false, "a client was dropped after " << seconds() << "s, not 30: '" << line << "'");
  }
  // One more that reads, whose poem spans the moment the others are dropped: the limit is its own.
  auto late = reader();
  BOOST_TEST_REQUIRE(poll_until([&] { return !lost_line(s.process().out(), stuck_peer).empty(); }, 12s),
                     "a client that never reads is still connected after " << seconds() << "s: no time limit yet");
  double after = seconds();
  std::string line = lost_line(s.process().out(), stuck_peer);
  BOOST_TEST_REQUIRE(line.find("timed out") != std::string::npos, "the Lost line does not say 'timed out': " << line);
  BOOST_TEST_REQUIRE(after > 28, "the client was dropped after " << after << "s, not 30");
  BOOST_TEST_REQUIRE(poll_until([&] { return !lost_line(s.process().out(), slow.peer).empty(); }, 4s),
                     "a client that reads, too slowly to finish, is still connected "
                       << seconds() << "s after it connected: the limit must count from the start, not "
                       << "from the last write (an inactivity timeout never ends a slow reader)");
  line = lost_line(s.process().out(), slow.peer);
  BOOST_TEST_REQUIRE(line.find("timed out") != std::string::npos, "the Lost line does not say 'timed out': " << line);
  served(*late, "a client that connected at 27 s, while the others were dropped,");
  std::vector<std::string> lost = lost_lines(s.process().out());
  BOOST_TEST_REQUIRE(lost.size() == 2u, "3 clients got their whole poems, 2 were dropped, yet the server said "
                                          << lost.size() << " Lost lines: " << joined(lost));
}

}  // namespace

// 4.3 A time limit per client: a client that never reads is dropped 30 seconds after it
// connected, with a line saying it timed out; the others are served as before.
BOOST_AUTO_TEST_CASE(ex_4_3) { check_time_limit("asio_callbacks"); }

namespace {

// Step 5's echo server (exercise 5.1), started on a free port; its port, read from its first
// line "Echoing on port N.".
struct echo_server {
  echo_server() : process({program("asio_protocol", "echo"), "0"})
  {
    auto line = process.wait_for_line("Echoing on port ", 10s);
    BOOST_TEST_REQUIRE(line.has_value(), "build/asio_protocol/echo 0 printed no 'Echoing on port N.' line: "
                                           << process.out() << process.err());
    port = static_cast<std::uint16_t>(std::stoul(line->substr(16)));
  }
  child process;
  std::uint16_t port = 0;
};

// Sends data to the echo server and half-closes (as nc -N does) while reading what comes back,
// until the server closes.
std::string echo_round_trip(std::uint16_t port, const std::string& data)
{
  unique_fd fd = connect_raw(port);
  std::thread sender([&] {
    std::size_t sent = 0;
    poetry::send_all(fd.get(), data, sent);
    ::shutdown(fd.get(), SHUT_WR);
  });
  std::string got;
  std::array<char, 65536> buffer;
  for (;;) {
    ssize_t n = ::recv(fd.get(), buffer.data(), buffer.size(), 0);  // connect_raw's 30 s receive timeout
    if (n <= 0) break;
    got.append(buffer.data(), static_cast<std::size_t>(n));
  }
  sender.join();
  return got;
}

// A process's resident memory, in KiB.
long resident_kib(pid_t pid) { return status_field(pid, "VmRSS"); }

// Bytes in the same pseudo-random order every run: what a test sends and expects back.
std::string random_bytes(std::size_t size)
{
  std::string bytes(size, '\0');
  std::uint32_t x = 2463534242u;
  for (char& c : bytes) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;  // xorshift
    c = static_cast<char>(x);
  }
  return bytes;
}

}  // namespace

// 5.1 A second Protocol: build/asio_protocol/echo writes back 3 MB exactly, and closes after the
// client's end of stream.
BOOST_AUTO_TEST_CASE(ex_5_1)
{
  BOOST_TEST_REQUIRE(std::filesystem::exists(source_dir() + "/asio_protocol/echo.cpp"),
                     "there is no asio_protocol/echo.cpp yet");
  echo_server echo;
  std::string data = random_bytes(3'000'000);
  std::string got = echo_round_trip(echo.port, data);
  BOOST_TEST_REQUIRE(got.size() == data.size(), "3,000,000 bytes sent, " << got.size() << " came back");
  BOOST_TEST_REQUIRE((got == data), "3,000,000 bytes came back, but not the ones sent");
  BOOST_TEST_REQUIRE(echo.process.running(), "the echo server ended: " << echo.process.err());
}

// 5.2 Write flow control: a client that sends and never reads makes the echo server pause
// reading, so its memory stays small; 50 MB still come back exactly.
BOOST_AUTO_TEST_CASE(ex_5_2)
{
  BOOST_TEST_REQUIRE(std::filesystem::exists(source_dir() + "/asio_protocol/echo.cpp"),
                     "there is no asio_protocol/echo.cpp yet: exercise 1 first");
  std::string layer = code("asio_protocol/protocol.hpp");
  for (const char* name : {"set_write_buffer_limits", "pause_writing", "resume_writing"})
    BOOST_TEST_REQUIRE(layer.find(name) != std::string::npos, "asio_protocol/protocol.hpp has no " << name << " yet");
  echo_server echo;
  long before = resident_kib(echo.process.pid());
  {
    // Send 50 MB without reading, until all is sent or nothing more goes for 2 s (TCP stopped us).
    unique_fd stuck = connect_raw(echo.port);
    std::string zeros(65536, '\0');
    std::size_t sent = 0;
    while (sent < 50'000'000) {
      pollfd p{stuck.get(), POLLOUT, 0};
      if (::poll(&p, 1, 2000) != 1) break;
      ssize_t n = ::send(stuck.get(), zeros.data(), zeros.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN) break;
      if (n > 0) sent += static_cast<std::size_t>(n);
    }
    long grew = resident_kib(echo.process.pid()) - before;
    BOOST_TEST_MESSAGE("sent " << sent << " bytes without reading; the echo server grew by " << grew << " KiB");
    BOOST_TEST_REQUIRE(grew < 8 * 1024, "a client sent " << sent / 1'000'000 << " MB and read nothing: the echo server "
                                                         << "grew by " << grew / 1024
                                                         << " MiB, it queues everything (no flow control yet)");
  }
  std::string data = random_bytes(50'000'000);
  std::string got = echo_round_trip(echo.port, data);
  BOOST_TEST_REQUIRE(got.size() == data.size(), "50,000,000 bytes sent, " << got.size() << " came back");
  BOOST_TEST_REQUIRE((got == data), "50,000,000 bytes came back, but not the ones sent");
}

// 5.3 A count of the clients being served, shared by every connection: "Clients being served:
// N" on stderr at each change; three at once count up to 3 and back to 0.
BOOST_AUTO_TEST_CASE(ex_5_3)
{
  temp_dir dir;
  std::string poem = large_poem(200);
  server s("asio_protocol", dir.write("poem", poem), {"--delay", "0.1", "--num-bytes", "20", "-q"});
  std::vector<std::unique_ptr<child>> clients;
  for (int i = 0; i < 3; ++i)
    clients.push_back(
      std::make_unique<child>(std::vector<std::string>{program("blocking", "client"), "-q", s.address()}));
  for (auto& c : clients) BOOST_TEST_REQUIRE(c->wait(30s).value_or(-1) == 0, "a client failed: " << c->err());
  BOOST_TEST_REQUIRE(s.process().wait_for_output("Clients being served: 3\n", 10s, true),
                     "three clients at once, and the server never printed 'Clients being served: 3' on stderr");
  BOOST_TEST_REQUIRE(s.process().wait_for_output("Clients being served: 0\n", 10s, true),
                     "after the last client the server never printed 'Clients being served: 0' on stderr");
}

// 6.1 A time limit per client, with a coroutine: a client that never reads is dropped 30
// seconds after it connected, with a line saying it timed out.
BOOST_AUTO_TEST_CASE(ex_6_1) { check_time_limit("asio_coroutines"); }

// 6.2 Two threads, and strands: io.run() on two threads, each connection's two coroutines on
// its strand; checked as 4.2.
BOOST_AUTO_TEST_CASE(ex_6_2) { check_two_threads("asio_coroutines"); }

namespace {

// The first line of a source file that starts a read or a write (async_read_until, async_read_some,
// async_write...) with a completion handler rather than co_await: the statement that starts it,
// in its code, has no co_await before it. Empty if every one is co_awaited. (A timer's wait may
// have a handler: a time limit of exercise 1 can be written so.)
std::string handler_call(const std::string& path)
{
  std::string text = code(path), original = source(path);
  std::regex call("\\basync_(?:read|write|receive|send)\\w*\\s*\\(");
  for (std::sregex_iterator m(text.begin(), text.end(), call), end; m != end; ++m) {
    auto at = static_cast<std::size_t>(m->position());
    auto statement = text.find_last_of(";{}", at);
    statement = statement == std::string::npos ? 0 : statement + 1;
    if (text.substr(statement, at - statement).find("co_await") != std::string::npos) continue;
    auto line = text.rfind('\n', at);
    line = line == std::string::npos ? 0 : line + 1;
    std::string shown = text.substr(line, text.find('\n', at) - line);
    shown.erase(0, shown.find_first_not_of(' '));
    // As written: the first line of the source that starts as this one does, up to any string.
    std::string start = shown.substr(0, shown.find_first_of("\"'"));
    auto found = original.find(start);
    if (found == std::string::npos) return shown;
    return original.substr(found, original.find('\n', found) - found);
  }
  return "";
}

}  // namespace

// 6.3 The pull dialogue as a coroutine: with --pull the coroutine server answers each "poems"
// request with one chunk, every operation co_awaited (no completion handler); a client that
// connects and sends nothing gets nothing, and does not hold up the others (a blocking read
// would): step 5's --pull client, beside it, gets every byte; a client that asks for three
// chunks and half-closes gets exactly three, then a reset.
BOOST_AUTO_TEST_CASE(ex_6_3)
{
  temp_dir dir;
  std::string poem = large_poem(400);  // 20 chunks of 20 bytes
  std::string poem_file = dir.write("poem", poem);
  result help = run({program("asio_coroutines", "server"), "--help"}, 10s);
  BOOST_TEST_REQUIRE(help.out.find("--pull") != std::string::npos,
                     "build/asio_coroutines/server takes no --pull option yet (see its --help)");
  std::string handler = handler_call("asio_coroutines/server.cpp");
  BOOST_TEST_REQUIRE(handler.empty(), "asio_coroutines/server.cpp starts a read or a write with a completion "
                                        << "handler, not co_await: '" << handler
                                        << "': write the dialogue as a coroutine "
                                        << "that co_awaits each read and write");
  server s("asio_coroutines", poem_file, {"--pull", "--delay", "0", "--num-bytes", "20"});
  // First a client that sends nothing: it gets nothing, and the server goes on with the others.
  unique_fd silent = connect_raw(s.port());
  child puller({program("asio_protocol", "client"), "--pull", "-q", s.address()});
  std::optional<int> status = puller.wait(8s);
  BOOST_TEST_REQUIRE(status.has_value(), "step 5's --pull client got "
                                           << puller.out().size() << " of 400 bytes in 8 s, while a client "
                                           << "connected before it sent no request: the server waits for that "
                                           << "request without letting the others go on (a blocking read; "
                                           << "co_await async_read_until)");
  BOOST_TEST_REQUIRE(*status == 0, "step 5's --pull client failed: " << puller.err());
  BOOST_TEST_REQUIRE((puller.out() == poem), "step 5's --pull client got " << puller.out().size() << " of 400 bytes");
  char byte;
  ssize_t unasked = ::recv(silent.get(), &byte, 1, MSG_DONTWAIT);
  BOOST_TEST_REQUIRE(unasked < 0, "a client that sent no request got "
                                    << (unasked == 0 ? std::string("an end of stream") : std::string("a chunk"))
                                    << ": with --pull, a chunk goes only in answer to a request");
  // Three requests in one write, then the half-close: three chunks, not one byte more.
  unique_fd asker = connect_raw(s.port());
  BOOST_TEST_REQUIRE(poetry::send_all(asker.get(), "poemspoemspoems") == 0);
  ::shutdown(asker.get(), SHUT_WR);
  std::string got;
  std::array<char, 4096> buffer;
  ssize_t n;
  while ((n = ::recv(asker.get(), buffer.data(), buffer.size(), 0)) > 0)
    got.append(buffer.data(), static_cast<std::size_t>(n));
  int error = n < 0 ? errno : 0;
  BOOST_TEST_REQUIRE(got.size() == 60u,
                     "a client asked for three chunks of 20 bytes and got " << got.size() << " bytes");
  BOOST_TEST_REQUIRE((got == poem.substr(0, 60)), "the three chunks are not the poem's first 60 bytes");
  BOOST_TEST_REQUIRE(error == ECONNRESET, "after three of twenty chunks the connection ended "
                                            << (error == 0 ? std::string("cleanly") : std::strerror(error))
                                            << ", not with a reset: the client could not tell the poem was cut short");
  BOOST_TEST_REQUIRE(s.process().wait_for_output("after 60 of 400 bytes", 10s),
                     "the server did not say it stopped 'after 60 of 400 bytes': " << s.process().out());
}
