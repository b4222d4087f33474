// Every figure the guide quotes from the race comes from docs/results.md, the one full run of
// scripts/bench kept in the repository, and changes with it. Each quotation below is a piece of
// a document's text in which {MODEL C DELAY COLUMN} (optionally with a printf format, e.g.
// {threaded 10000 0.5 RSS %.0f}) stands for a cell of results.md's race table; the document must
// contain the text with the cell's value in its place (line breaks count as spaces). When a new
// run changes results.md, this test names every sentence to update.
//
// results.md holds two runs, each under its own heading: "## One full run", which chapters 1-6
// and the READMEs quote, and "## At scale: one full run", with the limit row, the burst over
// repeated races and the cost per chunk, which chapter 7 quotes ({scale: MODEL C DELAY COLUMN}).
//
// A maintainers' check (ctest label "maintainer"): scripts/test --maintainer runs it.
#define BOOST_TEST_MODULE figures
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include <cstdio>
#include <map>
#include <regex>
#include <sstream>

using namespace poetry::test;

namespace {

struct quotation {
  const char* document;
  const char* text;
};

// The quotations, document by document.
const quotation quotations[] = {
  {"docs/01-blocking.md",
   "ten clients of a 1.9-second poem took {blocking 10 0.1 wall} s, E(10) = {blocking 10 0.1 E}"},
  {"docs/01-blocking.md", "the median client waited {blocking 10 0.1 p50 %.1f} s"},
  {"docs/01-blocking.md", "a peak of {blocking 10 0.1 RSS} MiB with one client or ten"},
  {"docs/02-threaded.md",
   "grew from {threaded 1 0.1 RSS} MiB with one client to {threaded 1000 0.1 RSS} MiB with 1,000 and "
   "{threaded 10000 0.5 RSS %.0f} MiB with 10,000"},
  {"docs/02-threaded.md", "E(1000) = {threaded 1000 0.1 E} is close to ideal"},
  {"docs/02-threaded.md", "E(10000) rose to {threaded 10000 0.5 E}"},
  {"docs/03-select.md",
   "1,000 clients took {select 1000 0.1 E} times one client's time in a flat {select 1000 0.1 RSS} MiB"},
  {"docs/03-select.md",
   "the server's CPU time for them, {select 1000 0.1 CPU} s, was no higher than the one-thread Asio models' "
   "({asio_callbacks 1000 0.1 CPU} and {asio_protocol 1000 0.1 CPU} s)"},
  {"docs/04-asio-callbacks.md",
   "clients took {asio_callbacks 10000 0.5 E} times one client's time, with a peak of "
   "{asio_callbacks 10000 0.5 RSS} MiB"},
  {"docs/04-asio-callbacks.md",
   "{asio_callbacks 10000 0.5 CPU %.1f} s of CPU, against the threaded server's {threaded 10000 0.5 RSS %.0f} MiB "
   "and {threaded 10000 0.5 CPU %.1f} s; at 1,000 clients its CPU time was {asio_callbacks 1000 0.1 CPU} s, "
   "select's {select 1000 0.1 CPU} s"},
  {"select/README.md", "finish in about {select 1000 0.1 E} times one client's time"},
  {"threaded/README.md",
   "{threaded 1000 0.1 RSS %.0f} MiB resident in the race, {threaded 10000 0.5 RSS %.0f} MiB at ten thousand"},
  {"README.md", "({threaded 10000 0.5 RSS %.0f} MiB peak there) and E rose to {threaded 10000 0.5 E}"},
  {"docs/07-scale.md", "bytes per connection ({scale: threaded 19000 1 RSS %.0f} MiB at the peak)"},
};

// Runs of blanks and line breaks become one space, so a quotation may span lines.
std::string flattened(const std::string& text) { return std::regex_replace(text, std::regex("\\s+"), " "); }

// results.md's race tables: "MODEL C DELAY COLUMN" -> the cell as printed, for the run under
// "## One full run"; "scale: MODEL C DELAY COLUMN" for the run under "## At scale".
std::map<std::string, std::string> race_table()
{
  static const char* const columns[] = {"wall", "E", "p50", "p95", "max", "RSS", "CPU", "exact"};
  std::map<std::string, std::string> cells;
  std::istringstream lines(read_file(source_dir() + "/docs/results.md"));
  std::regex row(
    R"(^([a-z_]+) +(\d+) +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+) +([0-9.]+) +(yes|no) *$)");
  std::string prefix = "-";  // which run's table this line is in; "-" outside both
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("## ", 0) == 0)
      prefix = line.rfind("## One full run", 0) == 0 ? "" : line.rfind("## At scale", 0) == 0 ? "scale: " : "-";
    if (prefix == "-") continue;
    std::smatch m;
    if (!std::regex_match(line, m, row)) continue;
    std::string key = prefix + m[1].str() + " " + m[2].str() + " " + m[3].str() + " ";
    for (int i = 0; i < 8; ++i) cells[key + columns[i]] = m[4 + i].str();
  }
  return cells;
}

// The quotation with each {…} replaced by its cell; throws if a cell is not in the table.
std::string filled(const std::string& text, const std::map<std::string, std::string>& cells)
{
  std::string out;
  std::regex placeholder(R"(\{((?:scale: )?[a-z_]+ \d+ [0-9.]+ [A-Za-z0-9]+)( %[0-9.]*f)?\})");
  auto at = text.cbegin();
  for (std::sregex_iterator it(text.begin(), text.end(), placeholder), end; it != end; ++it) {
    out.append(at, (*it)[0].first);
    auto cell = cells.find((*it)[1].str());
    if (cell == cells.end()) throw std::runtime_error("results.md has no cell '" + (*it)[1].str() + "'");
    std::string value = cell->second;
    if ((*it)[2].matched) {
      char buffer[32];
      std::snprintf(buffer, sizeof buffer, (*it)[2].str().substr(1).c_str(), std::stod(value));
      value = buffer;
    }
    out += value;
    at = (*it)[0].second;
  }
  out.append(at, text.cend());
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(results_md_has_a_race_table)
{
  auto cells = race_table();
  BOOST_TEST(cells.count("blocking 1 0.1 wall") == 1u);
  BOOST_TEST(cells.size() >= 8u * 20);
}

BOOST_AUTO_TEST_CASE(every_quoted_figure_is_the_one_in_results_md)
{
  auto cells = race_table();
  for (const quotation& q : quotations) {
    BOOST_TEST_CONTEXT(q.document)
    {
      std::string expected = filled(q.text, cells);
      std::string document = flattened(read_file(source_dir() + "/" + q.document));
      BOOST_TEST(document.find(expected) != std::string::npos,
                 "it should say, as results.md does now: \"" << expected << "\"");
    }
  }
}
