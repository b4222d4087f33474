// Slow Poetry client, model 4: asio_callbacks. Every download at once on one thread: each is a
// chain of Asio completion handlers (resolve, connect, read, read, ...), and io_context::run()
// calls whichever handler's operation has finished. The total time is about that of the
// slowest poem.
//
// The states of one download, and the operation pending in each:
//
//   start()
//    |
//    v        on_resolve               on_connect            on_read: end of stream
//   resolving ----------> connecting -----------> reading --------------------------> done
//   (async_resolve,       (async_connect)          (async_read_some)
//    common/)              |    ^                   |  ^
//                          +----+                   +--+ on_read: some bytes; read again
//          refused, or no progress for the --timeout:
//          the next address                    From any state: an error, or no progress for
//                                              the --timeout (a steady_timer), or no address
//                                              left --> failed.
#include "common/asio.hpp"
#include "common/asio_resolve.hpp"
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/output.hpp"
#include "common/report.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace poetry;
namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using steady_clock = std::chrono::steady_clock;

// Downloads one poem and sets ok when it arrived whole. Ownership: the download owns its
// resolver, socket and timer; nothing owns the download but the handlers of its own pending
// operations, each of which holds a shared_ptr to it (self).
class download : public std::enable_shared_from_this<download> {
public:
  download(asio::io_context& io, int task, const address& from, const client_options& options, poem_output& output,
           char& ok)
    : resolver_(io), socket_(io), timer_(io), task_(task), from_(from), options_(options), output_(output), ok_(ok)
  {
  }

  void start()
  {
    report_task_start(task_, from_);
    if (options_.timeout) {
      made_progress();
      do_watch();
    }
    do_resolve();
  }

private:
  // Looks the host up (common/'s resolver runs getaddrinfo on a thread of its own, so neither
  // the loop nor any other download waits for it).
  void do_resolve()
  {
    resolver_.async_resolve(from_.host, from_.port,
                            [self = shared_from_this()](error_code ec, resolver::results_type results) {
                              self->on_resolve(ec, std::move(results));
                            });
  }

  void on_resolve(error_code ec, resolver::results_type results)
  {
    if (ended_) return;
    if (ec) return fail(ec.message());
    endpoints_ = std::move(results);
    do_connect();
  }

  // Connects to the next resolved address; each one gets the whole --timeout. With none left,
  // the download fails with the last reason.
  void do_connect()
  {
    error_code ec;
    socket_.close(ec);
    while (next_ < endpoints_.size()) {
      const tcp::endpoint& e = endpoints_[next_++];
      socket_.open(e.protocol(), ec);
      if (ec) {
        error_ = ec;
        continue;
      }
      connecting_ = true;
      made_progress();
      socket_.async_connect(
        e, [self = shared_from_this(), attempt = next_](error_code ec) { self->on_connect(ec, attempt); });
      return;
    }
    fail(error_.message());
  }

  void on_connect(error_code ec, std::size_t attempt)
  {
    if (ended_ || attempt != next_) return;  // ended, or given up on that address (on_watch)
    if (ec) {
      error_ = ec;
      return do_connect();
    }
    connecting_ = false;
    made_progress();
    do_read();
  }

  // Reads whatever has arrived; the handler runs when there is some, or at the end of stream.
  void do_read()
  {
    socket_.async_read_some(asio::buffer(buffer_),
                            [self = shared_from_this()](error_code ec, std::size_t n) { self->on_read(ec, n); });
  }

  void on_read(error_code ec, std::size_t n)
  {
    if (ended_) return;
    if (ec == asio::error::eof) return finish();  // end of stream is end of poem
    if (ec) return fail(ec.message());
    made_progress();
    poem_.append(buffer_.data(), n);
    if (!options_.quiet) report_task_bytes(task_, n, from_);
    try {
      output_.received(task_, std::string_view(buffer_.data(), n));
    } catch (const std::exception& e) {
      return fail(e.what());
    }
    do_read();
  }

  // The --timeout: the timer goes off at the deadline; if progress has moved the deadline on
  // meanwhile, it waits again until the new one, else the download has stalled.
  void do_watch()
  {
    timer_.expires_at(deadline_);
    timer_.async_wait([self = shared_from_this()](error_code ec) { self->on_watch(ec); });
  }

  void on_watch(error_code ec)
  {
    if (ended_ || ec) return;
    if (deadline_ > steady_clock::now()) return do_watch();
    if (!connecting_) return fail("no progress for the --timeout (timed out)");
    // A connect that got no answer gives up on this address only: on to the next.
    error_ = asio::error::timed_out;
    do_connect();
    if (!ended_) do_watch();
  }

  // Some progress: the --timeout counts again from now.
  void made_progress()
  {
    if (options_.timeout) deadline_ = steady_clock::now() + *options_.timeout;
  }

  // The whole poem arrived: save it and report.
  void finish()
  {
    try {
      output_.complete(task_, poem_);
    } catch (const std::exception& e) {
      return fail(e.what());
    }
    end();
    ok_ = 1;
    report_task_done(task_, poem_.size(), from_, clock_.seconds());
  }

  // Reports a failed download and ends it (and only it).
  void fail(const std::string& reason)
  {
    end();
    report_task_failed(task_, from_, reason, poem_.size());
  }

  // Cancels whatever is still pending; those handlers then see ended_ and return, dropping the
  // last references to this download.
  void end()
  {
    ended_ = true;
    error_code ignored;
    resolver_.cancel();
    socket_.close(ignored);
    timer_.cancel();
  }

  resolver resolver_;
  resolver::results_type endpoints_;  // every resolved address, tried in turn
  std::size_t next_ = 0;              // the next of them to try
  bool connecting_ = false;           // a connect is pending
  // Why the last one failed.
  error_code error_ = make_error_code(boost::system::errc::address_not_available);
  tcp::socket socket_;
  asio::steady_timer timer_;           // the --timeout
  steady_clock::time_point deadline_;  // --timeout: no progress by then, give up
  int task_;
  const address& from_;
  const client_options& options_;
  poem_output& output_;
  char& ok_;
  stopwatch clock_;
  std::string poem_;
  bool ended_ = false;
  std::array<char, 65536> buffer_;
};

// Starts downloading one poem; the io_context's handlers do the rest.
void get_poem(asio::io_context& io, int task, const address& from, const client_options& options, poem_output& output,
              char& ok)
{
  std::make_shared<download>(io, task, from, options, output, ok)->start();
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = poetry::parse_client_options(argc, argv);
    if (!options) return 0;
    poetry::poem_output output(*options);
    poetry::stopwatch clock;
    // Every download at once on one io_context; each writes only its own result.
    std::vector<char> ok(options->addresses.size(), 0);
    asio::io_context io;
    for (std::size_t i = 0; i < options->addresses.size(); ++i)
      get_poem(io, static_cast<int>(i + 1), options->addresses[i], *options, output, ok[i]);
    io.run();  // the event loop: returns when every download has ended
    int got = static_cast<int>(std::count(ok.begin(), ok.end(), 1));
    int failed = static_cast<int>(ok.size()) - got;
    return poetry::report_summary(got, failed, clock.seconds());
  });
}
