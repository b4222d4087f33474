#include "common/asio_resolve.hpp"

#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>

#include <netdb.h>

namespace poetry {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

const boost::system::error_category& resolve_category()
{
  struct category : boost::system::error_category {
    const char* name() const noexcept override { return "poetry.resolve"; }
    std::string message(int code) const override { return ::gai_strerror(code); }
  };
  static const category instance;
  return instance;
}

namespace detail {
namespace {

// The lookups waiting for a thread, and the threads that run them: at most max_threads at once,
// each taking lookup after lookup until none is left, then ending. So a thousand slow names
// cost four threads, not a thousand; the names behind them wait their turn.
class lookup_threads {
public:
  static constexpr unsigned max_threads = 4;

  // The one queue of the process, never destroyed: at exit its threads may still be in
  // getaddrinfo, and the kernel ends them with the process.
  static lookup_threads& get()
  {
    static lookup_threads* threads = new lookup_threads;
    return *threads;
  }

  // Queues lookup, and starts a thread for it if fewer than max_threads run. Throws
  // std::system_error if no thread runs and none could start (the lookup is then not queued).
  void submit(std::function<void()> lookup)
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(lookup));
    if (running_ == max_threads) return;
    try {
      std::thread([this] { run(); }).detach();
      ++running_;
    } catch (...) {
      if (running_ > 0) return;  // a running thread will take it
      queue_.pop_back();
      throw;
    }
  }

private:
  void run()
  {
    std::unique_lock lock(mutex_);
    while (!queue_.empty()) {
      std::function<void()> lookup = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      lookup();
      lock.lock();
    }
    --running_;
  }

  std::mutex mutex_;
  std::deque<std::function<void()>> queue_;
  unsigned running_ = 0;
};

}  // namespace

void start_lookup(asio::io_context& io, std::shared_ptr<resolve_slot> slot, std::string host, std::uint16_t port)
{
  std::shared_ptr<resolve_gate> gate = asio::use_service<resolve_service>(io).gate();
  auto lookup = [&io, slot, gate, host = std::move(host), port] {
    // Its io_context is gone: nobody waits for this name any more.
    {
      std::lock_guard lock(gate->mutex);
      if (!gate->open) return;
    }
    error_code ec;
    std::vector<tcp::endpoint> results;
    try {
      for (const endpoint& e : resolve(host, port)) {
        tcp::endpoint at;
        std::memcpy(at.data(), e.get(), e.length);
        at.resize(e.length);
        results.push_back(at);
      }
    } catch (const resolve_error& e) {
      ec = e.code == EAI_SYSTEM ? error_code(e.system_error, boost::system::system_category())
                                : error_code(e.code, resolve_category());
    } catch (const std::bad_alloc&) {
      ec = make_error_code(boost::system::errc::not_enough_memory);
    }
    // Back on the io_context's thread, if it still exists; there the slot says whether the
    // lookup is still wanted (cancel() takes its handler away).
    std::lock_guard lock(gate->mutex);
    if (!gate->open) return;
    asio::post(io, [slot, ec, results = std::move(results)]() mutable {
      if (auto c = std::move(slot->completion)) c->complete(ec, std::move(results));
    });
  };
  try {
    lookup_threads::get().submit(std::move(lookup));
  } catch (const std::system_error& e) {
    // No thread for the lookup: it fails at once, with the reason.
    asio::post(io, [slot, ec = error_code(e.code().value(), boost::system::system_category())] {
      if (auto c = std::move(slot->completion)) c->complete(ec, {});
    });
  }
}

}  // namespace detail

}  // namespace poetry
