// End to end: the real programs of every model, started on port 0. Every client against every
// server (and netcat), byte for byte; the timing shape of each model; every bad command line.
#define BOOST_TEST_MODULE end_to_end
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include "common/poem.hpp"

#include <algorithm>

namespace bdata = boost::unit_test::data;
using namespace poetry::test;

namespace {

// How the client's stderr should end: one summary line.
bool reports_success(const result& r, int poems)
{
  return r.err.find("Got " + std::to_string(poems) + (poems == 1 ? " poem in " : " poems in ")) != std::string::npos &&
         r.err.find("failed") == std::string::npos;
}

// The seconds in the summary line "Got N poems in 1.234s".
double summary_seconds(const std::string& err)
{
  auto got = err.rfind("Got ");
  auto in = err.find(" in ", got == std::string::npos ? 0 : got);
  BOOST_TEST_REQUIRE((got != std::string::npos && in != std::string::npos), "no summary line in: " << err);
  return std::stod(err.substr(in + 4));
}

// Only the first model serialises; every later one overlaps.
bool is_serial(const std::string& model) { return model == "blocking"; }

}  // namespace

BOOST_AUTO_TEST_SUITE(matrix)

BOOST_DATA_TEST_CASE(every_client_gets_every_byte, bdata::make(models()) * bdata::make(poem_kinds), server_model, kind)
{
  temp_dir dir;
  std::string poem = kind.make();
  server s(server_model, dir.write("poem", poem), {"--delay", "0.005", "--num-bytes", "20"});
  for (const auto& client_model : models()) {
    BOOST_TEST_CONTEXT("client " << client_model)
    {
      auto r = run_client(client_model, {s.address()});
      BOOST_TEST(r.status == 0);
      BOOST_TEST(same_bytes(r.out, poem));
      BOOST_TEST(reports_success(r, 1), r.err);
    }
  }
  auto nc = run({"/usr/bin/env", "nc", "-d", "127.0.0.1", s.address()});
  BOOST_TEST(nc.status == 0);
  BOOST_TEST(same_bytes(nc.out, poem));
}

BOOST_DATA_TEST_CASE(a_poem_larger_than_the_socket_buffers, bdata::make(models()), server_model)
{
  temp_dir dir;
  std::string poem = large_poem(8 << 20);
  server s(server_model, dir.write("large", poem), {"--delay", "0", "--num-bytes", "65536", "-q"});
  for (const auto& client_model : models()) {
    BOOST_TEST_CONTEXT("client " << client_model)
    {
      auto r = run_client(client_model, {"-q", s.address()});
      BOOST_TEST(r.status == 0);
      BOOST_TEST((r.out == poem), "got " << r.out.size() << " of " << poem.size() << " bytes");
    }
  }
}

BOOST_DATA_TEST_CASE(several_poems_are_written_whole_and_saved_to_files, bdata::make(models()), client_model)
{
  temp_dir dir;
  std::string a = ascii_poem(), b = utf8_poem();
  server first("threaded", dir.write("a", a), {"--delay", "0.005", "--num-bytes", "7"});
  server second("threaded", dir.write("b", b), {"--delay", "0.005", "--num-bytes", "5"});
  auto r = run_client(client_model, {first.address(), second.address()});
  BOOST_TEST(r.status == 0);
  BOOST_TEST((r.out == a + b || r.out == b + a),
             "poems interleaved or missing: got " << r.out.size() << " bytes of " << (a + b).size());
  BOOST_TEST(reports_success(r, 2), r.err);

  auto saved = run_client(client_model, {"-q", "-o", dir.path(), first.address(), second.address(), first.address()});
  BOOST_TEST(saved.status == 0);
  BOOST_TEST(saved.out.empty());
  BOOST_TEST(same_bytes(read_file(dir.path() + "/" + first.address() + ".txt"), a));
  BOOST_TEST(same_bytes(read_file(dir.path() + "/" + second.address() + ".txt"), b));
  BOOST_TEST(same_bytes(read_file(dir.path() + "/" + first.address() + "-3.txt"), a));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(timing_shape)

// A poem of 10 chunks at 0.1 s: one client takes about 0.9 s. Three clients at once take about
// 3 × that from the blocking server and about 1 × from every other one. Bounds are generous:
// this machine is shared. A model whose shape is clearly wrong is given up on early: an
// overlapping one once 2 × the ideal has passed (its check would fail anyway), a serial one
// after twice its 3 × and 2 s more (a server that leaves a client waiting for ever).
BOOST_DATA_TEST_CASE(three_clients_at_once, bdata::make(models()), server_model)
{
  temp_dir dir;
  std::string poem(200, 'x');
  double ideal = poetry::ideal_seconds(poem.size(), 20, 0.1);
  server s(server_model, dir.write("poem", poem), {"--delay", "0.1", "--num-bytes", "20", "-q"});
  auto start = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<child>> clients;
  for (int i = 0; i < 3; ++i)
    clients.push_back(
      std::make_unique<child>(std::vector<std::string>{program("threaded", "client"), "-q", s.address()}));
  double bound = is_serial(server_model) ? 6 * ideal + 2 : 2 * ideal;
  auto deadline = start + std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(bound));
  int waiting = 0;
  for (auto& c : clients)
    if (!c->wait(std::max(
          0ms, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()))))
      ++waiting;
  BOOST_TEST_REQUIRE(waiting == 0, waiting << " of 3 clients still waiting after " << bound << " s ("
                                           << (is_serial(server_model) ? "one after another" : "at once")
                                           << ", they should take about " << (is_serial(server_model) ? 3 : 1) << " x "
                                           << ideal << " s)");
  for (auto& c : clients) {
    BOOST_TEST(c->wait(0ms).value_or(-1) == 0);
    BOOST_TEST(same_bytes(c->out(), poem));
  }
  double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  BOOST_TEST_MESSAGE(server_model << ": three clients took " << total << "s (one ideally " << ideal << "s)");
  if (is_serial(server_model)) {
    BOOST_TEST(total >= 2.5 * ideal);
  } else {
    BOOST_TEST(total < 2.0 * ideal);
  }
}

BOOST_DATA_TEST_CASE(one_client_three_servers, bdata::make(models()), client_model)
{
  temp_dir dir;
  std::string poem(200, 'y');
  double ideal = poetry::ideal_seconds(poem.size(), 20, 0.1);
  auto file = dir.write("poem", poem);
  std::vector<std::string> servers_args{"--delay", "0.1", "--num-bytes", "20", "-q"};
  server a("threaded", file, servers_args), b("threaded", file, servers_args), c("threaded", file, servers_args);
  // Given up on early, as above (run() ends the test case then).
  double bound = is_serial(client_model) ? 6 * ideal + 2 : 2 * ideal + 1;
  auto r = run_client(client_model, {"-q", a.address(), b.address(), c.address()},
                      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::duration<double>(bound)));
  BOOST_TEST(r.status == 0);
  BOOST_TEST(same_bytes(r.out, poem + poem + poem));
  double total = summary_seconds(r.err);
  BOOST_TEST_MESSAGE(client_model << " client: three servers took " << total << "s (one ideally " << ideal << "s)");
  if (is_serial(client_model)) {
    BOOST_TEST(total >= 2.5 * ideal);
  } else {
    BOOST_TEST(total < 2.0 * ideal);
  }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(command_lines)

const std::vector<std::string> bad_server_lines[] = {
  {"--bogus", "POEM"},          {"-p", "65536", "POEM"},   {"-p", "x", "POEM"},
  {"--num-bytes", "0", "POEM"}, {"--delay", "-1", "POEM"}, {},
};
const std::vector<std::string> bad_client_lines[] = {
  {"abc"}, {"host:"}, {"[::1"}, {"1:2:3"}, {"99999"}, {}, {"--bogus", "1"}, {"-t", "x", "1"},
};

// Exit status 2; one line naming the problem, then a hint to use --help; nothing on stdout.
void check_usage_error(const result& r)
{
  BOOST_TEST(r.status == 2);
  BOOST_TEST(r.out.empty());
  BOOST_TEST(std::count(r.err.begin(), r.err.end(), '\n') == 2, r.err);
  BOOST_TEST(r.err.find("--help") != std::string::npos, r.err);
}

BOOST_DATA_TEST_CASE(servers_reject_bad_usage, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = dir.write("poem", "x");
  for (auto words : bad_server_lines) {
    for (auto& w : words)
      if (w == "POEM") w = poem;
    words.insert(words.begin(), program(model, "server"));
    BOOST_TEST_CONTEXT(words.back()) { check_usage_error(run(words, 10s)); }
  }
  auto bad_port = run({program(model, "server"), "-p", "65536", poem}, 10s);
  BOOST_TEST(bad_port.err.find("65536") != std::string::npos);
}

BOOST_DATA_TEST_CASE(clients_reject_bad_usage, bdata::make(models()), model)
{
  for (auto words : bad_client_lines) {
    std::string shown = words.empty() ? "(none)" : words.front();
    words.insert(words.begin(), program(model, "client"));
    BOOST_TEST_CONTEXT(shown)
    {
      auto r = run(words, 10s);
      check_usage_error(r);
      if (words.size() == 2) BOOST_TEST(r.err.find("'" + words[1] + "'") != std::string::npos, r.err);
    }
  }
}

BOOST_DATA_TEST_CASE(help_and_version_exit_zero, bdata::make(models()), model)
{
  for (const char* name : {"server", "client"}) {
    auto help = run({program(model, name), "--help"}, 10s);
    BOOST_TEST(help.status == 0);
    BOOST_TEST(help.out.find("Usage:") != std::string::npos);
    auto version = run({program(model, name), "--version"}, 10s);
    BOOST_TEST(version.status == 0);
    BOOST_TEST(!version.out.empty());
  }
}

BOOST_DATA_TEST_CASE(a_poem_that_cannot_be_read_is_named_before_listening, bdata::make(models()), model)
{
  temp_dir dir;
  for (std::string path : {dir.path() + "/missing.txt", dir.path()}) {
    auto r = run({program(model, "server"), path}, 10s);
    BOOST_TEST(r.status == 1);
    BOOST_TEST(r.out.empty());  // never said "Serving"
    BOOST_TEST(r.err.find(path) != std::string::npos, r.err);
    BOOST_TEST(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
  }
}

BOOST_DATA_TEST_CASE(a_port_in_use_is_a_runtime_failure, bdata::make(models()), model)
{
  temp_dir dir;
  auto poem = dir.write("poem", "x");
  server first("threaded", poem);
  auto r = run({program(model, "server"), "-p", first.address(), poem}, 10s);
  BOOST_TEST(r.status == 1);
  BOOST_TEST(r.err.find("Address already in use") != std::string::npos, r.err);
}

BOOST_DATA_TEST_CASE(a_refused_connection_fails_the_task_not_the_others, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = ascii_poem();
  server live("threaded", dir.write("poem", poem), {"--delay", "0.005"});
  // A port that was just free: nothing listens there.
  std::string dead;
  {
    server gone("threaded", dir.write("x", "x"));
    dead = gone.address();
  }
  auto r = run_client(model, {dead, live.address()});
  BOOST_TEST(r.status == 1);
  BOOST_TEST(same_bytes(r.out, poem));
  BOOST_TEST(
    r.err.find("Task 1: failed to get poetry from 127.0.0.1:" + dead + ": Connection refused") != std::string::npos,
    r.err);
  BOOST_TEST(r.err.find("Got 1 poem in") != std::string::npos, r.err);
  BOOST_TEST(r.err.find("(1 failed)") != std::string::npos, r.err);
}

BOOST_AUTO_TEST_SUITE_END()

// A folder for -o that is not there is reported before any download starts, not after it.
BOOST_DATA_TEST_CASE(a_missing_output_folder_is_reported_before_the_download, bdata::make(models()), model)
{
  temp_dir dir;
  server s("threaded", dir.write("poem", large_poem(200)), {"--delay", "1", "--num-bytes", "20", "-q"});
  std::string missing = dir.path() + "/not-there";
  auto r = run_client(model, {"-q", "-o", missing, s.address()}, 30s);
  BOOST_TEST(r.status == 1);
  BOOST_TEST(r.err.find(missing + ": not a directory") != std::string::npos, r.err);
  BOOST_TEST(r.seconds < 5.0);  // the poem itself takes 9 s
}
