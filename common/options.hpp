// The command lines of every server and every client: one parser, one usage text, for all models.
#pragma once

#include "common/address.hpp"

#include <boost/program_options.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace poetry {

// Options only some models have; a model passes the ones it supports.
struct model_extras {
  bool pull = false;  // asio_protocol: the request-per-chunk dialogue
};

struct server_options {
  std::string poem_file;
  std::uint16_t port = 0;  // 0: the system picks a free port
  std::string iface = "localhost";
  std::chrono::nanoseconds delay = std::chrono::milliseconds(100);
  std::size_t num_bytes = 20;
  bool quiet = false;
  bool pull = false;
};

struct client_options {
  std::vector<address> addresses;
  std::string output_dir;                           // empty: poems go to stdout
  std::optional<std::chrono::nanoseconds> timeout;  // no progress for this long: give up
  bool quiet = false;
  bool pull = false;
};

// Parse a command line. Returns nullopt after printing --help or --version (exit 0);
// throws usage_error for anything malformed (exit 2).
std::optional<server_options> parse_server_options(int argc, const char* const argv[], model_extras extras = {});
std::optional<client_options> parse_client_options(int argc, const char* const argv[], model_extras extras = {});

// Runs Boost.Program_options over a command line and turns its errors into one-line usage
// errors. (The parsers above use it; so do the race's own tools.)
boost::program_options::variables_map parse_command_line(
  int argc, const char* const argv[], const boost::program_options::options_description& options,
  const boost::program_options::positional_options_description& positional = {});

// Parses a number of seconds >= 0 ("0.1"). Throws usage_error naming the option.
std::chrono::nanoseconds parse_seconds(const std::string& option, const std::string& text);

}  // namespace poetry
