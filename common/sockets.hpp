// Socket plumbing for the models written with system calls (blocking, threaded, select).
// Nothing here decides when a call may block; that is each model's lesson.
#pragma once

#include "common/address.hpp"

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace poetry {

// Owns one file descriptor and closes it once.
class unique_fd {
public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept
  {
    reset(std::exchange(other.fd_, -1));
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset(int fd = -1);

private:
  int fd_ = -1;
};

// How long a server keeps reading (and discarding) after its last byte, waiting for the
// client to close first, so that unread client input never turns the close into a reset. A
// client still taking in the poem when it passes is given more, as long as it goes on (see
// linger_may_end).
constexpr std::chrono::seconds linger_time{1};

// Asked each time linger_time passes and the client has not closed: may the server close now?
// Yes when the client's TCP has acknowledged every byte (then not even a reset can take a byte
// from it), or when it acknowledged none since the last time asked, since it stopped reading;
// no while it is still taking the poem in. unacknowledged holds the count the last time asked
// (unacknowledged_bytes at the half-close, the first time), and is brought up to date.
bool linger_may_end(int fd, std::size_t& unacknowledged);

// True for the bind errors that mean "this machine has no such address" (try the next one),
// as opposed to, say, "port in use" (report it).
bool unusable_address(int error);

// True for the accept errors that accept(2) says to retry at once: the client left before we
// accepted it, or a network error on its connection. Any other (out of descriptors or memory,
// most likely) calls for a pause before trying again, or the server would spin.
bool retry_accept_at_once(int error);

// How long every server stops accepting after accept fails for want of descriptors or memory:
// the listener stays ready, so trying again at once would spin.
constexpr std::chrono::milliseconds accept_pause{100};

// The length of the accept queue every server asks listen(2) for: the longest the kernel allows.
// Linux cuts what is asked to net.core.somaxconn (4,096 by default, more where it was raised),
// so asking for the largest int gets exactly that; SOMAXCONN (4,096 in glibc) would cap it.
constexpr int longest_listen_queue = std::numeric_limits<int>::max();

// A blocking listening socket on iface:port, with SO_REUSEADDR (restartable at once),
// dual-stack for "::", the longest accept queue, and marked reset-on-close, which every accepted
// socket inherits. Throws std::runtime_error("cannot listen on IFACE:PORT: reason").
unique_fd listen_on(const std::string& iface, std::uint16_t port);

// The port a socket is bound to.
std::uint16_t local_port(int fd);

// Connects to each address of where in turn until one answers (a blocking connect).
// With a timeout, connect and every later recv give up after that long without progress.
// Throws std::runtime_error with the reason of the last failure.
unique_fd connect_to(const address& where, std::optional<std::chrono::nanoseconds> timeout);

// Until the poem is complete, closing a server's connection resets it (SO_LINGER 0): a client
// then sees "Connection reset by peer" and can tell a poem cut short -- by a lost thread, a
// crash, Ctrl-C -- from a complete one, which ends with a normal end of stream. Set on the
// listening socket, the mark is on every accepted socket from birth (Linux copies it).
void set_reset_on_close(int fd, bool reset);

// Sends all of data with blocking send() calls, never raising SIGPIPE, adding to sent each
// byte handed to the kernel. Returns 0 or an errno.
int send_all(int fd, std::string_view data, std::size_t& sent);
inline int send_all(int fd, std::string_view data)
{
  std::size_t sent = 0;
  return send_all(fd, data, sent);
}

// The end of a poem on a blocking socket: no more reset on close, half-close, discard what the client sent until it
// closes or the linger may end (linger_may_end, each linger_time), then close.
void close_gracefully(unique_fd fd);

void set_nonblocking(int fd);

// Bytes sent on a socket that the peer has not acknowledged yet, and those not sent yet
// (SIOCOUTQ); 0 if the system cannot tell.
std::size_t unacknowledged_bytes(int fd);

}  // namespace poetry
