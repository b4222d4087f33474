// The --pull dialogue, the tutorial's last one: the client asks for each chunk with a request,
// "poems", sent on connecting and again after each piece of data it receives; the server
// answers every complete request with one chunk, and half-closes after the last. And the end of
// a poem, which both dialogues' servers share.
#pragma once

#include "asio_protocol/protocol.hpp"
#include "common/options.hpp"
#include "common/report.hpp"
#include "common/sockets.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace poetry {

constexpr std::string_view pull_request = "poems";

// Waits for linger_time, then closes the connection if the client has all the poem or stopped
// reading (linger_may_end), else waits again.
inline void linger(proto::Transport& transport, std::size_t& unacknowledged)
{
  transport.call_later(linger_time, [&transport, &unacknowledged] {
    if (linger_may_end(transport.native_handle(), unacknowledged)) return transport.close();
    linger(transport, unacknowledged);  // it is still taking the poem in
  });
}

// The end of a poem, in both dialogues' servers: half-close, then keep reading until the client
// closes (both directions have then ended, and the Transport closes) or the linger ends.
// unacknowledged: the Protocol's own, for linger_may_end.
inline void end_of_poem(proto::Transport& transport, std::size_t& unacknowledged)
{
  set_reset_on_close(transport.native_handle(), false);
  transport.write_eof();
  unacknowledged = unacknowledged_bytes(transport.native_handle());
  linger(transport, unacknowledged);
}

// Counts the complete requests in a stream that TCP may split ("po" + "ems") or join
// ("poemspoems") anywhere. Bytes that are not part of a request are ignored.
class request_counter {
public:
  // How many requests these bytes complete.
  std::size_t count(std::string_view bytes)
  {
    std::size_t complete = 0;
    for (char c : bytes) {
      // A mismatch can only restart a request at its first letter: "poems" has no other 'p'.
      if (c == pull_request[matched_]) ++matched_;
      else matched_ = c == pull_request[0] ? 1 : 0;
      if (matched_ == pull_request.size()) {
        ++complete;
        matched_ = 0;
      }
    }
    return complete;
  }

private:
  std::size_t matched_ = 0;  // how much of a request the bytes so far end with
};

// The --pull server: like PoetryServerProtocol (server.cpp), a chunk at most every delay and the
// graceful close after the last, but each chunk also waits for a request. A client that
// half-closes has asked for all it will: every request it sent is answered, and then, if the
// poem is not complete, the server closes with a reset, so the client can tell the poem was cut
// short. Ownership: the Transport owns this protocol and outlives it.
class PullPoetryServerProtocol : public proto::Protocol {
public:
  PullPoetryServerProtocol(const std::string& poem, const server_options& options) : poem_(poem), options_(options) {}

  void connection_made(proto::Transport& transport) override
  {
    transport_ = &transport;
    // Until the last byte, closing means "cut short".
    set_reset_on_close(transport.native_handle(), true);
    report_somebody(transport.peer());
    due_ = std::chrono::steady_clock::now();  // the first chunk is due at once
    do_next();
  }

  // Each complete request earns one chunk.
  void data_received(std::string_view data) override
  {
    requests_ += counter_.count(data);
    do_write();
  }

  // The client will ask for nothing more: answer what it asked for (see do_write). After the
  // last byte, its end of stream is the end we were waiting for: the Transport closes.
  bool eof_received() override
  {
    client_done_ = true;
    if (sent_ < poem_.size()) do_write();
    return true;
  }

  // The chunk is in the kernel: on to the next.
  void buffer_drained() override
  {
    sent_ = next_;
    do_next();
  }

  // What was handed to the kernel: all but what the Transport still held.
  void connection_lost(const boost::system::error_code& reason) override
  {
    sent_ = next_ - transport_->get_write_buffer_size();
    if (sent_ < poem_.size() && !cut_short_) report_lost(transport_->peer(), sent_, poem_.size(), reason.message());
  }

private:
  // What follows a chunk: the next one when it is due, or, when the poem is all sent, the
  // graceful close.
  void do_next()
  {
    if (sent_ == poem_.size()) {
      report_sent(sent_, transport_->peer());
      return do_linger();
    }
    if (sent_ == 0 || options_.delay == std::chrono::nanoseconds::zero()) return ready();
    do_wait();
  }

  // Waits for the delay without blocking (see PoetryServerProtocol::do_wait).
  void do_wait()
  {
    due_ = std::max(due_ + options_.delay, std::chrono::steady_clock::now());
    transport_->call_at(due_, [this] { ready(); });
  }

  // The next chunk may go as soon as the client asks for it.
  void ready()
  {
    ready_ = true;
    do_write();
  }

  // Sends one chunk, if its time has come and the client has asked for it; or, when the client
  // will ask for nothing more and has its answers, ends the poem short.
  void do_write()
  {
    if (cut_short_) return;
    if (client_done_ && requests_ == 0 && sent_ == next_) return do_cut_short();
    if (!ready_ || requests_ == 0) return;
    ready_ = false;
    --requests_;
    std::string_view chunk = std::string_view(poem_).substr(next_, options_.num_bytes);
    if (!options_.quiet) report_sending(chunk.size(), transport_->peer());
    transport_->write_borrowed(chunk);
    next_ += chunk.size();
  }

  // Every request is answered (and in the kernel) but the poem is not complete: close, with
  // the reset that tells the client so. A reset drops what the kernel has not delivered yet, so
  // first wait (a few milliseconds at a time, at most the linger time) until the client has
  // acknowledged every byte.
  void do_cut_short()
  {
    if (!cut_short_) {
      cut_short_ = true;
      report_lost(transport_->peer(), sent_, poem_.size(), "the client asked for no more");
      give_up_ = std::chrono::steady_clock::now() + linger_time;
    }
    if (unacknowledged_bytes(transport_->native_handle()) == 0 || std::chrono::steady_clock::now() >= give_up_)
      return transport_->close();
    transport_->call_later(delivery_check, [this] { do_cut_short(); });
  }

  // The end of the poem: the graceful close (end_of_poem, above).
  void do_linger() { end_of_poem(*transport_, unacknowledged_); }

  const std::string& poem_;
  const server_options& options_;
  proto::Transport* transport_ = nullptr;
  std::size_t sent_ = 0;                       // handed to the kernel
  std::size_t next_ = 0;                       // where the next chunk starts
  std::chrono::steady_clock::time_point due_;  // when the next chunk is due
  bool ready_ = false;                         // it is due
  std::size_t requests_ = 0;                   // requests not yet answered
  request_counter counter_;
  bool client_done_ = false;                       // the client half-closed: no more requests
  bool cut_short_ = false;                         // we are closing before the last byte, and said so
  std::chrono::steady_clock::time_point give_up_;  // ... waiting for delivery until then
  std::size_t unacknowledged_ = 0;                 // lingering: for end_of_poem

  static constexpr std::chrono::milliseconds delivery_check{5};
};

}  // namespace poetry
