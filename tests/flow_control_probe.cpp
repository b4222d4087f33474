// Exercise 5.2's probe of the layer's write flow control (scripts/check 5.2 builds and runs it;
// it compiles only once the layer has set_write_buffer_limits, pause_writing and resume_writing).
// Two connections to itself, whose Protocols count the calls the layer makes:
//   A, with marks of 100,000 and 20,000 bytes: writes 1 MB at once, twice (each time after the
//     buffer drained). Each burst: one pause_writing above the high mark, then one
//     resume_writing at the low mark or below, in that order.
//   B, with the layer's own marks (64 KiB and 16 KiB): 60,000 bytes (no pause), then 70,000 (one
//     pause and one resume), then 1 MB and close().
// Neither gets a call after connection_lost. Prints "ok" and exits 0, or one line saying what
// the layer did wrong and exits 1.
#include "asio_protocol/protocol.hpp"
#include "common/asio.hpp"

#include <array>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>

namespace {

namespace asio = boost::asio;
using proto::Protocol;
using proto::Transport;

[[noreturn]] void fail(const std::string& why)
{
  std::cout << why << std::endl;
  std::exit(1);
}

// One connection's Protocol: writes bursts, and notes each pause and resume with the buffer's
// size at that moment.
class probe : public Protocol {
public:
  probe(asio::io_context& io, std::string name, bool own_marks) : io_(io), name_(std::move(name)), own_marks_(own_marks)
  {
  }

  void connection_made(Transport& transport) override
  {
    transport_ = &transport;
    if (own_marks_) transport.set_write_buffer_limits(100'000, 20'000);
    burst(own_marks_ ? 1'000'000 : 60'000);
  }

  void pause_writing() override
  {
    if (lost_) fail(name_ + ": pause_writing was called after connection_lost");
    if (paused_)
      fail(name_ + ": pause_writing was called twice in a row, without a resume_writing between: " +
           "once per crossing of the high-water mark");
    std::size_t size = transport_->get_write_buffer_size();
    if (size <= high())
      fail(name_ + ": pause_writing came with " + std::to_string(size) + " bytes buffered, not above the high-water " +
           "mark of " + std::to_string(high()));
    paused_ = true;
    ++pauses_;
  }

  void resume_writing() override
  {
    if (lost_) fail(name_ + ": resume_writing was called after connection_lost");
    if (!paused_) fail(name_ + ": resume_writing was called without a pause_writing before it");
    std::size_t size = transport_->get_write_buffer_size();
    if (size > low())
      fail(name_ + ": resume_writing came with " + std::to_string(size) +
           " bytes still buffered, above the low-water " + "mark of " + std::to_string(low()));
    paused_ = false;
    ++resumes_;
  }

  // The next step, once this handler of the layer has finished (it may call resume_writing after
  // buffer_drained).
  void buffer_drained() override
  {
    asio::post(io_, [this] { step(); });
  }

  void connection_lost(const proto::error_code& reason) override
  {
    if (reason) fail(name_ + ": the connection was lost: " + reason.message());
    lost_ = true;
    done = true;
  }

  bool done = false;

private:
  void step()
  {
    if (lost_) return;
    ++drained_;
    if (own_marks_) {
      // After each 1 MB burst: one crossing each way.
      if (pauses_ != drained_ || resumes_ != drained_)
        fail(name_ + ": after " + std::to_string(drained_) + " burst(s) of 1 MB with a high-water mark of 100,000 " +
             "bytes, pause_writing was called " + std::to_string(pauses_) + " times and resume_writing " +
             std::to_string(resumes_) + " times: once each per burst");
      if (drained_ == 1) burst(1'000'000);
      else transport_->close();
      return;
    }
    if (drained_ == 1) {
      if (pauses_ != 0)
        fail(name_ + ": 60,000 bytes buffered, and pause_writing was called: the default high-water mark is " +
             "64 KiB (65,536 bytes)");
      burst(70'000);
    } else if (drained_ == 2) {
      if (pauses_ != 1 || resumes_ != 1)
        fail(name_ + ": 70,000 bytes buffered with the default marks (64 KiB, 16 KiB), and pause_writing was " +
             "called " + std::to_string(pauses_) + " times and resume_writing " + std::to_string(resumes_) +
             " times: once each");
      burst(1'000'000);
      transport_->close();
    }
  }

  std::size_t high() const { return own_marks_ ? 100'000 : 64 * 1024; }
  std::size_t low() const { return own_marks_ ? 20'000 : 16 * 1024; }

  // Writes size bytes in pieces of 9,999, all before returning to the loop.
  void burst(std::size_t size)
  {
    std::string piece(9'999, 'x');  // never exactly on a mark
    for (std::size_t written = 0; written < size; written += piece.size())
      transport_->write(std::string_view(piece).substr(0, std::min(piece.size(), size - written)));
  }

  asio::io_context& io_;
  std::string name_;
  bool own_marks_;
  Transport* transport_ = nullptr;
  bool paused_ = false, lost_ = false;
  int pauses_ = 0, resumes_ = 0, drained_ = 0;
};

// A peer that reads and drops everything until the end of the stream.
void drain(const std::shared_ptr<asio::ip::tcp::socket>& peer, const std::shared_ptr<std::array<char, 65536>>& buffer)
{
  peer->async_read_some(asio::buffer(*buffer), [peer, buffer](const proto::error_code& ec, std::size_t) {
    if (!ec) drain(peer, buffer);
  });
}

}  // namespace

int main()
{
  try {
    asio::io_context io(1);
    probe* a = nullptr;
    probe* b = nullptr;
    int made = 0;
    auto listener = proto::listen(io, "127.0.0.1", 0, [&]() -> std::unique_ptr<Protocol> {
      auto p = std::make_unique<probe>(io, made == 0 ? "connection A" : "connection B", made == 0);
      (made++ == 0 ? a : b) = p.get();
      return p;
    });
    auto buffer = std::make_shared<std::array<char, 65536>>();
    asio::ip::tcp::endpoint to(asio::ip::make_address("127.0.0.1"), listener->port());
    auto peer_a = std::make_shared<asio::ip::tcp::socket>(io);
    peer_a->connect(to);
    drain(peer_a, buffer);
    // B once A has ended: the two never share the loop's time.
    auto peer_b = std::make_shared<asio::ip::tcp::socket>(io);
    asio::steady_timer check(io);
    std::function<void()> wait_for_a = [&] {
      check.expires_after(std::chrono::milliseconds(5));
      check.async_wait([&](const proto::error_code&) {
        if (!(a && a->done)) return wait_for_a();
        peer_b->connect(to);
        drain(peer_b, buffer);
      });
    };
    wait_for_a();
    asio::steady_timer limit(io);
    limit.expires_after(std::chrono::seconds(10));
    limit.async_wait([](const proto::error_code& ec) {
      if (!ec) fail("the probe's two connections did not end in 10 s");
    });
    while (!(b && b->done)) io.run_one();
    std::cout << "ok" << std::endl;
    return 0;
  } catch (const std::exception& e) {
    fail(std::string("the probe failed: ") + e.what());
  }
}
