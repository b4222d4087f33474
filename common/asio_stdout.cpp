#include "common/asio_stdout.hpp"

#include "common/errors.hpp"

#include <cerrno>
#include <new>
#include <stdexcept>

#include <sys/epoll.h>
#include <unistd.h>

namespace poetry {

namespace asio = boost::asio;
using boost::system::error_code;

asio_stdout::asio_stdout(asio::io_context& io) : writable_(io)
{
  int set = ::epoll_create1(EPOLL_CLOEXEC);
  if (set < 0) throw std::runtime_error("epoll_create1: " + system_reason(errno));
  error_code ec;
  writable_.assign(set, ec);
  if (ec) {
    ::close(set);
    throw std::runtime_error("epoll set: " + ec.message());
  }
  // Level-triggered: the set stays readable for as long as stdout can take more.
  epoll_event event{};
  event.events = EPOLLOUT;
  watched_ = ::epoll_ctl(set, EPOLL_CTL_ADD, STDOUT_FILENO, &event) == 0;
  if (!watched_ && errno != EPERM) throw std::runtime_error("epoll_ctl stdout: " + system_reason(errno));
}

void asio_stdout::say(std::string line)
{
  outbox_.say(std::move(line));
  if (!watched_) {
    // A file or /dev/null: a write never blocks, so the line goes at once (or, if the write
    // fails, the log is lost and the outbox empties).
    while (!outbox_.empty()) outbox_.write_some(STDOUT_FILENO);
    return;
  }
  if (!waiting_) wait();
}

void asio_stdout::drain(std::chrono::milliseconds bound) { outbox_.drain(STDOUT_FILENO, bound); }

void asio_stdout::wait()
{
  writable_.async_wait(asio::posix::descriptor_base::wait_read, [this](const error_code& ec) { on_writable(ec); });
  waiting_ = true;  // only once the wait is really pending
}

void asio_stdout::on_writable(const error_code& ec)
{
  waiting_ = false;
  if (ec) return;                     // the set was closed: the server is ending
  outbox_.write_some(STDOUT_FILENO);  // a plain write(2) of whole lines, at most PIPE_BUF bytes
  try {
    if (!outbox_.empty()) wait();
  } catch (const std::bad_alloc&) {
    // No memory for the next wait: the lines wait for the next say() to ask again.
  }
}

}  // namespace poetry
