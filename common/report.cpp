#include "common/report.hpp"

#include <cerrno>
#include <cstdio>
#include <mutex>

#include <unistd.h>

namespace poetry {
namespace {

// One write(2) per line: whole lines, in order, even from several threads, and no buffer
// left unflushed if the process ends at once.
void write_line(int fd, std::string line)
{
  static std::mutex mutex;
  line += '\n';
  std::lock_guard lock(mutex);
  const char* data = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nobody is reading our output: nothing better to do
    data += n;
    left -= static_cast<std::size_t>(n);
  }
}

void say(std::string line) { write_line(STDOUT_FILENO, std::move(line)); }
void tell(std::string line) { write_line(STDERR_FILENO, std::move(line)); }

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
  tell("Task " + std::to_string(task) + ": got " + std::to_string(bytes) + " bytes of poetry from " +
       to_string(from) + " in " + format_seconds(seconds));
}

void report_task_failed(int task, const address& from, const std::string& reason)
{
  tell("Task " + std::to_string(task) + ": failed to get poetry from " + to_string(from) + ": " + reason);
}

int report_summary(int poems, int failed, double seconds)
{
  std::string line = "Got " + std::to_string(poems) + (poems == 1 ? " poem" : " poems") + " in " +
                     format_seconds(seconds);
  if (failed > 0) line += " (" + std::to_string(failed) + " failed)";
  tell(line);
  return failed == 0 ? 0 : 1;
}

}  // namespace poetry
