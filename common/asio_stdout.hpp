// The Asio servers' stdout: their status lines wait in a status_outbox until Asio's reactor says
// stdout can take more, so a stdout that nobody reads never blocks the one thread.
//
// Why the reactor does not watch descriptor 1 itself: in Boost 1.74 every operation on a
// posix::stream_descriptor, async_wait included, first puts the descriptor in non-blocking mode,
// and O_NONBLOCK belongs to the open file, which the shell and everyone else writing to that pipe
// or terminal share: it must stay as we found it. So the reactor watches an epoll set of our own,
// which holds stdout and is readable while stdout is writable; that descriptor is nobody else's,
// and Asio may set what it likes on it. A regular file or /dev/null cannot be in an epoll set
// (EPERM) and never blocks: lines then go out at once.
#pragma once

#include "common/asio.hpp"
#include "common/report.hpp"

#include <chrono>
#include <string>

namespace poetry {

class asio_stdout : public status_sink {
public:
  // Destroy it before io (it closes its epoll set; stdout stays open).
  explicit asio_stdout(boost::asio::io_context& io);
  asio_stdout(const asio_stdout&) = delete;
  asio_stdout& operator=(const asio_stdout&) = delete;

  // Queues the line and, unless a wait is pending already, asks the reactor to say when stdout
  // can take it. Throws std::bad_alloc if there is no memory for the line or the wait.
  void say(std::string line) override;
  // When the loop has ended: stdout gets at most bound to take what is left.
  void drain(std::chrono::milliseconds bound);

private:
  void wait();
  void on_writable(const boost::system::error_code& ec);

  status_outbox outbox_;
  boost::asio::posix::stream_descriptor writable_;  // our epoll set: readable while stdout is writable
  bool watched_ = false;                            // stdout is in the set (not a file, not /dev/null)
  bool waiting_ = false;                            // an async_wait is pending
};

}  // namespace poetry
