#include "common/options.hpp"

#include "common/errors.hpp"

#include <boost/program_options.hpp>

#include <charconv>
#include <cmath>
#include <iostream>
#include <string_view>

namespace po = boost::program_options;

namespace poetry {
namespace {

const char* const version_text = "Slow Poetry 1.0.0";

std::string program_name(const char* argv0)
{
  std::string name = argv0 ? argv0 : "poetry";
  return name;
}

std::size_t parse_count(const std::string& option, const std::string& text)
{
  unsigned long long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value == 0)
    throw usage_error("invalid value '" + text + "' for " + option + " (expected a whole number >= 1)");
  return static_cast<std::size_t>(value);
}

// Prints --help or --version if asked; returns true when the program should exit 0.
bool print_help_or_version(const po::variables_map& vm, const std::string& usage,
                           const po::options_description& options)
{
  if (vm.count("help")) {
    std::cout << usage << "\n" << options;
    return true;
  }
  if (vm.count("version")) {
    std::cout << version_text << "\n";
    return true;
  }
  return false;
}

}  // namespace

po::variables_map parse_command_line(int argc, const char* const argv[], const po::options_description& options,
                                     const po::positional_options_description& positional)
{
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(options).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error_with_option_name& e) {
    // Boost 1.74's what() fills placeholders such as %canonical_option% into its message until
    // none is left, so an option typed as "-%canonical_option%" made it loop forever (found by
    // tests/fuzz_parsers.cpp). With a '%' on the command line, word the message ourselves.
    for (int i = 1; i < argc; ++i)
      if (std::string_view(argv[i]).find('%') != std::string_view::npos)
        throw usage_error("invalid option '" + e.get_option_name() + "'");
    throw usage_error(e.what());
  } catch (const po::error& e) {
    throw usage_error(e.what());
  }
  return vm;
}

std::chrono::nanoseconds parse_seconds(const std::string& option, const std::string& text)
{
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || !std::isfinite(value) || value < 0 ||
      value > 1e6)
    throw usage_error("invalid value '" + text + "' for " + option + " (expected seconds >= 0)");
  return std::chrono::nanoseconds(static_cast<long long>(std::llround(value * 1e9)));
}

std::optional<server_options> parse_server_options(int argc, const char* const argv[], model_extras extras)
{
  server_options result;
  std::string port = "0", delay = "0.1", num_bytes = "20";
  po::options_description options("Options");
  options.add_options()("port,p", po::value(&port), "port to listen on; 0 (default) picks a free port")(
    "iface", po::value(&result.iface), "interface to listen on (default: localhost); \"::\" listens dual-stack")(
    "delay", po::value(&delay), "seconds between chunks (default 0.1; 0 allowed)")(
    "num-bytes", po::value(&num_bytes), "bytes per chunk (default 20; at least 1)")(
    "quiet,q", po::bool_switch(&result.quiet), "no per-chunk lines");
  if (extras.pull)
    options.add_options()("pull", po::bool_switch(&result.pull),
                          "answer each 'poems' request with one chunk (the tutorial's dialogue)");
  options.add_options()("help,h", "print this help, then exit")("version", "print the version, then exit");
  po::options_description hidden;
  hidden.add_options()("poem-file", po::value(&result.poem_file));
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("poem-file", 1);

  auto vm = parse_command_line(argc, argv, all, positional);
  std::string usage = "Usage: " + program_name(argv[0]) +
                      " [options] POEM_FILE\n"
                      "Streams POEM_FILE to every client that connects, a few bytes at a time.\n";
  if (print_help_or_version(vm, usage, options)) return std::nullopt;
  if (result.poem_file.empty()) throw usage_error("no poem file given");
  result.port = parse_port(port, true);
  result.delay = parse_seconds("--delay", delay);
  result.num_bytes = parse_count("--num-bytes", num_bytes);
  if (result.iface.empty()) throw usage_error("invalid value '' for --iface");
  return result;
}

std::optional<client_options> parse_client_options(int argc, const char* const argv[], model_extras extras)
{
  client_options result;
  std::string timeout;
  std::vector<std::string> addresses;
  po::options_description options("Options");
  options.add_options()("output-dir,o", po::value(&result.output_dir),
                        "save each poem to DIR/<port>.txt instead of stdout")(
    "timeout,t", po::value(&timeout), "give up on a connection that makes no progress for SECONDS")(
    "quiet,q", po::bool_switch(&result.quiet), "no per-chunk lines");
  if (extras.pull)
    options.add_options()("pull", po::bool_switch(&result.pull),
                          "ask for each chunk with 'poems' (the tutorial's dialogue)");
  options.add_options()("help,h", "print this help, then exit")("version", "print the version, then exit");
  po::options_description hidden;
  hidden.add_options()("address", po::value(&addresses));
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("address", -1);

  auto vm = parse_command_line(argc, argv, all, positional);
  std::string usage = "Usage: " + program_name(argv[0]) +
                      " [options] ADDRESS...\n"
                      "Downloads a poem from each ADDRESS: PORT, HOST:PORT or [IPV6]:PORT\n"
                      "(HOST defaults to 127.0.0.1; a name is resolved, each address tried in turn).\n";
  if (print_help_or_version(vm, usage, options)) return std::nullopt;
  if (addresses.empty()) throw usage_error("no address given");
  for (const auto& text : addresses) result.addresses.push_back(parse_address(text));
  if (vm.count("timeout")) {
    result.timeout = parse_seconds("--timeout", timeout);
    if (*result.timeout == std::chrono::nanoseconds::zero())
      throw usage_error("invalid value '" + timeout + "' for --timeout (expected seconds > 0)");
  }
  if (vm.count("output-dir") && result.output_dir.empty()) throw usage_error("invalid value '' for --output-dir");
  return result;
}

}  // namespace poetry
