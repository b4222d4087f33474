// Slow Poetry client, model 5: asio_protocol. Every download at once on one thread, as in
// asio_callbacks, but the resolve, connect and read chains have moved into a small reusable
// layer (protocol.hpp). What is left here is a Protocol that collects the bytes it is given
// and finishes at the end of stream. The total time is about that of the slowest poem.
//
// The events of one download:
//
//   connect() --> connection_made --> data_received --> ... --> eof_received: done
//       |                                   |
//       +--> on_failure: failed             +--> connection_lost, or no progress for the --timeout: failed
//
// With --pull, the client asks for every chunk: "poems" on connection_made and again after
// each data_received (pull.hpp).
#include "asio_protocol/protocol.hpp"
#include "asio_protocol/pull.hpp"
#include "common/asio.hpp"
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/output.hpp"
#include "common/report.hpp"

#include <algorithm>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace poetry;
namespace asio = boost::asio;
using boost::system::error_code;
using proto::Protocol;
using proto::Transport;

// Downloads one poem and sets ok when it arrived whole. Ownership: the Transport owns this
// protocol and outlives it; the protocol keeps a reference to it.
class PoetryClientProtocol : public Protocol {
public:
  PoetryClientProtocol(int task, const address& from, stopwatch clock, const client_options& options,
                       poem_output& output, char& ok)
    : task_(task), from_(from), clock_(clock), options_(options), output_(output), ok_(ok)
  {
  }

  void connection_made(Transport& transport) override
  {
    transport_ = &transport;
    made_progress();
    if (options_.pull) transport_->write(pull_request);  // ask for the first chunk
  }

  void data_received(std::string_view data) override
  {
    made_progress();
    poem_.append(data);
    if (!options_.quiet) report_task_bytes(task_, data.size(), from_);
    try {
      output_.received(task_, data);
    } catch (const std::exception& e) {
      return fail(e.what());
    }
    if (options_.pull) transport_->write(pull_request);  // and for the next one
  }

  // End of stream is end of poem; then let the Transport close.
  bool eof_received() override
  {
    finish();
    return false;
  }

  void connection_lost(const error_code& reason) override
  {
    if (!ended_) fail(reason.message());
  }

private:
  // The --timeout: each bit of progress starts the count again; no progress for that long and
  // the download has stalled.
  void made_progress()
  {
    if (!options_.timeout) return;
    watch_.cancel();
    watch_ = transport_->call_later(*options_.timeout, [this] { fail("no progress for the --timeout (timed out)"); });
  }

  // The whole poem arrived: save it and report.
  void finish()
  {
    try {
      output_.complete(task_, poem_);
    } catch (const std::exception& e) {
      return fail(e.what());
    }
    ended_ = true;
    watch_.cancel();
    ok_ = 1;
    report_task_done(task_, poem_.size(), from_, clock_.seconds());
  }

  // Reports a failed download and ends it (and only it).
  void fail(const std::string& reason)
  {
    ended_ = true;
    watch_.cancel();
    report_task_failed(task_, from_, reason, poem_.size());
    transport_->abort();
  }

  int task_;
  const address& from_;
  stopwatch clock_;
  const client_options& options_;
  poem_output& output_;
  char& ok_;
  Transport* transport_ = nullptr;
  proto::TimerHandle watch_;  // the --timeout
  std::string poem_;
  bool ended_ = false;
};

// Starts downloading one poem: connect() resolves and connects, and the protocol it makes
// once connected does the rest.
void get_poem(asio::io_context& io, int task, const address& from, const client_options& options, poem_output& output,
              char& ok)
{
  report_task_start(task, from);
  stopwatch clock;
  proto::connect(
    io, from.host, from.port,
    [=, &from, &options, &output, &ok] {
      return std::make_unique<PoetryClientProtocol>(task, from, clock, options, output, ok);
    },
    [task, &from](const error_code& ec) { report_task_failed(task, from, ec.message()); }, options.timeout);
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = poetry::parse_client_options(argc, argv, {.pull = true});
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
