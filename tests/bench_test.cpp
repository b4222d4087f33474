// The race's tools: the load generator checks every byte and reports every failure (and spreads
// its clients over several source addresses), the floor tool measures a plain send, and
// scripts/bench --quick runs the whole race on this build and writes its CSV and plots.
#define BOOST_TEST_MODULE bench
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include "common/sockets.hpp"

#include <algorithm>
#include <regex>
#include <sstream>

namespace bdata = boost::unit_test::data;
using namespace poetry::test;

namespace {

// The value of key=value in loadgen's summary line, or -1 when it is missing.
double summary_value(const std::string& out, const std::string& key)
{
  std::smatch match;
  if (!std::regex_search(out, match, std::regex("(^| )" + key + "=([0-9.]+)"))) return -1;
  return std::stod(match[2]);
}

// A model that serves clients at once (loadgen's own tests need no more than one).
std::string concurrent_model()
{
  for (const auto& model : models())
    if (model != "blocking") return model;
  return models().front();
}

// The lines of the race's report that say what went wrong: a run that was not exact ("no" at
// the end of its row), the reasons under it ("!"), and the summary; not the whole table.
std::string what_went_wrong(const std::string& out)
{
  std::string lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.ends_with(" no") || line.find(" ! ") != std::string::npos ||
        line.find("not byte-exact") != std::string::npos)
      lines += "\n  " + line;
  return lines;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(loadgen_tool)

BOOST_DATA_TEST_CASE(every_client_gets_every_byte, bdata::make(models()), model)
{
  temp_dir dir;
  std::string poem = dir.write("poem.txt", ascii_poem());
  server s(model, poem, {"-q", "--delay", "0.001", "--num-bytes", "50"});
  int clients = model == "blocking" ? 3 : 20;
  auto r = run({loadgen(), "--port", s.address(), "--clients", std::to_string(clients), "--expect", poem, "--csv",
                dir.path() + "/clients.csv"});
  BOOST_TEST(r.status == 0, r.out << r.err);
  BOOST_TEST(summary_value(r.out, "ok") == clients);
  BOOST_TEST(summary_value(r.out, "failed") == 0);
  BOOST_TEST(summary_value(r.out, "bytes") == clients * ascii_poem().size());
  BOOST_TEST(summary_value(r.out, "p50") <= summary_value(r.out, "max"));
  // The per-client file: a header and one line per client, each marked ok.
  std::string csv = read_file(dir.path() + "/clients.csv");
  BOOST_TEST(std::count(csv.begin(), csv.end(), '\n') == clients + 1);
  BOOST_TEST(csv.find(",0,") == std::string::npos, csv);
}

// Many at once (fewer than a default descriptor limit of 1024 allows the server).
BOOST_AUTO_TEST_CASE(five_hundred_clients_at_once)
{
  temp_dir dir;
  std::string poem = dir.write("poem.txt", ascii_poem());
  server s(concurrent_model(), poem, {"-q", "--delay", "0.01", "--num-bytes", "100"});
  auto r = run({loadgen(), "--port", s.address(), "--clients", "500", "--expect", poem});
  BOOST_TEST(r.status == 0, r.out << r.err);
  BOOST_TEST(summary_value(r.out, "ok") == 500);
}

// --spread 0.4 with 5 clients: client i starts no sooner than i/5 of 0.4 s after the first, in
// order (from the per-client file's start_s column); every one still gets the whole poem.
BOOST_AUTO_TEST_CASE(spread_starts_the_clients_evenly)
{
  temp_dir dir;
  std::string poem = dir.write("poem.txt", ascii_poem());
  server s(concurrent_model(), poem, {"-q", "--delay", "0.001", "--num-bytes", "100"});
  auto r = run({loadgen(), "--port", s.address(), "--clients", "5", "--spread", "0.4", "--expect", poem, "--csv",
                dir.path() + "/clients.csv"});
  BOOST_TEST_REQUIRE(r.status == 0, r.out << r.err);
  std::istringstream rows(read_file(dir.path() + "/clients.csv"));
  std::string row;
  std::getline(rows, row);  // the header
  std::vector<double> starts;
  while (std::getline(rows, row)) starts.push_back(std::stod(row.substr(row.find(',') + 1)));
  BOOST_TEST_REQUIRE(starts.size() == 5u);
  for (std::size_t i = 1; i < starts.size(); ++i) {
    BOOST_TEST(starts[i] >= 0.4 * static_cast<double>(i) / 5 - 0.001,
               "client " << i + 1 << " started at " << starts[i]);
    BOOST_TEST(starts[i] > starts[i - 1]);
  }
}

// Started with room for 64 descriptors, it raises its own limit to hold 300 connections.
BOOST_AUTO_TEST_CASE(raises_its_own_descriptor_limit)
{
  temp_dir dir;
  std::string poem = dir.write("poem.txt", ascii_poem());
  server s(concurrent_model(), poem, {"-q", "--delay", "0.01", "--num-bytes", "100"});
  spawn_options few_files;
  few_files.max_files = 64;
  auto r = run({loadgen(), "--port", s.address(), "--clients", "300", "--expect", poem}, 60s, few_files);
  BOOST_TEST(r.status == 0, r.out << r.err);
  BOOST_TEST(summary_value(r.out, "ok") == 300);
}

// --source-addresses 3: client i connects from 127.0.0.(1 + i % 3), so the server sees 100
// clients from each of three addresses (its "Somebody at 127.0.0.X:port" lines), every one served.
// Past about 28,000 clients, this is what gives loadgen more ephemeral ports towards one server.
BOOST_AUTO_TEST_CASE(source_addresses_spread_the_clients)
{
  temp_dir dir;
  std::string poem = dir.write("poem.txt", ascii_poem());
  server s(concurrent_model(), poem, {"-q", "--delay", "0.01", "--num-bytes", "100"}, room_for(300));
  auto r = run({loadgen(), "--port", s.address(), "--clients", "300", "--source-addresses", "3", "--expect", poem});
  BOOST_TEST_REQUIRE(r.status == 0, r.out << r.err);
  BOOST_TEST(summary_value(r.out, "ok") == 300);
  BOOST_TEST(summary_value(r.out, "sources") == 3);
  // The status lines come through the server's writer thread: wait until all 300 are there.
  auto count = [&](const std::string& text) { return occurrences(s.process().out(), text); };
  BOOST_TEST_REQUIRE(poll_until([&] { return count("Somebody at ") >= 300; }, 10s), count("Somebody at "));
  for (const char* source : {"127.0.0.1:", "127.0.0.2:", "127.0.0.3:"})
    BOOST_TEST(count(std::string("Somebody at ") + source) == 100u, source);
  // Without the option, up to about 27,000 clients, the kernel picks the one address itself.
  auto plain = run({loadgen(), "--port", s.address(), "--clients", "3", "--expect", poem});
  BOOST_TEST(plain.status == 0, plain.out << plain.err);
  BOOST_TEST(summary_value(plain.out, "sources") == 1);
}

// The floor tool: a plain send loop on loopback, one line with the CPU per send.
BOOST_AUTO_TEST_CASE(the_floor_tool_measures_a_send_and_exits_cleanly)
{
  auto r = run({build_dir() + "/bench/floor", "--sends", "2000", "--num-bytes", "20"}, 30s);
  BOOST_TEST(r.status == 0, r.out << r.err);
  BOOST_TEST(std::regex_search(r.out, std::regex("^sends=2000 num_bytes=20 cpu_s=[0-9.]+ us_per_send=[0-9.]+ "
                                                 "wall_s=[0-9.]+\n$")),
             r.out);
  BOOST_TEST(summary_value(r.out, "us_per_send") > 0);
  for (const char* bad : {"0", "many"})
    BOOST_TEST(run({build_dir() + "/bench/floor", "--sends", bad}, 10s).status == 2);
}

BOOST_AUTO_TEST_CASE(binary_and_empty_poems_are_exact)
{
  temp_dir dir;
  for (const auto& content : {binary_poem(), std::string()}) {
    std::string poem = dir.write("poem.bin", content);
    server s(concurrent_model(), poem, {"-q", "--delay", "0", "--num-bytes", "7"});
    auto r = run({loadgen(), "--port", s.address(), "--clients", "5", "--expect", poem});
    BOOST_TEST(r.status == 0, r.out << r.err);
    BOOST_TEST(summary_value(r.out, "ok") == 5);
  }
}

BOOST_AUTO_TEST_CASE(a_wrong_byte_fails_every_client)
{
  temp_dir dir;
  std::string sent = ascii_poem(), expected = sent;
  expected[expected.size() / 2] ^= 1;
  server s(concurrent_model(), dir.write("sent.txt", sent), {"-q", "--delay", "0"});
  auto r = run({loadgen(), "--port", s.address(), "--clients", "4", "--expect", dir.write("expected.txt", expected)});
  BOOST_TEST(r.status == 1);
  BOOST_TEST(summary_value(r.out, "failed") == 4);
  BOOST_TEST(
    r.err.find("4 of 4 clients failed: byte " + std::to_string(expected.size() / 2) + " differs") != std::string::npos,
    r.err);
}

BOOST_AUTO_TEST_CASE(short_and_long_poems_fail)
{
  temp_dir dir;
  std::string poem = ascii_poem();
  server s(concurrent_model(), dir.write("sent.txt", poem), {"-q", "--delay", "0"});
  auto longer = run({loadgen(), "--port", s.address(), "--expect", dir.write("longer.txt", poem + "more")});
  BOOST_TEST(longer.status == 1);
  BOOST_TEST(longer.err.find("short poem: " + std::to_string(poem.size()) + " of") != std::string::npos, longer.err);
  auto shorter = run({loadgen(), "--port", s.address(), "--expect", dir.write("shorter.txt", poem.substr(1))});
  BOOST_TEST(shorter.status == 1);
  BOOST_TEST(shorter.err.find("differs") != std::string::npos, shorter.err);
}

BOOST_AUTO_TEST_CASE(refused_connections_are_reported_not_retried)
{
  temp_dir dir;
  std::string poem = dir.write("poem.txt", ascii_poem());
  // A port that was just free: bind it, learn it, close it; nothing listens there now.
  std::uint16_t port = 0;
  {
    poetry::unique_fd listener = poetry::listen_on("127.0.0.1", 0);
    port = poetry::local_port(listener.get());
  }
  auto r = run({loadgen(), "--port", std::to_string(port), "--clients", "3", "--expect", poem}, 10s);
  BOOST_TEST(r.status == 1);
  BOOST_TEST(summary_value(r.out, "failed") == 3);
  BOOST_TEST(r.err.find("3 of 3 clients failed: connect: Connection refused") != std::string::npos, r.err);
}

BOOST_AUTO_TEST_CASE(a_stalled_server_times_out)
{
  temp_dir dir;
  std::string poem = dir.write("poem.txt", ascii_poem());
  server s(concurrent_model(), poem, {"-q", "--delay", "30"});
  auto r = run({loadgen(), "--port", s.address(), "--clients", "2", "--expect", poem, "--timeout", "0.3"}, 10s);
  BOOST_TEST(r.status == 1);
  BOOST_TEST(r.err.find("no progress for 0.3 s") != std::string::npos, r.err);
}

BOOST_AUTO_TEST_CASE(bad_command_lines_exit_2)
{
  temp_dir dir;
  std::string poem = dir.write("poem.txt", "x");
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
         {"--expect", poem},
         {"--port", "1"},
         {"--port", "0", "--expect", poem},
         {"--port", "1", "--expect", poem, "--clients", "0"},
         {"--port", "1", "--expect", poem, "--clients", "many"},
         {"--port", "1", "--expect", poem, "--timeout", "-1"},
         {"--port", "1", "--expect", poem, "--spread", "soon"},
         {"--port", "1", "--expect", poem, "--bogus"},
         {"--port", "1", "--expect", poem, "--source-addresses", "0"},
         {"--port", "1", "--expect", poem, "--source-addresses", "255"},
         {"--port", "1", "--expect", poem, "--host", "::1", "--source-addresses", "2"},
       }) {
    args.insert(args.begin(), loadgen());
    auto r = run(args, 10s);
    BOOST_TEST(r.status == 2, args.back() << ": " << r.err);
  }
  auto help = run({loadgen(), "--help"}, 10s);
  BOOST_TEST(help.status == 0);
  BOOST_TEST(help.out.find("--clients") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(bench_script)

// The whole race in quick mode on this build: every model runs, every run is byte-exact,
// and the CSV and the plots are written; the burst row runs twice (--repeat 2), the limit row
// and the cost per chunk against the floor are printed.
BOOST_AUTO_TEST_CASE(quick_race_writes_csv_and_plot)
{
  temp_dir dir;
  std::string list;
  for (const auto& model : models()) list += (list.empty() ? "" : ",") + model;
  auto r = run({source_dir() + "/scripts/bench", "--quick", "--repeat", "2", "--build-dir", build_dir(), "--models",
                list, "--out", dir.path()},
               300s);
  BOOST_TEST(r.status == 0, "the race ended with status " << r.status << ":" << what_went_wrong(r.out) << "\n"
                                                          << r.err);
  std::string csv = read_file(dir.path() + "/bench.csv");
  for (const auto& model : models()) {
    BOOST_TEST(csv.find("\nrace," + model + ",1,") != std::string::npos, model);
    BOOST_TEST(csv.find("\nrace," + model + ",10,") != std::string::npos, model);
    BOOST_TEST(csv.find("\nthroughput," + model + ",") != std::string::npos, model);
  }
  BOOST_TEST(csv.find("\nthroughput,socat,") != std::string::npos);
  // socat's CPU time is measured too (field cpu_s of its rows), for the CPU per GiB figure.
  std::istringstream rows(csv);
  for (std::string row; std::getline(rows, row);) {
    if (row.rfind("throughput,socat,", 0) != 0) continue;
    std::vector<std::string> fields;
    std::istringstream cells(row);
    for (std::string cell; std::getline(cells, cell, ',');) fields.push_back(cell);
    BOOST_TEST_REQUIRE(fields.size() > 13u, row);
    BOOST_TEST(!fields[13].empty(), row);
  }
  BOOST_TEST(r.out.find("CPU seconds per GiB sent") != std::string::npos, r.out);
  // The models that run the burst at C = 100 in quick mode: twice each, the limit row once.
  for (const char* model : {"threaded", "asio_callbacks", "asio_protocol", "asio_coroutines"}) {
    if (std::find(models().begin(), models().end(), model) == models().end()) continue;
    BOOST_TEST(occurrences(csv, std::string("\nburst-run,") + model + ",100,") == 2u, model);
    BOOST_TEST(csv.find(std::string("\nburst,") + model + ",100,") != std::string::npos, model);
    BOOST_TEST(csv.find(std::string("\nrace,") + model + ",200,0.03,") != std::string::npos, model);
  }
  BOOST_TEST(csv.find("\nfloor,floor,") != std::string::npos);
  for (const char* section : {"To the machine's limit: 200 clients", "The burst: C = 100", "What one chunk costs"})
    BOOST_TEST(r.out.find(section) != std::string::npos, section);
  std::string memory = read_file(dir.path() + "/memory.svg");
  BOOST_TEST(memory.rfind("<svg", 0) == 0);
  BOOST_TEST(memory.find("B in the process") != std::string::npos);
  std::string svg = read_file(dir.path() + "/bench.svg");
  BOOST_TEST(svg.rfind("<svg", 0) == 0);
  BOOST_TEST(svg.find("</svg>") != std::string::npos);
  for (const auto& model : models()) BOOST_TEST(svg.find(">" + model + "</text>") != std::string::npos, model);
  // The table fits 80 columns (the lines naming the output files aside).
  std::istringstream table(r.out);
  for (std::string line; std::getline(table, line);)
    if (line.find(dir.path()) == std::string::npos) BOOST_TEST(line.size() <= 80u, line);
}

// Asked for more clients than the hard descriptor limit allows, the race stops at once, before
// it builds or starts anything, with one line naming the limit and the command that raises it.
BOOST_AUTO_TEST_CASE(a_descriptor_limit_too_low_stops_the_race_at_once)
{
  temp_dir dir;
  auto r = run(
    {source_dir() + "/scripts/bench", "--clients", "9000000", "--build-dir", build_dir(), "--out", dir.path()}, 30s);
  BOOST_TEST(r.status == 1);
  BOOST_TEST(r.out.empty(), r.out);
  BOOST_TEST(std::count(r.err.begin(), r.err.end(), '\n') == 1, r.err);
  BOOST_TEST(r.err.find("hard limit (ulimit -Hn) is") != std::string::npos, r.err);
  BOOST_TEST(r.err.find("ulimit -Hn 9000256") != std::string::npos, r.err);
}

BOOST_AUTO_TEST_SUITE_END()
