// Faults on demand, for the tests only (loaded with LD_PRELOAD); without its variables set it
// changes nothing. No system configuration is touched.
//   POETRY_SLOW_NAME=NAME     getaddrinfo takes four seconds for NAME, then resolves it to
//                             127.0.0.1; every other name goes straight to the system's.
//   POETRY_FAILED_ACCEPTS=N   the first N calls of accept/accept4 fail with ENETDOWN, one of the
//                             network errors accept(2) says to retry (Asio retries EPROTO and
//                             ECONNABORTED itself, so they would not reach a handler).
//   POETRY_FAIL=WHAT:SKIP     armed by each SIGUSR1 the program receives: after SKIP more calls,
//                             one call fails -- WHAT is "new" (operator new throws
//                             std::bad_alloc) or "thread" (pthread_create says EAGAIN). Each
//                             failure says "faults: failed WHAT" on stderr, so a test can see
//                             that it happened.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <csignal>
#include <new>
#include <string_view>

#include <dlfcn.h>
#include <netdb.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

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

// POETRY_FAIL: what fails, and how many calls of it are still to pass before one fails (-1:
// none is armed).
enum class failing { none, allocation, thread };
failing what_fails = failing::none;
long skip = 0;  // SKIP
std::atomic<long> calls_to_pass{-1};

// True for the call that the last SIGUSR1 armed; says so on stderr (with write(2): no allocation).
bool fail_this_call(failing what)
{
  if (what_fails != what || calls_to_pass.load() < 0 || calls_to_pass.fetch_sub(1) != 0) return false;
  std::string_view said = what == failing::allocation ? "faults: failed new\n" : "faults: failed thread\n";
  [[maybe_unused]] ssize_t n = ::write(2, said.data(), said.size());
  return true;
}

void arm(int) { calls_to_pass = skip; }

// Reads POETRY_FAIL and installs the SIGUSR1 handler that arms it, before main() runs.
__attribute__((constructor)) void read_poetry_fail()
{
  const char* fail = std::getenv("POETRY_FAIL");
  if (fail == nullptr) return;
  if (std::strncmp(fail, "new:", 4) == 0) what_fails = failing::allocation;
  else if (std::strncmp(fail, "thread:", 7) == 0) what_fails = failing::thread;
  else return;
  skip = std::atol(std::strchr(fail, ':') + 1);
  struct sigaction action {};
  action.sa_handler = arm;
  action.sa_flags = SA_RESTART;
  ::sigaction(SIGUSR1, &action, nullptr);
}

}  // namespace

void* operator new(std::size_t size)
{
  if (fail_this_call(failing::allocation)) throw std::bad_alloc();
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

extern "C" int pthread_create(pthread_t* thread, const pthread_attr_t* attributes, void* (*start)(void*), void* arg)
{
  static auto real = next<int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*)>("pthread_create");
  return fail_this_call(failing::thread) ? EAGAIN : real(thread, attributes, start, arg);
}

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
