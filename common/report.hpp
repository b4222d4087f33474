// The lines servers print on stdout and clients print on stderr. Each line is written whole,
// so lines from several threads never mix and scripts can read them live. A server never
// waits for its stdout: its lines go out through a small writer thread, and are dropped (then
// counted in one line) while nobody reads them; see report.cpp.
#pragma once

#include "common/address.hpp"

#include <chrono>
#include <cstddef>
#include <string>

namespace poetry {

// Server lines (stdout).
void report_serving(const std::string& poem_file, unsigned port);  // always the first line
void report_somebody(const std::string& peer);
void report_sending(std::size_t bytes, const std::string& peer);
void report_sent(std::size_t bytes, const std::string& peer);
void report_lost(const std::string& peer, std::size_t sent, std::size_t total, const std::string& reason);
void report_lost(const std::string& peer, const std::string& reason);  // "Lost PEER: reason"
void report_shutting_down();  // the last line: waits half a second at most for it to be written

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
