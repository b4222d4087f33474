// Faults every server and client must survive, run against every model of the build:
// vanished peers, peers that never read, a full descriptor table, signals, restarts, IPv6.
#define BOOST_TEST_MODULE reliability
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include "common/sockets.hpp"

#include <csignal>
#include <thread>

#include <netinet/in.h>
#include <sys/socket.h>

namespace bdata = boost::unit_test::data;
using namespace poetry::test;
using poetry::unique_fd;

namespace {

unique_fd connect_raw(const std::string& host, std::uint16_t port)
{
  return poetry::connect_to(poetry::address{host, port}, std::chrono::seconds(30));
}

// Reads until end of stream; returns the bytes, and whether the stream ended cleanly (no reset).
std::pair<std::string, bool> read_to_end(int fd, std::size_t piece = 65536,
                                         std::chrono::microseconds pause = std::chrono::microseconds(0))
{
  std::string all;
  std::vector<char> buffer(piece);
  for (;;) {
    ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return {all, false};
    if (n == 0) return {all, true};
    all.append(buffer.data(), static_cast<std::size_t>(n));
    if (pause.count() > 0) std::this_thread::sleep_for(pause);  // a slow reader, not synchronisation
  }
}

// A client that reads a little, then resets the connection (SO_LINGER 0 makes close send RST).
void vanish_after_some_bytes(std::uint16_t port)
{
  unique_fd fd = connect_raw("127.0.0.1", port);
  char some[8];
  BOOST_TEST(::recv(fd.get(), some, sizeof some, MSG_WAITALL) == 8);
  linger abort{1, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
}

bool is_serial(const std::string& model) { return model == "blocking"; }

}  // namespace

BOOST_AUTO_TEST_SUITE(servers)

BOOST_DATA_TEST_CASE(a_client_that_vanishes_costs_only_itself, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = ascii_poem();
  // The child starts with SIGPIPE at its default disposition: writing to the reset
  // connection would kill a server that does not guard against it.
  server s(model, dir.write("poem", poem), {"--delay", "0.01", "--num-bytes", "8", "-q"});
  vanish_after_some_bytes(s.port());
  BOOST_TEST(s.process().wait_for_output("Lost 127.0.0.1:", 10s));
  auto r = run_client("threaded", {s.address()});
  BOOST_TEST(r.status == 0);
  BOOST_TEST(r.out == poem);
  BOOST_TEST(s.process().running());
}

BOOST_DATA_TEST_CASE(a_client_that_talks_and_reads_slowly_gets_every_byte_and_a_clean_end, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = large_poem(8 << 20);
  server s(model, dir.write("poem", poem), {"--delay", "0", "--num-bytes", "65536", "-q"});
  unique_fd fd = connect_raw("127.0.0.1", s.port());
  std::string chatter(32 * 1024, 'q');
  BOOST_TEST(poetry::send_all(fd.get(), chatter) == 0);
  auto [got, clean] = read_to_end(fd.get(), 256 * 1024, std::chrono::microseconds(200));
  BOOST_TEST(clean);  // end of stream, not "connection reset by peer"
  BOOST_TEST((got == poem), "got " << got.size() << " of " << poem.size() << " bytes");
}

BOOST_DATA_TEST_CASE(a_client_that_never_reads_stalls_only_itself, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = large_poem(16 << 20);
  server s(model, dir.write("poem", poem), {"--delay", "0", "--num-bytes", "1048576", "-q"});
  unique_fd stuck = connect_raw("127.0.0.1", s.port());
  // Wait until the server has started on the stuck client, so it is really stuck behind it.
  BOOST_TEST(s.process().wait_for_output("Somebody at", 10s));
  child second({program("threaded", "client"), "-q", s.address()});
  auto status = second.wait(is_serial(model) ? 2s : 20s);
  if (is_serial(model)) {
    // The lesson of the blocking model: everyone waits behind a client that never reads.
    BOOST_TEST(!status.has_value());
    stuck.reset();
    BOOST_TEST(second.wait(30s).value_or(-1) == 0);
  } else {
    BOOST_TEST(status.value_or(-1) == 0);
  }
  BOOST_TEST((second.out() == poem));
}

BOOST_DATA_TEST_CASE(a_full_descriptor_table_neither_crashes_nor_spins, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = ascii_poem();
  spawn_options few_files;
  few_files.max_files = 32;
  server s(model, dir.write("poem", poem), {"--delay", "0.02", "--num-bytes", "64", "-q"}, few_files);
  auto start = std::chrono::steady_clock::now();
  double cpu_before = cpu_seconds(s.process().pid());
  std::vector<std::unique_ptr<child>> clients;
  for (int i = 0; i < 60; ++i)
    clients.push_back(std::make_unique<child>(std::vector<std::string>{program("blocking", "client"), "-q", s.address()}));
  int served = 0;
  for (auto& c : clients)
    if (c->wait(120s).value_or(-1) == 0 && c->out() == poem) ++served;
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double cpu = cpu_seconds(s.process().pid()) - cpu_before;
  BOOST_TEST_MESSAGE(model << ": 60 clients with 32 descriptors took " << wall << "s, server CPU " << cpu << "s");
  BOOST_TEST(served == 60);
  BOOST_TEST(s.process().running());
  BOOST_TEST(cpu < 0.5 * wall);  // well under one core: it waited, it did not spin
}

// Not under ThreadSanitizer, which delays signals (see harness.hpp); every other build runs it.
BOOST_TEST_DECORATOR(*boost::unit_test::enable_if<!thread_sanitizer_build>())
BOOST_DATA_TEST_CASE(signals_end_the_server_promptly_with_status_zero, bdata::make(models()) * bdata::make({SIGINT, SIGTERM}), model, sig)
{
  temp_dir dir;
  std::string poem = large_poem(4000);
  child s({program(model, "server"), "--delay", "0.2", "--num-bytes", "10", "-q", dir.write("poem", poem)});
  BOOST_TEST_REQUIRE(s.wait_for_line("Serving ", 20s).has_value());
  auto port = s.out().substr(s.out().rfind("port ") + 5);
  child c({program("threaded", "client"), "-q", std::to_string(std::stoi(port))});
  BOOST_TEST_REQUIRE(s.wait_for_output("Somebody at", 10s));
  auto start = std::chrono::steady_clock::now();
  s.signal(sig);
  auto status = s.wait(10s);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  BOOST_TEST(status.value_or(-1) == 0);
  BOOST_TEST(took < 1.0 + 0.2 + 1.0);  // a second plus one delay, and slack for a busy machine
  BOOST_TEST(s.out().find("Shutting down.") != std::string::npos);
  // The client is not left hanging, and it knows its poem was cut short: the server reset
  // the unfinished connection instead of ending it like a complete poem.
  BOOST_TEST(c.wait(20s).value_or(-1) == 1);
  BOOST_TEST(c.err().find("Connection reset by peer") != std::string::npos, c.err());
}

BOOST_DATA_TEST_CASE(a_server_restarts_on_its_port_at_once, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = ascii_poem();
  auto file = dir.write("poem", poem);
  std::string port;
  {
    server first(model, file, {"--delay", "0"});
    port = first.address();
    for (int i = 0; i < 3; ++i) BOOST_TEST(run_client("blocking", {"-q", port}).out == poem);
  }  // the server closed first, so its side of those connections is now in TIME_WAIT
  server again(model, file, {"--delay", "0", "-p", port});
  BOOST_TEST(again.address() == port);
  BOOST_TEST(run_client("blocking", {"-q", port}).out == poem);
}

BOOST_DATA_TEST_CASE(ipv6_and_dual_stack, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = utf8_poem();
  auto file = dir.write("poem", poem);
  server v6(model, file, {"--delay", "0", "--iface", "::1"});
  BOOST_TEST(run_client(model, {"-q", "[::1]:" + v6.address()}).out == poem);
  server dual(model, file, {"--delay", "0", "--iface", "::"});
  BOOST_TEST(run_client(model, {"-q", "[::1]:" + dual.address()}).out == poem);
  BOOST_TEST(run_client(model, {"-q", "127.0.0.1:" + dual.address()}).out == poem);
}

BOOST_DATA_TEST_CASE(one_byte_chunks, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = utf8_poem();
  server s(model, dir.write("poem", poem), {"--delay", "0", "--num-bytes", "1"});
  auto r = run_client(model, {s.address()});
  BOOST_TEST(r.status == 0);
  BOOST_TEST(r.out == poem);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(clients)

BOOST_DATA_TEST_CASE(an_unresolvable_name_fails_its_task_with_a_clear_line, bdata::make(models()), model)
{
  auto r = run_client(model, {"no-such-host.invalid:10000"}, 30s);
  BOOST_TEST(r.status == 1);
  BOOST_TEST(r.err.find("Task 1: failed to get poetry from no-such-host.invalid:10000: ") != std::string::npos, r.err);
  BOOST_TEST(r.err.find("(1 failed)") != std::string::npos, r.err);
}

BOOST_DATA_TEST_CASE(a_silent_server_is_given_up_after_the_timeout, bdata::make(models()), model)
{
  // A listening socket that nobody serves: the kernel accepts the connection, nothing is sent.
  unique_fd silent = poetry::listen_on("127.0.0.1", 0);
  auto port = std::to_string(poetry::local_port(silent.get()));
  auto r = run_client(model, {"-t", "1", port}, 30s);
  BOOST_TEST(r.status == 1);
  BOOST_TEST(r.seconds < 5.0);
  BOOST_TEST(r.seconds >= 0.9);
  BOOST_TEST(r.err.find("Task 1: failed to get poetry from 127.0.0.1:" + port + ": ") != std::string::npos, r.err);
  BOOST_TEST(r.err.find("time") != std::string::npos, r.err);  // says it timed out
}

BOOST_DATA_TEST_CASE(a_server_that_dies_mid_poem_does_not_hang_the_client, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = large_poem(2000);
  child s({program("threaded", "server"), "--delay", "0.05", "--num-bytes", "10", "-q", dir.write("poem", poem)});
  BOOST_TEST_REQUIRE(s.wait_for_line("Serving ", 20s).has_value());
  auto port = std::to_string(std::stoi(s.out().substr(s.out().rfind("port ") + 5)));
  child c({program(model, "client"), port});
  BOOST_TEST_REQUIRE(c.wait_for_output("bytes from", 10s, true));
  s.signal(SIGKILL);
  BOOST_TEST(c.wait(10s).value_or(-1) == 1);
  // The kernel closed the dead server's socket with a reset (it was unfinished), so the client
  // reports a failure after the bytes it got, rather than a short poem as a complete one.
  BOOST_TEST(c.out().size() < poem.size());
  BOOST_TEST(poem.compare(0, c.out().size(), c.out()) == 0);
  BOOST_TEST(c.err().find("failed to get poetry from 127.0.0.1:" + port + ": Connection reset by peer") !=
             std::string::npos, c.err());
  BOOST_TEST(c.err().find("(1 failed)") != std::string::npos, c.err());
}

BOOST_AUTO_TEST_SUITE_END()
