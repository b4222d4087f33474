#include "common/report.hpp"

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <mutex>
#include <string_view>

#include <poll.h>
#include <unistd.h>

namespace poetry {
namespace {

// Writes all of text to fd as one blocking write would: an inherited stdout may be in
// non-blocking mode (a flag this program shares with the shell and must not change), so EAGAIN
// waits in poll(2) until it can take more. Gives up at the first real error (nobody is reading,
// or stdout is closed or full: the log is lost, not the program).
void write_all(int fd, const std::string& text)
{
  const char* data = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd out{fd, POLLOUT, 0};
      ::poll(&out, 1, -1);
      continue;
    }
    if (n <= 0) return;
    data += n;
    left -= static_cast<std::size_t>(n);
  }
}

// Set by end_status_lines(); the threads writing a line meanwhile (this thread included, if
// the signal interrupted it there).
std::atomic<bool> lines_ended{false};
std::atomic<int> lines_being_written{0};
thread_local bool writing_a_line = false;

// The default sink: a blocking write per line (blocking, threaded). The lock keeps one thread's
// line whole while another thread writes its own.
class blocking_stdout : public status_sink {
public:
  void say(std::string line) override
  {
    line += '\n';
    std::lock_guard lock(mutex_);
    ++lines_being_written;  // before looking at lines_ended: end_status_lines() then waits for us
    writing_a_line = true;
    if (!lines_ended) write_all(STDOUT_FILENO, line);  // this blocks while stdout is full
    writing_a_line = false;
    --lines_being_written;
  }

private:
  std::mutex mutex_;
};

blocking_stdout default_sink;
status_sink* sink = &default_sink;

void say(std::string line) { sink->say(std::move(line)); }

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

void report_to(status_sink* to) { sink = to ? to : &default_sink; }

void end_status_lines() noexcept
{
  lines_ended = true;
  int mine = writing_a_line ? 1 : 0;  // a line this thread was writing cannot finish before we return
  for (int waited = 0; lines_being_written > mine && waited < 500; ++waited) ::poll(nullptr, 0, 1);
}

void status_outbox::say(std::string line)
{
  if (broken_) return;
  note_dropped();
  if (dropped_ > 0 || queued_.size() - written_ + line.size() + 1 > limit) {
    ++dropped_;
    return;
  }
  queued_ += line;
  queued_ += '\n';
}

// Once there is room again, one line says how many were dropped, where they would have been.
void status_outbox::note_dropped()
{
  if (dropped_ == 0) return;
  std::string note = "(" + std::to_string(dropped_) + " status lines dropped)\n";
  if (queued_.size() - written_ + note.size() > limit) return;
  queued_ += note;
  dropped_ = 0;
}

void status_outbox::write_some(int fd)
{
  std::string_view rest = std::string_view(queued_).substr(written_);
  if (rest.size() > PIPE_BUF) {
    // Whole lines only, up to PIPE_BUF bytes; a single longer line goes in pieces.
    std::size_t end = rest.rfind('\n', PIPE_BUF - 1);
    rest = rest.substr(0, end == std::string_view::npos ? PIPE_BUF : end + 1);
  }
  ssize_t n = ::write(fd, rest.data(), rest.size());  // select or the reactor said it will not block
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n < 0) {
    // The reader has gone, or stdout is closed: the log is lost, not the server.
    broken_ = true;
    queued_.clear();
    written_ = 0;
    return;
  }
  written_ += static_cast<std::size_t>(n);
  if (written_ == queued_.size()) {
    queued_.clear();
    written_ = 0;
  } else if (written_ >= limit) {
    queued_.erase(0, written_);
    written_ = 0;
  }
  note_dropped();
}

void status_outbox::drain(int fd, std::chrono::milliseconds bound)
{
  auto start = std::chrono::steady_clock::now();
  note_dropped();
  bool trimmed = false;
  while (!empty()) {
    auto now = std::chrono::steady_clock::now();
    if (!trimmed && now - start >= bound / 2) {
      drop_all_but_the_last_line();
      trimmed = true;
    }
    auto until = trimmed ? start + bound : start + bound / 2;
    auto left = std::chrono::ceil<std::chrono::milliseconds>(until - now);
    pollfd out{fd, POLLOUT, 0};
    if (left.count() > 0 && ::poll(&out, 1, static_cast<int>(left.count())) > 0) write_some(fd);
    else if (trimmed) return;  // time is up
  }
}

void status_outbox::drop_all_but_the_last_line()
{
  // Keep what is begun (a line partly written must end), and the last line.
  std::size_t begun = written_;
  if (begun > 0 && queued_[begun - 1] != '\n') begun = queued_.find('\n', begun) + 1;
  std::size_t last = queued_.rfind('\n', queued_.size() - 2);
  last = last == std::string::npos ? 0 : last + 1;
  if (last <= begun) return;
  std::size_t lines = 0;
  for (std::size_t i = begun; i < last; ++i) lines += queued_[i] == '\n';
  std::string last_line = queued_.substr(last);
  queued_.erase(begun);
  dropped_ += lines;
  note_dropped();
  queued_ += last_line;
}

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

void report_lost(std::string_view peer, std::size_t sent, std::size_t total, std::string_view reason) noexcept
{
  try {
    say("Lost " + std::string(peer) + " after " + std::to_string(sent) + " of " + std::to_string(total) +
        " bytes: " + std::string(reason));
  } catch (...) {
    // Out of memory for the line itself: the client is lost all the same.
  }
}

void report_lost(const endpoint& peer, std::size_t sent, std::size_t total, std::string_view reason) noexcept
{
  report_lost(peer.get(), sent, total, reason);
}

void report_lost(const sockaddr* peer, std::size_t sent, std::size_t total, std::string_view reason) noexcept
{
  try {
    report_lost(to_string(peer), sent, total, reason);
  } catch (...) {
    // As above.
  }
}

void report_lost(std::string_view peer, std::string_view reason) noexcept
{
  try {
    say("Lost " + std::string(peer) + ": " + std::string(reason));
  } catch (...) {
    // As above.
  }
}

void report_shutting_down() { say("Shutting down."); }

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
