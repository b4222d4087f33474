#include "common/asio_resolve.hpp"

#include <cstring>
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

void start_lookup(asio::io_context& io, std::shared_ptr<resolve_slot> slot, std::string host, std::uint16_t port)
{
  std::shared_ptr<resolve_gate> gate = asio::use_service<resolve_service>(io).gate();
  auto lookup = [&io, slot, gate, host = std::move(host), port] {
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
    std::thread(std::move(lookup)).detach();
  } catch (const std::system_error& e) {
    // No thread for the lookup: it fails at once, with the reason.
    asio::post(io, [slot, ec = error_code(e.code().value(), boost::system::system_category())] {
      if (auto c = std::move(slot->completion)) c->complete(ec, {});
    });
  }
}

}  // namespace detail

}  // namespace poetry
