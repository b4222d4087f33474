// The lines servers print on stdout and clients print on stderr. Each line is written whole,
// so lines from several threads never mix and scripts can read them live. How a server's lines
// wait for its stdout is part of its model, so each model says where they go (report_to):
//   blocking, threaded  a blocking write(2) per line, from the thread that has something to say
//                       (the default): a stdout nobody reads stalls that thread, as any write would;
//   select, Asio        a status_outbox, which queues them; the model's loop waits until stdout
//                       can take more (select, the Asio reactor) and then writes, never blocking.
// Nothing here starts a thread or waits on its own.
#pragma once

#include "common/address.hpp"

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace poetry {

// Where a server's status lines go (see above).
class status_sink {
public:
  virtual ~status_sink() = default;
  virtual void say(std::string line) = 0;  // line without its newline
};

// From now on, every server line goes to sink (null: back to a blocking write per line).
void report_to(status_sink* sink);

// For the signal handler of blocking and threaded (common/signals.cpp): from now on the default
// sink writes no line, and a line another thread is writing is finished first (half a second at
// most), so that "Shutting down." can be the last line. Async-signal-safe: atomics and poll.
void end_status_lines() noexcept;

// Status lines waiting for a stdout that must never block the loop (select and the Asio models).
// The loop waits until stdout is writable, then calls write_some(). While stdout is stalled the
// outbox holds at most limit bytes; later lines are dropped whole and counted, and one line
// "(N status lines dropped)" takes their place once there is room again. Lines are never torn
// or glued: each write(2) takes whole lines, at most PIPE_BUF bytes, which a pipe that select or
// poll calls writable takes at once and whole. A stdout that fails for good (reader gone,
// closed) costs the log only: the outbox empties and drops every later line.
class status_outbox : public status_sink {
public:
  static constexpr std::size_t limit = 64 * 1024;

  void say(std::string line) override;
  bool empty() const { return written_ == queued_.size(); }
  // One write(2) of the oldest whole lines to fd. Call it when the loop says fd is writable.
  void write_some(int fd);
  // When the loop has ended, after its last line ("Shutting down."): gives fd at most bound to
  // take what is left (poll(2), then write_some). Half-way through, lines still waiting before
  // the last one are dropped and counted, so that a slow reader still gets the last line.
  void drain(int fd, std::chrono::milliseconds bound);

private:
  void note_dropped();
  void drop_all_but_the_last_line();

  std::string queued_;       // whole lines, newline-terminated
  std::size_t written_ = 0;  // bytes of queued_ already written
  std::size_t dropped_ = 0;  // lines dropped since the last note
  bool broken_ = false;      // stdout failed for good
};

// Server lines (stdout).
void report_serving(const std::string& poem_file, unsigned port);  // always the first line
void report_somebody(const std::string& peer);
void report_sending(std::size_t bytes, const std::string& peer);
void report_sent(std::size_t bytes, const std::string& peer);
// The Lost lines never throw: out of memory, the line is dropped and the client is lost all the same.
void report_lost(std::string_view peer, std::size_t sent, std::size_t total, std::string_view reason) noexcept;
void report_lost(const endpoint& peer, std::size_t sent, std::size_t total, std::string_view reason) noexcept;
void report_lost(const sockaddr* peer, std::size_t sent, std::size_t total, std::string_view reason) noexcept;
void report_lost(std::string_view peer, std::string_view reason) noexcept;  // "Lost PEER: reason"
void report_shutting_down();  // the last line (blocking and threaded: said by the signal handler)

// Client lines (stderr).
void report_task_start(int task, const address& from);
void report_task_bytes(int task, std::size_t bytes, const address& from);
void report_task_done(int task, std::size_t bytes, const address& from, double seconds);
// "failed to get poetry from ADDRESS[ after N bytes]: reason" (got: the bytes that had arrived).
void report_task_failed(int task, const address& from, const std::string& reason, std::size_t got = 0);
// The client's last line; returns its exit status: 0 if every poem arrived, else 1.
int report_summary(int poems, int failed, double seconds);

// Seconds since a start point, for the client's timings.
class stopwatch {
public:
  stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace poetry
