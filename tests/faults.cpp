// Faults on demand, for the tests only (loaded with LD_PRELOAD); without its variables set it
// changes nothing. No system configuration is touched.
//   POETRY_SLOW_NAME=NAME     getaddrinfo takes four seconds for NAME, then resolves it to
//                             127.0.0.1; every other name goes straight to the system's.
//   POETRY_FAILED_ACCEPTS=N   the first N calls of accept/accept4 fail with ENETDOWN, one of the
//                             network errors accept(2) says to retry (Asio retries EPROTO and
//                             ECONNABORTED itself, so they would not reach a handler).
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <dlfcn.h>
#include <netdb.h>
#include <sys/socket.h>

namespace {

// The system's own function of that name.
template <typename Function>
Function next(const char* name)
{
  return reinterpret_cast<Function>(::dlsym(RTLD_NEXT, name));
}

// True for the first POETRY_FAILED_ACCEPTS calls.
bool fail_this_accept()
{
  static std::atomic<long> calls{0};
  const char* failures = std::getenv("POETRY_FAILED_ACCEPTS");
  if (failures == nullptr || calls.fetch_add(1) >= std::atol(failures)) return false;
  errno = ENETDOWN;
  return true;
}

}  // namespace

extern "C" int getaddrinfo(const char* node, const char* service, const addrinfo* hints, addrinfo** res)
{
  static auto real = next<int (*)(const char*, const char*, const addrinfo*, addrinfo**)>("getaddrinfo");
  const char* slow = std::getenv("POETRY_SLOW_NAME");
  if (node != nullptr && slow != nullptr && std::strcmp(node, slow) == 0) {
    std::this_thread::sleep_for(std::chrono::seconds(4));
    node = "127.0.0.1";
  }
  return real(node, service, hints, res);
}

extern "C" int accept(int fd, sockaddr* address, socklen_t* length)
{
  static auto real = next<int (*)(int, sockaddr*, socklen_t*)>("accept");
  return fail_this_accept() ? -1 : real(fd, address, length);
}

extern "C" int accept4(int fd, sockaddr* address, socklen_t* length, int flags)
{
  static auto real = next<int (*)(int, sockaddr*, socklen_t*, int)>("accept4");
  return fail_this_accept() ? -1 : real(fd, address, length, flags);
}
