// common/: addresses, options and output file names. Tables of every accepted and every
// rejected form, so the parsers read like their specification.
#define BOOST_TEST_MODULE common
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "common/address.hpp"
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/output.hpp"
#include "common/poem.hpp"

#include "harness.hpp"

#include <sys/socket.h>

namespace bdata = boost::unit_test::data;
BOOST_TEST_DONT_PRINT_LOG_VALUE(std::vector<std::string>)
using namespace poetry;
using namespace std::chrono_literals;

namespace {

struct address_case {
  const char* text;
  const char* host;
  unsigned port;
};
std::ostream& operator<<(std::ostream& os, const address_case& c) { return os << c.text; }

const address_case good_addresses[] = {
  {"10000", "127.0.0.1", 10000},     {"1", "127.0.0.1", 1},
  {"65535", "127.0.0.1", 65535},     {"localhost:10001", "localhost", 10001},
  {"127.0.0.2:80", "127.0.0.2", 80}, {"example.org:7", "example.org", 7},
  {"[::1]:10000", "::1", 10000},     {"[fe80::1%lo]:22", "fe80::1%lo", 22},
  {"[127.0.0.1]:5", "127.0.0.1", 5},
};

const char* const bad_addresses[] = {
  "",      "abc", "host:", ":10000", "[::1",   "[::1]",     "[::1]10000", "[]:10000", "1:2:3",  "::1:10000",
  "99999", "0",   "65536", "-1",     "10000x", "host:port", "host:+80",   "host: 80", "[::1]:", "1e3",
};

// Turns a list of words into argc/argv, with a program name in front.
struct command_line {
  explicit command_line(std::vector<std::string> words) : words_(std::move(words))
  {
    words_.insert(words_.begin(), "program");
    for (auto& w : words_) argv_.push_back(w.c_str());
  }
  int argc() const { return static_cast<int>(argv_.size()); }
  const char* const* argv() const { return argv_.data(); }

private:
  std::vector<std::string> words_;
  std::vector<const char*> argv_;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(addresses)

BOOST_DATA_TEST_CASE(accepted, bdata::make(good_addresses), c)
{
  address a = parse_address(c.text);
  BOOST_TEST(a.host == c.host);
  BOOST_TEST(a.port == c.port);
}

BOOST_DATA_TEST_CASE(rejected_with_a_usage_error_naming_the_address, bdata::make(bad_addresses), text)
{
  try {
    parse_address(text);
    BOOST_ERROR("accepted '" << text << "'");
  } catch (const usage_error& e) {
    BOOST_TEST(std::string(e.what()).find("'" + std::string(text) + "'") != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(printed_with_brackets_around_ipv6)
{
  BOOST_TEST(to_string(address{"127.0.0.1", 10000}) == "127.0.0.1:10000");
  BOOST_TEST(to_string(address{"::1", 10000}) == "[::1]:10000");
  BOOST_TEST(to_string(parse_address("[::1]:7")) == "[::1]:7");
}

BOOST_AUTO_TEST_CASE(resolution_gives_every_address_and_names_failures)
{
  auto v4 = resolve("127.0.0.1", 80);
  BOOST_TEST_REQUIRE(v4.size() == 1u);
  BOOST_TEST(v4[0].family == AF_INET);
  BOOST_TEST(to_string(v4[0].get()) == "127.0.0.1:80");
  auto v6 = resolve("::1", 80);
  BOOST_TEST_REQUIRE(v6.size() == 1u);
  BOOST_TEST(to_string(v6[0].get()) == "[::1]:80");
  BOOST_TEST(!resolve("localhost", 80).empty());
  BOOST_CHECK_THROW(resolve("no-such-host.invalid", 80), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(listening_on_localhost_prefers_ipv4)
{
  auto endpoints = resolve_listen("localhost", 0);
  BOOST_TEST_REQUIRE(!endpoints.empty());
  BOOST_TEST(endpoints[0].family == AF_INET);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(server_options_)

BOOST_AUTO_TEST_CASE(defaults)
{
  command_line cl({"poem.txt"});
  auto o = parse_server_options(cl.argc(), cl.argv());
  BOOST_TEST_REQUIRE(o.has_value());
  BOOST_TEST(o->poem_file == "poem.txt");
  BOOST_TEST(o->port == 0);
  BOOST_TEST(o->iface == "localhost");
  BOOST_TEST(o->delay.count() == std::chrono::nanoseconds(100ms).count());
  BOOST_TEST(o->num_bytes == 20u);
  BOOST_TEST(!o->quiet);
  BOOST_TEST(!o->pull);
}

BOOST_AUTO_TEST_CASE(every_option)
{
  command_line cl({"-p", "10000", "--iface", "::", "--delay", "0", "--num-bytes", "1", "-q", "p.txt"});
  auto o = parse_server_options(cl.argc(), cl.argv());
  BOOST_TEST_REQUIRE(o.has_value());
  BOOST_TEST(o->port == 10000);
  BOOST_TEST(o->iface == "::");
  BOOST_TEST(o->delay.count() == 0);
  BOOST_TEST(o->num_bytes == 1u);
  BOOST_TEST(o->quiet);
}

BOOST_AUTO_TEST_CASE(pull_only_where_the_model_has_it)
{
  command_line cl({"--pull", "p.txt"});
  BOOST_CHECK_THROW(parse_server_options(cl.argc(), cl.argv()), usage_error);
  auto o = parse_server_options(cl.argc(), cl.argv(), model_extras{.pull = true});
  BOOST_TEST_REQUIRE(o.has_value());
  BOOST_TEST(o->pull);
}

const std::vector<std::string> bad_server_lines[] = {
  {},                        // no poem file
  {"--bogus", "p.txt"},      // unknown option
  {"-p", "65536", "p.txt"},  // port out of range
  {"-p", "-1", "p.txt"},
  {"-p", "abc", "p.txt"},
  {"--num-bytes", "0", "p.txt"},
  {"--num-bytes", "-5", "p.txt"},
  {"--num-bytes", "2x", "p.txt"},
  {"--delay", "-0.1", "p.txt"},
  {"--delay", "soon", "p.txt"},
  {"--delay", "nan", "p.txt"},
  {"--delay", "inf", "p.txt"},
  {"a.txt", "b.txt"},                 // two poem files
  {"--port", "p.txt"},                // missing value
  {"-d%canonical_option%", "p.txt"},  // once made Boost's error message loop forever
  {"--%option%", "p.txt"},
};

BOOST_DATA_TEST_CASE(bad_values_are_usage_errors, bdata::make(bad_server_lines), words)
{
  command_line cl(words);
  BOOST_CHECK_THROW(parse_server_options(cl.argc(), cl.argv()), usage_error);
}

BOOST_AUTO_TEST_CASE(help_and_version_ask_to_exit)
{
  command_line help({"--help"}), version({"--version"});
  BOOST_TEST(!parse_server_options(help.argc(), help.argv()).has_value());
  BOOST_TEST(!parse_server_options(version.argc(), version.argv()).has_value());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(client_options_)

BOOST_AUTO_TEST_CASE(defaults)
{
  command_line cl({"10000", "[::1]:10001"});
  auto o = parse_client_options(cl.argc(), cl.argv());
  BOOST_TEST_REQUIRE(o.has_value());
  BOOST_TEST_REQUIRE(o->addresses.size() == 2u);
  BOOST_TEST(o->addresses[1].host == "::1");
  BOOST_TEST(o->output_dir.empty());
  BOOST_TEST(!o->timeout.has_value());
  BOOST_TEST(!o->quiet);
}

BOOST_AUTO_TEST_CASE(every_option)
{
  command_line cl({"-o", "/tmp/x", "-t", "1.5", "-q", "10000"});
  auto o = parse_client_options(cl.argc(), cl.argv());
  BOOST_TEST_REQUIRE(o.has_value());
  BOOST_TEST(o->output_dir == "/tmp/x");
  BOOST_TEST(o->timeout->count() == std::chrono::nanoseconds(1500ms).count());
  BOOST_TEST(o->quiet);
}

const std::vector<std::string> bad_client_lines[] = {
  {},  // no addresses
  {"abc"},
  {"host:"},
  {"[::1"},
  {"1:2:3"},
  {"99999"},
  {"--bogus", "10000"},
  {"-t", "-1", "10000"},
  {"-t", "0", "10000"},
  {"-t", "later", "10000"},
  {"10000", "0"},  // one bad address among good ones
};

BOOST_DATA_TEST_CASE(bad_values_are_usage_errors, bdata::make(bad_client_lines), words)
{
  command_line cl(words);
  BOOST_CHECK_THROW(parse_client_options(cl.argc(), cl.argv()), usage_error);
}

BOOST_AUTO_TEST_CASE(output_file_names_stay_apart)
{
  command_line cl({"-o", "d", "10000", "10001", "10000", "127.0.0.2:10000"});
  auto o = parse_client_options(cl.argc(), cl.argv());
  BOOST_TEST_REQUIRE(o.has_value());
  auto names = poem_output::file_names(*o);
  std::vector<std::string> expected{"d/10000.txt", "d/10001.txt", "d/10000-3.txt", "d/10000-4.txt"};
  BOOST_TEST(names == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(poems)

BOOST_AUTO_TEST_CASE(loaded_byte_for_byte)
{
  test::temp_dir dir;
  auto binary = test::binary_poem();
  BOOST_TEST(load_poem(dir.write("b.bin", binary)) == binary);
  BOOST_TEST(load_poem(dir.write("empty.txt", "")).empty());
}

BOOST_AUTO_TEST_CASE(missing_or_not_a_file_is_named)
{
  test::temp_dir dir;
  try {
    load_poem(dir.path() + "/missing.txt");
    BOOST_ERROR("loaded a missing file");
  } catch (const std::runtime_error& e) {
    BOOST_TEST(std::string(e.what()) == dir.path() + "/missing.txt: No such file or directory");
  }
  BOOST_CHECK_THROW(load_poem(dir.path()), std::runtime_error);
}

BOOST_AUTO_TEST_CASE(ideal_time)
{
  BOOST_TEST(ideal_seconds(400, 20, 0.1) == 1.9, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(ideal_seconds(401, 20, 0.1) == 2.0, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(ideal_seconds(0, 20, 0.1) == 0.0);
  BOOST_TEST(ideal_seconds(5, 20, 0.1) == 0.0);
}

BOOST_AUTO_TEST_SUITE_END()
