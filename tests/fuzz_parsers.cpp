// libFuzzer target for the command-line parsers: addresses and whole option lists.
// Properties: no crash, no undefined behaviour, and every accepted address prints back to
// text that parses to the same address.
#include "common/address.hpp"
#include "common/errors.hpp"
#include "common/options.hpp"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
  std::string input(reinterpret_cast<const char*>(data), size);

  // The input as one address.
  try {
    poetry::address a = poetry::parse_address(input);
    if (!(poetry::parse_address(poetry::to_string(a)) == a)) std::abort();
  } catch (const poetry::usage_error&) {
  }

  // The input as a command line: words separated by newlines.
  std::vector<std::string> words{"program"};
  std::string word;
  for (char c : input) {
    if (c == '\n') {
      words.push_back(word);
      word.clear();
    } else {
      word += c;
    }
  }
  words.push_back(word);
  std::vector<const char*> argv;
  for (const auto& w : words) argv.push_back(w.c_str());
  argv.push_back(nullptr);
  int argc = static_cast<int>(words.size());
  // --help and --version print to stdout; keep them out so the fuzzer's output stays readable.
  for (const auto& w : words)
    if (w.find("-h") != std::string::npos || w.find("--v") != std::string::npos) return 0;
  try {
    poetry::parse_server_options(argc, argv.data(), poetry::model_extras{.pull = true});
  } catch (const poetry::usage_error&) {
  }
  try {
    poetry::parse_client_options(argc, argv.data(), poetry::model_extras{.pull = true});
  } catch (const poetry::usage_error&) {
  }
  return 0;
}
