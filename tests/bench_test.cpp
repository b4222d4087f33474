// The race's tools: the load generator checks every byte and reports every failure, and
// scripts/bench --quick runs the whole race on this build and writes its CSV and plot.
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
// and the CSV and the plot are written.
BOOST_AUTO_TEST_CASE(quick_race_writes_csv_and_plot)
{
  temp_dir dir;
  std::string list;
  for (const auto& model : models()) list += (list.empty() ? "" : ",") + model;
  auto r =
    run({source_dir() + "/scripts/bench", "--quick", "--build-dir", build_dir(), "--models", list, "--out", dir.path()},
        180s);
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
  std::string svg = read_file(dir.path() + "/bench.svg");
  BOOST_TEST(svg.rfind("<svg", 0) == 0);
  BOOST_TEST(svg.find("</svg>") != std::string::npos);
  for (const auto& model : models()) BOOST_TEST(svg.find(">" + model + "</text>") != std::string::npos, model);
  // The table fits 80 columns (the lines naming the output files aside).
  std::istringstream table(r.out);
  for (std::string line; std::getline(table, line);)
    if (line.find(dir.path()) == std::string::npos) BOOST_TEST(line.size() <= 80u, line);
}

BOOST_AUTO_TEST_SUITE_END()
