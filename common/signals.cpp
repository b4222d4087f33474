#include "common/signals.hpp"

#include "common/report.hpp"

#include <poll.h>
#include <pthread.h>
#include <unistd.h>

namespace poetry {
namespace {

// Only async-signal-safe calls: poll, write, _exit (and atomics).
void say_shutting_down_and_exit(int)
{
  static const char line[] = "Shutting down.\n";
  end_status_lines();  // no other thread's line after ours
  pollfd out{STDOUT_FILENO, POLLOUT, 0};
  if (::poll(&out, 1, 500) == 1 && (out.revents & POLLOUT) != 0) {
    // A pipe that poll calls writable takes this line whole, at once; else it is lost.
    [[maybe_unused]] ssize_t n = ::write(STDOUT_FILENO, line, sizeof line - 1);
  }
  ::_exit(0);
}

sigset_t as_set(const std::vector<int>& signals)
{
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals) sigaddset(&set, s);
  return set;
}

}  // namespace

std::vector<int> stop_signals()
{
  std::vector<int> signals;
  for (int s : {SIGINT, SIGTERM}) {
    struct sigaction now {};
    if (::sigaction(s, nullptr, &now) == 0 && now.sa_handler == SIG_IGN) continue;
    signals.push_back(s);
  }
  return signals;
}

void exit_on_signals()
{
  std::vector<int> signals = stop_signals();
  struct sigaction action {};
  action.sa_handler = say_shutting_down_and_exit;
  action.sa_mask = as_set(signals);  // the other one waits: one handler at a time
  for (int s : signals) ::sigaction(s, &action, nullptr);
}

stop_signals_blocked::stop_signals_blocked()
{
  sigset_t set = as_set(stop_signals());
  ::pthread_sigmask(SIG_BLOCK, &set, &old_);
}

stop_signals_blocked::~stop_signals_blocked() { ::pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

}  // namespace poetry
