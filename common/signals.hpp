// SIGINT and SIGTERM, the signals that stop a server. How a model sees them is part of its
// lesson (a handler in blocking and threaded, signalfd in select's set, asio::signal_set in the
// Asio models); what every model shares is here.
#pragma once

#include <vector>

#include <signal.h>

namespace poetry {

// SIGINT and SIGTERM, less any that this program was started with ignored (SIG_IGN: a
// background job's SIGINT, `nohup`): a signal ignored at start stays ignored.
std::vector<int> stop_signals();

// For blocking and threaded: a handler for stop_signals() that prints "Shutting down." (giving
// stdout half a second at most to take it) and ends the process at once with status 0; the
// kernel then closes every socket, resetting the unfinished ones. It runs on whichever thread
// the signal interrupts and does only what a handler may (poll, write, _exit: no lock, no
// allocation), so it is safe wherever that thread was.
void exit_on_signals();

// While one of these lives, the calling thread blocks stop_signals(); a thread started
// meanwhile inherits that, so a signal is taken by a thread that does not block it (threaded:
// the accepting thread, which then accepts no one else).
class stop_signals_blocked {
public:
  stop_signals_blocked();
  ~stop_signals_blocked();
  stop_signals_blocked(const stop_signals_blocked&) = delete;
  stop_signals_blocked& operator=(const stop_signals_blocked&) = delete;

private:
  sigset_t old_;
};

}  // namespace poetry
