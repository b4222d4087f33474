#include "common/report.hpp"

#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

#include <unistd.h>

namespace poetry {
namespace {

// Writes all of text to fd; gives up at the first error (nobody is reading, or stdout is
// closed or full: nothing better to do).
void write_all(int fd, const std::string& text)
{
  const char* data = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    left -= static_cast<std::size_t>(n);
  }
}

// A server's status lines. A server must never wait for its stdout: a reader that stops
// reading (a paused `less`, a script that read the port and moved on) fills the pipe, and a
// blocking write would then stop the whole event loop, or a signal handler. So say() only queues
// the line, and one small helper thread -- plumbing, not part of any model's concurrency --
// writes the queue out with ordinary blocking writes. While stdout is stuck the queue stops at
// queue_limit bytes and later lines are dropped and counted; once stdout moves again, one line
// says how many were lost. A reader that has gone (EPIPE) or a closed stdout costs the log only.
class status_log {
public:
  // The one log, made on first use and never destroyed: at exit its thread may still be
  // stuck in a write, and the kernel ends it with the process.
  static status_log& get()
  {
    static status_log* log = new status_log;
    return *log;
  }

  void say(std::string line)
  {
    std::lock_guard lock(mutex_);
    if (!started_) start();
    if (queued_bytes_ + line.size() + 1 > queue_limit) {
      ++dropped_;
      return;
    }
    // Wake the writer only if it sleeps: while it writes, lines gather for its next round.
    bool writer_sleeps = queue_.empty() && !writing_;
    queued_bytes_ += line.size() + 1;
    queue_.push_back(std::move(line));
    if (writer_sleeps) changed_.notify_all();
  }

  // Waits until every queued line is written, or bound has passed.
  void flush(std::chrono::milliseconds bound)
  {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, bound, [&] { return queue_.empty() && dropped_ == 0 && !writing_; });
  }

private:
  static constexpr std::size_t queue_limit = 64 * 1024;

  // The writer thread takes no signals: they belong to the program (its loop, or exit_on_signals).
  void start()
  {
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, &old);
    std::thread([this] { run(); }).detach();
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    started_ = true;
  }

  // Writes everything queued so far in one go, then waits for more.
  void run()
  {
    std::unique_lock lock(mutex_);
    for (;;) {
      changed_.wait(lock, [&] { return !queue_.empty() || dropped_ > 0; });
      std::string text;
      for (const std::string& line : queue_) text += line + '\n';
      if (dropped_ > 0) text += "(" + std::to_string(dropped_) + " status lines dropped: stdout was not being read)\n";
      queue_.clear();
      queued_bytes_ = 0;
      dropped_ = 0;
      writing_ = true;
      lock.unlock();
      write_all(STDOUT_FILENO, text);  // this blocks this helper thread only
      lock.lock();
      writing_ = false;
      changed_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::string> queue_;
  std::size_t queued_bytes_ = 0;
  std::size_t dropped_ = 0;  // lines dropped since the last write
  bool writing_ = false;
  bool started_ = false;
};

void say(std::string line) { status_log::get().say(std::move(line)); }

// A client's status lines: one write(2) per line, so lines from several threads never mix.
void tell(std::string line)
{
  static std::mutex mutex;
  line += '\n';
  std::lock_guard lock(mutex);
  write_all(STDERR_FILENO, line);
}

std::string format_seconds(double seconds)
{
  char text[32];
  std::snprintf(text, sizeof text, "%.3fs", seconds);
  return text;
}

}  // namespace

void report_serving(const std::string& poem_file, unsigned port)
{
  say("Serving " + poem_file + " on port " + std::to_string(port) + ".");
}

void report_somebody(const std::string& peer) { say("Somebody at " + peer + " wants poetry!"); }

void report_sending(std::size_t bytes, const std::string& peer)
{
  say("Sending " + std::to_string(bytes) + " bytes to " + peer);
}

void report_sent(std::size_t bytes, const std::string& peer)
{
  say("Sent " + std::to_string(bytes) + " bytes to " + peer);
}

void report_lost(const std::string& peer, std::size_t sent, std::size_t total, const std::string& reason)
{
  say("Lost " + peer + " after " + std::to_string(sent) + " of " + std::to_string(total) + " bytes: " + reason);
}

void report_lost(const std::string& peer, const std::string& reason) { say("Lost " + peer + ": " + reason); }

void report_shutting_down()
{
  say("Shutting down.");
  // The last line: give a slow reader a moment to take it, never more (see status_log).
  status_log::get().flush(std::chrono::milliseconds(500));
}

void report_task_start(int task, const address& from)
{
  tell("Task " + std::to_string(task) + ": get poetry from: " + to_string(from));
}

void report_task_bytes(int task, std::size_t bytes, const address& from)
{
  tell("Task " + std::to_string(task) + ": " + std::to_string(bytes) + " bytes from " + to_string(from));
}

void report_task_done(int task, std::size_t bytes, const address& from, double seconds)
{
  tell("Task " + std::to_string(task) + ": got " + std::to_string(bytes) + " bytes of poetry from " + to_string(from) +
       " in " + format_seconds(seconds));
}

void report_task_failed(int task, const address& from, const std::string& reason, std::size_t got)
{
  std::string line = "Task " + std::to_string(task) + ": failed to get poetry from " + to_string(from);
  if (got > 0) line += " after " + std::to_string(got) + " bytes";
  tell(line + ": " + reason);
}

int report_summary(int poems, int failed, double seconds)
{
  std::string line =
    "Got " + std::to_string(poems) + (poems == 1 ? " poem" : " poems") + " in " + format_seconds(seconds);
  if (failed > 0) line += " (" + std::to_string(failed) + " failed)";
  tell(line);
  return failed == 0 ? 0 : 1;
}

}  // namespace poetry
