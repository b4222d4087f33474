#include "common/errors.hpp"

#include <cstring>
#include <iostream>

namespace poetry {

std::string system_reason(int error_number)
{
  return std::strerror(error_number);
}

int run_main(const char* argv0, const std::function<int()>& body)
{
  std::string name = argv0 ? argv0 : "poetry";
  try {
    return body();
  } catch (const usage_error& e) {
    std::cerr << name << ": " << e.what() << "\n"
              << "Try '" << name << " --help' for more information.\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << name << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace poetry
