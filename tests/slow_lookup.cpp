// A getaddrinfo that is slow for one name, for the tests only (loaded with LD_PRELOAD): the name
// in POETRY_SLOW_NAME takes four seconds, then resolves to 127.0.0.1; every other name goes
// straight to the system's getaddrinfo. No system configuration is touched.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <dlfcn.h>
#include <netdb.h>

extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints, addrinfo** res)
{
  using function = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
  static auto real = reinterpret_cast<function>(::dlsym(RTLD_NEXT, "getaddrinfo"));
  const char* slow = std::getenv("POETRY_SLOW_NAME");
  if (node != nullptr && slow != nullptr && std::strcmp(node, slow) == 0) {
    std::this_thread::sleep_for(std::chrono::seconds(4));
    node = "127.0.0.1";
  }
  return real(node, service, hints, res);
}
