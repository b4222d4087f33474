// scripts/tour against this build: it runs every model, draws a timeline per experiment within
// 80 columns, writes the SVG pictures, and its table shows blocking serialising while every
// other model overlaps.
#define BOOST_TEST_MODULE tour
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include <algorithm>

#include <fstream>
#include <regex>
#include <sstream>

using namespace poetry::test;

namespace {

// "a,b,c" from the models of this build.
std::string joined(const std::vector<std::string>& names)
{
  std::string list;
  for (const auto& name : names) list += (list.empty() ? "" : ",") + name;
  return list;
}

// The last lines of a text: the tour's table, for a failure's message (not the whole tour).
std::string last_lines(const std::string& text, int count)
{
  auto at = text.size();
  for (int i = 0; i <= count && at != std::string::npos && at > 0; ++i) at = text.rfind('\n', at - 1);
  return at == std::string::npos ? text : text.substr(at + 1);
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_tour_ends_with_a_table_that_shows_each_model)
{
  temp_dir dir;
  // T* = (10 - 1) x 0.05 s = 0.45 s; blocking needs about 3 T* per experiment.
  result r = run({"/bin/bash", source_dir() + "/scripts/tour", "--no-build", "--build-dir", build_dir(), "--models",
                  joined(models()), "--delay", "0.05", "--svg", dir.path()},
                 60s);
  BOOST_TEST_REQUIRE(r.status == 0, "the tour ended with status " << r.status << ":\n"
                                                                  << last_lines(r.out, 12) << r.err);
  BOOST_TEST(r.seconds < 60);

  // Every line fits 80 columns.
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) BOOST_TEST(line.size() <= 80u, line);

  // One table row per model: both wall times, the ideal, and the two ratios.
  // The concurrent models overlap: well under the blocking model's ratio (which a busy machine
  // stretches as much as theirs), and under 1.6 on a quiet one.
  double serial[5] = {0, 0, 0, 0, 0};
  for (const auto& model : models()) {
    BOOST_TEST_CONTEXT("model " << model)
    {
      std::smatch m;
      std::regex row("\\n  " + model + R"( +([0-9.]+)s +([0-9.]+)s +0\.45s +([0-9.]+) +([0-9.]+)\n)");
      BOOST_TEST_REQUIRE(std::regex_search(r.out, m, row), "no table row:\n" << last_lines(r.out, 12));
      for (int ratio : {3, 4}) {
        double value = std::stod(m[ratio]);
        std::string shown = m[0].str().substr(1, m[0].length() - 2);  // the row, without its line breaks
        if (model == "blocking") BOOST_TEST(value > 2.4, shown);
        else BOOST_TEST(value < std::max(1.6, 0.7 * serial[ratio]), shown);
        if (model == "blocking") serial[ratio] = value;
      }
      for (const char* exp : {"a", "b"}) {
        std::ifstream svg(dir.path() + "/" + model + "-" + exp + ".svg");
        std::string first;
        std::getline(svg, first);
        BOOST_TEST(first.rfind("<svg ", 0) == 0u);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(a_bad_option_is_a_usage_error)
{
  for (std::vector<std::string> args :
       {std::vector<std::string>{"--clients", "0"}, {"--delay", "-1"}, {"--models", "nonesuch"}, {"--frobnicate"}}) {
    std::vector<std::string> argv{"/bin/bash", source_dir() + "/scripts/tour", "--no-build"};
    argv.insert(argv.end(), args.begin(), args.end());
    result r = run(argv, 10s);
    BOOST_TEST(r.status == 2, args.front());
    BOOST_TEST(r.err.find("--help") != std::string::npos);
  }
}

// --step pauses before each model (it reads a line from stdin; here stdin is empty, so it goes
// on at once). The blocking model's rows in (a) are in the order it served the clients, so their
// end times rise from row to row.
BOOST_AUTO_TEST_CASE(step_mode_prompts_before_each_model_and_blocking_rows_come_in_serving_order)
{
  result r = run({"/bin/bash", source_dir() + "/scripts/tour", "--no-build", "--build-dir", build_dir(), "--models",
                  "blocking", "--delay", "0.05", "--step"},
                 60s);
  BOOST_TEST_REQUIRE(r.status == 0, "the tour ended with status " << r.status << ":\n"
                                                                  << last_lines(r.out, 12) << r.err);
  BOOST_TEST(r.err.find("Press Enter for step 1, blocking") != std::string::npos, r.err);
  std::regex row(R"(\n  client (\d) +\|[^|]*\| ([0-9.]+)s(?=\n))");
  std::vector<double> ends;
  for (std::sregex_iterator it(r.out.begin(), r.out.end(), row), end; it != end && ends.size() < 3; ++it)
    ends.push_back(std::stod((*it)[2]));
  BOOST_TEST_REQUIRE(ends.size() == 3u, "no three client rows:\n" << r.out);
  BOOST_TEST((ends[0] < ends[1] && ends[1] < ends[2]), ends[0] << " " << ends[1] << " " << ends[2]);
}
