// scripts/tour against this build: it runs every model, draws a timeline per experiment within
// 80 columns, writes the SVG pictures, and its table shows blocking serialising while every
// other model overlaps.
#define BOOST_TEST_MODULE tour
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

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

}  // namespace

BOOST_AUTO_TEST_CASE(the_tour_ends_with_a_table_that_shows_each_model)
{
  temp_dir dir;
  // T* = (10 - 1) x 0.05 s = 0.45 s; blocking needs about 3 T* per experiment.
  result r = run({"/bin/bash", source_dir() + "/scripts/tour", "--no-build", "--build-dir", build_dir(),
                  "--models", joined(models()), "--delay", "0.05", "--svg", dir.path()},
                 60s);
  BOOST_TEST_INFO_SCOPE("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  BOOST_TEST_REQUIRE(r.status == 0);
  BOOST_TEST(r.seconds < 60);

  // Every line fits 80 columns.
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) BOOST_TEST(line.size() <= 80u, line);

  // One table row per model: both wall times, the ideal, and the two ratios.
  for (const auto& model : models()) {
    BOOST_TEST_CONTEXT("model " << model)
    {
      std::smatch m;
      std::regex row("\\n  " + model + R"( +([0-9.]+)s +([0-9.]+)s +0\.45s +([0-9.]+) +([0-9.]+)\n)");
      BOOST_TEST_REQUIRE(std::regex_search(r.out, m, row));
      for (int ratio : {3, 4}) {
        double value = std::stod(m[ratio]);
        if (model == "blocking")
          BOOST_TEST(value > 2.4);
        else
          BOOST_TEST(value < 1.6);
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
  for (std::vector<std::string> args : {std::vector<std::string>{"--clients", "0"},
                                        {"--delay", "-1"},
                                        {"--models", "nonesuch"},
                                        {"--frobnicate"}}) {
    std::vector<std::string> argv{"/bin/bash", source_dir() + "/scripts/tour", "--no-build"};
    argv.insert(argv.end(), args.begin(), args.end());
    result r = run(argv, 10s);
    BOOST_TEST(r.status == 2, args.front());
    BOOST_TEST(r.err.find("--help") != std::string::npos);
  }
}
