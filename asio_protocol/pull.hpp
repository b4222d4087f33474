// The --pull dialogue, the tutorial's last one: the client asks for each chunk with a request,
// "poems", sent on connecting and again after each piece of data it receives; the server
// answers every complete request with one chunk, and half-closes after the last.
#pragma once

#include <cstddef>
#include <string_view>

namespace poetry {

constexpr std::string_view pull_request = "poems";

// Counts the complete requests in a stream that TCP may split ("po" + "ems") or join
// ("poemspoems") anywhere. Bytes that are not part of a request are ignored.
class request_counter {
public:
  // How many requests these bytes complete.
  std::size_t count(std::string_view bytes)
  {
    std::size_t complete = 0;
    for (char c : bytes) {
      // A mismatch can only restart a request at its first letter: "poems" has no other 'p'.
      if (c == pull_request[matched_])
        ++matched_;
      else
        matched_ = c == pull_request[0] ? 1 : 0;
      if (matched_ == pull_request.size()) {
        ++complete;
        matched_ = 0;
      }
    }
    return complete;
  }

private:
  std::size_t matched_ = 0;  // how much of a request the bytes so far end with
};

}  // namespace poetry
