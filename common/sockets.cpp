#include "common/sockets.hpp"

#include "common/errors.hpp"

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <utility>

#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace poetry {

void unique_fd::reset(int fd)
{
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

bool unusable_address(int error) { return error == EADDRNOTAVAIL || error == EAFNOSUPPORT || error == EPROTONOSUPPORT; }

bool retry_accept_at_once(int error)
{
  switch (error) {
  case EINTR:
  case ECONNABORTED:
  case EPROTO:
  case EPERM:
  case ENETDOWN:
  case ENOPROTOOPT:
  case EHOSTDOWN:
  case ENONET:
  case EHOSTUNREACH:
  case EOPNOTSUPP:
  case ENETUNREACH:
    return true;
  default:
    return false;
  }
}

unique_fd listen_on(const std::string& iface, std::uint16_t port)
{
  int error = EADDRNOTAVAIL;
  for (const endpoint& e : resolve_listen(iface, port)) {
    unique_fd fd(::socket(e.family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
      error = errno;
      continue;
    }
    int on = 1, off = 0;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (e.family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    // Every accepted socket inherits the mark from here, so it is reset-on-close from the moment
    // it exists: no signal between accept and a later setsockopt can end it like a finished poem.
    set_reset_on_close(fd.get(), true);
    if (::bind(fd.get(), e.get(), e.length) == 0 && ::listen(fd.get(), longest_listen_queue) == 0) return fd;
    error = errno;
    // Only an address this machine cannot use sends us on to the next one; a port in use
    // must not quietly become a server on the other address family.
    if (!unusable_address(error)) break;
  }
  throw std::runtime_error("cannot listen on " + to_string(address{iface, port}) + ": " + system_reason(error));
}

std::uint16_t local_port(int fd)
{
  sockaddr_storage storage{};
  socklen_t length = sizeof storage;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length);
  if (storage.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&storage)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&storage)->sin_port);
}

static void set_timeout(int fd, int option, std::chrono::nanoseconds timeout)
{
  // Rounded up, to at least a microsecond: a zero timeval would mean "no timeout at all".
  auto micros = std::max<long long>(1, std::chrono::ceil<std::chrono::microseconds>(timeout).count());
  timeval tv{static_cast<time_t>(micros / 1000000), static_cast<suseconds_t>(micros % 1000000)};
  ::setsockopt(fd, SOL_SOCKET, option, &tv, sizeof tv);
}

unique_fd connect_to(const address& where, std::optional<std::chrono::nanoseconds> timeout)
{
  int error = EADDRNOTAVAIL;
  for (const endpoint& e : resolve(where.host, where.port)) {
    unique_fd fd(::socket(e.family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
      error = errno;
      continue;
    }
    if (timeout) {
      set_timeout(fd.get(), SO_SNDTIMEO, *timeout);  // Linux applies this one to connect()
      set_timeout(fd.get(), SO_RCVTIMEO, *timeout);
    }
    int rc;
    do rc = ::connect(fd.get(), e.get(), e.length);
    while (rc != 0 && errno == EINTR);
    if (rc == 0) return fd;
    error = errno == EINPROGRESS ? ETIMEDOUT : errno;
  }
  throw std::runtime_error(system_reason(error));
}

void set_reset_on_close(int fd, bool reset)
{
  linger option{reset ? 1 : 0, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, sizeof option);
}

int send_all(int fd, std::string_view data, std::size_t& sent)
{
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    data.remove_prefix(static_cast<std::size_t>(n));
    sent += static_cast<std::size_t>(n);
  }
  return 0;
}

void close_gracefully(unique_fd fd)
{
  set_reset_on_close(fd.get(), false);
  ::shutdown(fd.get(), SHUT_WR);
  std::size_t unacknowledged = unacknowledged_bytes(fd.get());
  set_timeout(fd.get(), SO_RCVTIMEO, linger_time);
  auto deadline = std::chrono::steady_clock::now() + linger_time;
  char discard[4096];
  for (;;) {
    if (std::chrono::steady_clock::now() >= deadline) {
      if (linger_may_end(fd.get(), unacknowledged)) break;
      deadline = std::chrono::steady_clock::now() + linger_time;  // it is still reading
    }
    ssize_t n = ::recv(fd.get(), discard, sizeof discard, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;  // EAGAIN: timed out
    if (n <= 0) break;  // the client closed, or vanished
  }
}

bool linger_may_end(int fd, std::size_t& unacknowledged)
{
  std::size_t before = std::exchange(unacknowledged, unacknowledged_bytes(fd));
  return unacknowledged == 0 || unacknowledged >= before;
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

std::size_t unacknowledged_bytes(int fd)
{
  int bytes = 0;
  if (::ioctl(fd, SIOCOUTQ, &bytes) != 0 || bytes < 0) return 0;
  return static_cast<std::size_t>(bytes);
}

}  // namespace poetry
