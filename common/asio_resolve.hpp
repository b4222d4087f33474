// Name lookup for the Asio models: common/'s resolve() (the same addresses, the "localhost"
// fallback, the same messages, such as "Name or service not known") as an Asio operation.
//
// Asio's own tcp::resolver runs every lookup of an io_context on one helper thread, one after
// another, so one slow name holds up every other task's lookup. Here lookups run on up to four
// threads at once -- plumbing, like the helper thread Asio uses -- started as lookups come and
// ending when none is left, and each result comes back to the io_context as a completion, in
// the usual Asio way: a handler, or co_await with use_awaitable. A lookup still running when it
// is cancelled, or when its io_context is destroyed, is abandoned: its thread finishes it alone
// and delivers nothing. If no thread can start, the lookup fails at once with the reason.
#pragma once

#include "common/address.hpp"
#include "common/asio.hpp"

#include <boost/version.hpp>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace poetry {

// The error codes of a failed lookup: getaddrinfo's EAI_* values, with its words as messages.
const boost::system::error_category& resolve_category();

namespace detail {

// Whether the lookup threads may still post to their io_context: closed when it is destroyed.
struct resolve_gate {
  std::mutex mutex;
  bool open = true;
};

// One gate per io_context, closed when the io_context shuts its services down.
class resolve_service : public boost::asio::execution_context::service {
public:
  using key_type = resolve_service;
  static inline boost::asio::execution_context::id id;
  explicit resolve_service(boost::asio::execution_context& context) : service(context) {}
  std::shared_ptr<resolve_gate> gate() const { return gate_; }

private:
  void shutdown() override
  {
    std::lock_guard lock(gate_->mutex);
    gate_->open = false;
  }
  std::shared_ptr<resolve_gate> gate_ = std::make_shared<resolve_gate>();
};

// A lookup's handler, whatever its type, and the work that keeps io_context::run() going for it.
struct resolve_completion {
  virtual ~resolve_completion() = default;
  virtual void complete(boost::system::error_code ec, std::vector<boost::asio::ip::tcp::endpoint> results) = 0;
};

// Where a lookup's handler waits: touched on the io_context's thread only.
struct resolve_slot {
  std::unique_ptr<resolve_completion> completion;
};

// Runs resolve(host, port) on a lookup thread and posts the result to io, unless the gate has
// closed meanwhile; the slot then decides whether anyone still waits for it.
void start_lookup(boost::asio::io_context& io, std::shared_ptr<resolve_slot> slot, std::string host,
                  std::uint16_t port);

}  // namespace detail

// Looks names up on the lookup threads, one lookup at a time per resolver (as tcp::resolver).
// Destroy it before its io_context.
class resolver {
public:
  using results_type = std::vector<boost::asio::ip::tcp::endpoint>;

  explicit resolver(boost::asio::io_context& io) : io_(io) {}
  resolver(const resolver&) = delete;
  resolver& operator=(const resolver&) = delete;
  ~resolver() { cancel(); }

  // Resolves host:port; completes with (error_code, results_type). The error's message is
  // resolve()'s ("Name or service not known"); operation_aborted after cancel().
  template <typename Token>
  auto async_resolve(std::string host, std::uint16_t port, Token&& token)
  {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, results_type)>(
      [this](auto handler, std::string host, std::uint16_t port) {
#if BOOST_VERSION >= 107700
        // Per-operation cancellation (Boost 1.77 on), as in `co_await (resolve || timer)`:
        // the operation's cancellation slot cancels the lookup as cancel() does.
        auto cancellation = boost::asio::get_associated_cancellation_slot(handler);
        if (cancellation.is_connected()) cancellation.assign([this](boost::asio::cancellation_type) { cancel(); });
#endif
        slot_ = std::make_shared<detail::resolve_slot>();
        slot_->completion = std::make_unique<completion<decltype(handler)>>(std::move(handler), io_);
        detail::start_lookup(io_, slot_, std::move(host), port);
      },
      token, std::move(host), port);
  }

  // The pending lookup, if any, completes at once with operation_aborted; its thread's answer
  // will find nobody waiting.
  void cancel()
  {
    if (!slot_ || !slot_->completion) return;
    boost::asio::post(
      io_, [c = std::move(slot_->completion)]() mutable { c->complete(boost::asio::error::operation_aborted, {}); });
  }

private:
  template <typename Handler>
  struct completion : detail::resolve_completion {
    completion(Handler h, boost::asio::io_context& io) : handler(std::move(h)), work(io.get_executor()) {}
    void complete(boost::system::error_code ec, results_type results) override
    {
#if BOOST_VERSION >= 107700
      boost::asio::get_associated_cancellation_slot(handler).clear();  // nothing left to cancel
#endif
      auto executor = boost::asio::get_associated_executor(handler, work.get_executor());
      boost::asio::dispatch(
        executor, [h = std::move(handler), ec, r = std::move(results)]() mutable { std::move(h)(ec, std::move(r)); });
    }
    Handler handler;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work;
  };

  boost::asio::io_context& io_;
  std::shared_ptr<detail::resolve_slot> slot_;
};

}  // namespace poetry
