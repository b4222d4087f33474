// loadgen: the race's load generator (scripts/bench), also used by tests that need many clients.
//
// Opens N connections to one poetry server at once (or spread evenly over a time), reads each to
// end of stream, checks every byte against the poem file, and times every client. One thread and
// one Asio io_context hold all the connections; a client waits for its socket to become readable
// and then reads into a buffer shared by all clients, so 10,000 connections cost 10,000 sockets
// and little memory.
//
//   connecting --connected--> reading --end of stream, every byte right--> ok
//        |                       |
//        +------- error, wrong or missing byte, no progress for --timeout -------> failed
//
// A refused or reset connection is a failure, never retried: the race must see the kernel's
// limits (listen backlog, descriptors), not hide them. Exit status 0 only when every client
// got the whole poem, byte for byte; 1 otherwise; 2 for a usage error.
//
// Past about 28,000 clients one source address runs out of ephemeral ports towards one server
// port (net.ipv4.ip_local_port_range): with --source-addresses N, client i binds its socket to
// 127.0.0.(1 + i % N) before it connects, with IP_BIND_ADDRESS_NO_PORT so that the port is
// still chosen at connect, per destination. The default picks N from the port range.
#include "common/asio.hpp"
#include "common/errors.hpp"
#include "common/options.hpp"
#include "common/poem.hpp"

#include <boost/program_options.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <sys/resource.h>

#ifndef IP_BIND_ADDRESS_NO_PORT  // Linux 4.2; older C libraries lack the name
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace {

namespace asio = boost::asio;
namespace po = boost::program_options;
using asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using poetry::usage_error;

struct loadgen_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::size_t clients = 1;
  std::string expect_file;
  std::chrono::nanoseconds timeout = std::chrono::seconds(30);
  std::chrono::nanoseconds spread{};  // zero: every connection at once
  std::string csv_file;               // empty: no per-client file
  std::size_t source_addresses = 0;   // 127.0.0.1 … 127.0.0.N; zero: as many as the clients need
};

const char* const usage_text =
  "Usage: loadgen --port N --expect POEM_FILE [options]\n"
  "Opens --clients connections to a Slow Poetry server at once (or evenly over --spread), reads\n"
  "each to end of stream, checks every byte against POEM_FILE and times every client. A refused\n"
  "or reset connection is counted as failed, never retried. Raises its own descriptor limit to\n"
  "fit the clients.\n"
  "\n"
  "Prints one line on stdout:\n"
  "  clients=N ok=N failed=N wall=S p50=S p95=S max=S connect_max=S bytes=N mib_s=X sources=N\n"
  "wall: first connect to last end of stream; p50/p95/max: each byte-exact client's time from\n"
  "its connect to its end of stream; connect_max: the slowest connect; mib_s: bytes / wall;\n"
  "sources: the source addresses the clients connected from.\n"
  "Failures are summed up by reason on stderr. Exit status: 0 when every client got the whole\n"
  "poem byte for byte, 1 otherwise, 2 for a usage error.\n"
  "\n"
  "One source address has one ephemeral port range (net.ipv4.ip_local_port_range, about 28,000\n"
  "ports) towards one server port. With --source-addresses N (a 127.x server only), client i\n"
  "connects from 127.0.0.(1 + i % N), bound before connect with IP_BIND_ADDRESS_NO_PORT. By\n"
  "default N is the fewest addresses whose ports fit the clients (1 up to about 27,000).\n";

std::size_t parse_count(const std::string& option, const std::string& text, unsigned long most)
{
  unsigned long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value == 0 || value > most)
    throw usage_error("invalid value '" + text + "' for " + option + " (expected 1 to " + std::to_string(most) + ")");
  return value;
}

// The command line. Returns nullopt after printing --help.
std::optional<loadgen_options> parse_options(int argc, const char* const argv[])
{
  loadgen_options result;
  std::string port, clients = "1", timeout = "30", spread = "0", sources;
  po::options_description options("Options");
  options.add_options()("port,p", po::value(&port), "the server's port (required)")(
    "host", po::value(&result.host), "the server's address (default 127.0.0.1)")(
    "clients,c", po::value(&clients), "connections to open at once (default 1)")(
    "expect,e", po::value(&result.expect_file), "the poem file every client must receive (required)")(
    "timeout,t", po::value(&timeout), "fail a client that makes no progress for SECONDS (default 30)")(
    "spread", po::value(&spread),
    "start the connections evenly over SECONDS instead of all at once: client i of N at i/N of it (default 0)")(
    "source-addresses", po::value(&sources),
    "connect from 127.0.0.1 to 127.0.0.N in turn, N from 1 to 254 (default: as many as the clients need)")(
    "csv", po::value(&result.csv_file),
    "write one line per client to FILE: client,start_s,connected_s,done_s,bytes,ok,error")(
    "help,h", "print this help, then exit");
  po::variables_map vm = poetry::parse_command_line(argc, argv, options);
  if (vm.count("help")) {
    std::cout << usage_text << "\n" << options;
    return std::nullopt;
  }
  if (port.empty()) throw usage_error("no --port given");
  if (result.expect_file.empty()) throw usage_error("no --expect poem file given");
  result.port = poetry::parse_port(port, false);
  result.clients = parse_count("--clients", clients, 1'000'000);
  if (!sources.empty()) result.source_addresses = parse_count("--source-addresses", sources, 254);
  result.timeout = poetry::parse_seconds("--timeout", timeout);
  if (result.timeout == std::chrono::nanoseconds::zero())
    throw usage_error("invalid value '" + timeout + "' for --timeout (expected seconds > 0)");
  result.spread = poetry::parse_seconds("--spread", spread);
  if (result.host.empty()) throw usage_error("invalid value '' for --host");
  return result;
}

// Every client needs a descriptor: raise the soft limit (and the hard one, where allowed).
// When that fails: one line naming the limit and the command that raises it.
void raise_descriptor_limit(std::size_t clients)
{
  rlim_t needed = static_cast<rlim_t>(clients) + 64;  // the clients, stdio, epoll, the poem
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur >= needed) return;
  bool hard = limit.rlim_max < needed;
  rlimit raised{needed, hard ? needed : limit.rlim_max};
  if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) return;
  std::string n = std::to_string(needed);
  throw std::runtime_error(std::to_string(clients) + " clients need " + n + " descriptors, but the " +
                           (hard ? "hard descriptor limit (ulimit -Hn) is " + std::to_string(limit.rlim_max)
                                 : "descriptor limit (ulimit -n) is " + std::to_string(limit.rlim_cur)) +
                           " and cannot be raised here (" + poetry::system_reason(errno) +
                           "); raise it with 'ulimit -" + (hard ? "H" : "") + "n " + n + "'" +
                           (hard ? " as root (fs.nr_open caps it)" : "") + " in the shell that starts loadgen");
}

// How many ephemeral ports one source address has towards one server port.
std::size_t ephemeral_ports()
{
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  std::size_t low = 0, high = 0;
  if (range >> low >> high && high >= low) return high - low + 1;
  return 28'232;  // Linux's default range, 32768 to 60999
}

// The source addresses the clients need: none to bind (the kernel's choice, one address) while
// one address has ports enough, with a margin for ports other sockets hold; else enough of them.
std::size_t needed_source_addresses(std::size_t clients)
{
  std::size_t per_address = ephemeral_ports() * 95 / 100;
  if (clients <= per_address) return 0;
  return std::min<std::size_t>((clients + per_address - 1) / per_address, 254);
}

std::string number_text(const char* format, double value)
{
  char text[32];
  std::snprintf(text, sizeof text, format, value);
  return text;
}

// What one client saw. Times are seconds since the race started; -1 when it never got there.
struct client_record {
  double start = -1;
  double connected = -1;
  double done = -1;
  std::size_t bytes = 0;
  bool ok = false;
  std::string error;  // why it failed; empty when ok
};

class race;

// One connection: connect, then read to end of stream, checking each byte as it arrives.
class client {
public:
  client(race& owner, std::size_t index, asio::io_context& io) : race_(owner), index_(index), socket_(io) {}
  void start(const tcp::endpoint& server, std::optional<asio::ip::address_v4> source);
  void check_progress(clock_type::time_point now, std::chrono::nanoseconds timeout);

private:
  void on_connect(const boost::system::error_code& ec);
  void do_wait();
  void on_readable(const boost::system::error_code& ec);
  bool check_bytes(const char* data, std::size_t n);
  void finish(std::string error);

  race& race_;  // owns this client and outlives every handler
  std::size_t index_;
  tcp::socket socket_;
  clock_type::time_point last_progress_;
  bool finished_ = false;
};

// All the clients, the poem they must receive, and the clock they are timed by.
class race {
public:
  race(asio::io_context& io, const std::string& poem, std::size_t clients, std::chrono::nanoseconds timeout)
    : io_(io), poem_(poem), timeout_(timeout), sweep_(io), spacer_(io), buffer_(256 * 1024), records_(clients)
  {
    clients_.reserve(clients);
    for (std::size_t i = 0; i < clients; ++i) clients_.push_back(std::make_unique<client>(*this, i, io));
  }

  // Starts every connection at once: the burst the server must absorb. Every few connects it
  // runs the handlers that are ready, so a connection is timed when it completes, not when the
  // whole burst has been sent. The timeout sweep starts once every client has started.
  // With a spread, client i of N starts at i/N of it instead (see start_spread).
  // With source addresses, client i connects from 127.0.0.(1 + i % sources).
  void start(const tcp::endpoint& server, std::chrono::nanoseconds spread, std::size_t sources)
  {
    start_ = clock_type::now();
    sources_ = sources;
    if (spread > std::chrono::nanoseconds::zero()) return start_spread(server, spread, 0);
    auto busy = asio::make_work_guard(io_);  // poll must not stop the loop while clients are to come
    for (std::size_t i = 0; i < clients_.size(); ++i) {
      clients_[i]->start(server, source(i));
      if (i % 64 == 63) io_.poll();
    }
    if (finished_ < clients_.size()) do_sweep();
  }

  double now() const { return std::chrono::duration<double>(clock_type::now() - start_).count(); }
  const std::string& poem() const { return poem_; }
  std::vector<char>& buffer() { return buffer_; }
  client_record& record(std::size_t index) { return records_[index]; }
  const std::vector<client_record>& records() const { return records_; }

  void client_finished()
  {
    if (++finished_ == clients_.size()) sweep_.cancel();
  }

private:
  // --spread: starts client i, then waits on one timer until client i + 1 is due. Each start is
  // due at a fixed time after the first, so a late one does not delay the rest.
  void start_spread(const tcp::endpoint& server, std::chrono::nanoseconds spread, std::size_t i)
  {
    clients_[i]->start(server, source(i));
    if (++i == clients_.size()) {
      if (finished_ < clients_.size()) do_sweep();
      return;
    }
    spacer_.expires_at(start_ + spread * static_cast<long>(i) / static_cast<long>(clients_.size()));
    spacer_.async_wait([this, server, spread, i](const boost::system::error_code& ec) {
      if (!ec) start_spread(server, spread, i);
    });
  }

  std::optional<asio::ip::address_v4> source(std::size_t i) const
  {
    if (sources_ == 0) return std::nullopt;
    return asio::ip::address_v4(0x7f000001u + static_cast<std::uint32_t>(i % sources_));
  }

  // Every so often, fail the clients that made no progress for the timeout.
  void do_sweep()
  {
    sweep_.expires_after(std::min<std::chrono::nanoseconds>(timeout_ / 4, std::chrono::milliseconds(250)));
    sweep_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || finished_ == clients_.size()) return;
      auto now = clock_type::now();
      for (auto& c : clients_) c->check_progress(now, timeout_);
      if (finished_ < clients_.size()) do_sweep();
    });
  }

  asio::io_context& io_;
  const std::string& poem_;
  std::chrono::nanoseconds timeout_;
  asio::steady_timer sweep_;
  asio::steady_timer spacer_;  // --spread: the next client's start
  std::vector<char> buffer_;   // every client reads here; one thread, so one read at a time
  std::vector<std::unique_ptr<client>> clients_;
  std::vector<client_record> records_;
  std::size_t finished_ = 0;
  std::size_t sources_ = 0;  // source addresses to bind; zero: the kernel's choice
  clock_type::time_point start_;
};

void client::start(const tcp::endpoint& server, std::optional<asio::ip::address_v4> source)
{
  race_.record(index_).start = race_.now();
  last_progress_ = clock_type::now();
  if (source) {
    // Bound to an address, but without a port yet: the kernel picks the port at connect, among
    // those free towards this server, so each address has the whole port range for it.
    boost::system::error_code ec;
    socket_.open(tcp::v4(), ec);
    int on = 1;
    if (!ec && ::setsockopt(socket_.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on) != 0)
      ec.assign(errno, boost::system::system_category());
    if (!ec) socket_.bind(tcp::endpoint(*source, 0), ec);
    if (ec) return finish("bind " + source->to_string() + ": " + ec.message());
  }
  socket_.async_connect(server, [this](const boost::system::error_code& ec) { on_connect(ec); });
}

void client::on_connect(const boost::system::error_code& ec)
{
  if (finished_) return;
  if (ec) return finish("connect: " + ec.message());
  race_.record(index_).connected = race_.now();
  last_progress_ = clock_type::now();
  boost::system::error_code ignored;
  socket_.non_blocking(true, ignored);
  do_wait();
}

void client::do_wait()
{
  socket_.async_wait(tcp::socket::wait_read, [this](const boost::system::error_code& ec) { on_readable(ec); });
}

// Reads what the socket has into the shared buffer, checking it against the poem as it goes.
void client::on_readable(const boost::system::error_code& ec)
{
  if (finished_) return;
  if (ec) return finish("read: " + ec.message());
  auto& buffer = race_.buffer();
  for (;;) {
    boost::system::error_code read_ec;
    std::size_t n = socket_.read_some(asio::buffer(buffer), read_ec);
    if (read_ec == asio::error::would_block) return do_wait();
    if (read_ec == asio::error::eof) {
      std::size_t got = race_.record(index_).bytes, size = race_.poem().size();
      if (got < size) return finish("short poem: " + std::to_string(got) + " of " + std::to_string(size) + " bytes");
      return finish("");
    }
    if (read_ec) return finish("read: " + read_ec.message());
    last_progress_ = clock_type::now();
    if (!check_bytes(buffer.data(), n)) return;
  }
}

// Compares n new bytes with the poem at this client's offset; fails the client on a difference.
bool client::check_bytes(const char* data, std::size_t n)
{
  auto& record = race_.record(index_);
  const std::string& poem = race_.poem();
  std::size_t comparable = std::min(n, poem.size() - record.bytes);
  const char* want = poem.data() + record.bytes;
  if (auto [got, expected] = std::mismatch(data, data + comparable, want); got != data + comparable) {
    finish("byte " + std::to_string(record.bytes + static_cast<std::size_t>(got - data)) + " differs");
    return false;
  }
  if (comparable < n) {
    finish("more bytes than the poem has (" + std::to_string(record.bytes + n) + " of " + std::to_string(poem.size()) +
           ")");
    return false;
  }
  record.bytes += n;
  return true;
}

void client::check_progress(clock_type::time_point now, std::chrono::nanoseconds timeout)
{
  if (!finished_ && now - last_progress_ > timeout)
    finish("no progress for " + number_text("%g", std::chrono::duration<double>(timeout).count()) + " s");
}

// The end of this client: record it and close the socket (which cancels what is pending).
void client::finish(std::string error)
{
  finished_ = true;
  auto& record = race_.record(index_);
  record.done = race_.now();
  record.ok = error.empty();
  record.error = std::move(error);
  boost::system::error_code ignored;
  socket_.close(ignored);
  race_.client_finished();
}

// The nearest-rank percentile of sorted values (p in 0..1).
double percentile(const std::vector<double>& sorted, double p)
{
  if (sorted.empty()) return 0;
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

std::string seconds_text(double s) { return number_text("%.4f", s); }

void write_csv(const std::string& path, const std::vector<client_record>& records)
{
  std::ofstream out(path);
  if (!out) throw std::runtime_error(path + ": cannot write: " + poetry::system_reason(errno));
  out << "client,start_s,connected_s,done_s,bytes,ok,error\n";
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    std::string error = r.error;
    std::replace(error.begin(), error.end(), ',', ';');
    out << i + 1 << ',' << seconds_text(r.start) << ',' << seconds_text(r.connected) << ',' << seconds_text(r.done)
        << ',' << r.bytes << ',' << (r.ok ? 1 : 0) << ',' << error << '\n';
  }
  if (!out.flush()) throw std::runtime_error(path + ": cannot write: " + poetry::system_reason(errno));
}

// The one summary line, and the failures grouped by reason on stderr.
bool report(const std::vector<client_record>& records, std::size_t sources)
{
  std::vector<double> times;
  double wall = 0, connect_max = 0;
  std::size_t bytes = 0;
  std::map<std::string, std::size_t> failures;
  for (const auto& r : records) {
    wall = std::max(wall, r.done);
    connect_max = std::max(connect_max, r.connected - r.start);
    bytes += r.bytes;
    if (r.ok) times.push_back(r.done - r.start);
    else ++failures[r.error];
  }
  std::sort(times.begin(), times.end());
  std::size_t failed = records.size() - times.size();
  double mib_s = wall > 0 ? static_cast<double>(bytes) / (1024.0 * 1024.0) / wall : 0;
  std::cout << "clients=" << records.size() << " ok=" << times.size() << " failed=" << failed
            << " wall=" << seconds_text(wall) << " p50=" << seconds_text(percentile(times, 0.50))
            << " p95=" << seconds_text(percentile(times, 0.95))
            << " max=" << seconds_text(times.empty() ? 0 : times.back()) << " connect_max=" << seconds_text(connect_max)
            << " bytes=" << bytes << " mib_s=" << number_text("%.1f", mib_s)
            << " sources=" << std::max<std::size_t>(sources, 1) << std::endl;
  std::size_t shown = 0;
  for (const auto& [reason, count] : failures) {
    if (++shown > 10) {
      std::cerr << "loadgen: ... and " << failures.size() - 10 << " other reasons\n";
      break;
    }
    std::cerr << "loadgen: " << count << " of " << records.size() << " clients failed: " << reason << "\n";
  }
  return failed == 0;
}

// The server's address: a numeric address or a name, its first resolved address.
tcp::endpoint resolve(asio::io_context& io, const std::string& host, std::uint16_t port)
{
  tcp::resolver resolver(io);
  boost::system::error_code ec;
  auto results = resolver.resolve(host, std::to_string(port), tcp::resolver::numeric_service, ec);
  if (ec || results.empty())
    throw std::runtime_error("cannot resolve " + host + ": " + (ec ? ec.message() : "no address"));
  return results.begin()->endpoint();
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = parse_options(argc, argv);
    if (!options) return 0;
    std::string poem = poetry::load_poem(options->expect_file);
    raise_descriptor_limit(options->clients);
    asio::io_context io(1);
    tcp::endpoint server = resolve(io, options->host, options->port);
    bool loopback_v4 = server.address().is_v4() && server.address().is_loopback();
    std::size_t sources = options->source_addresses;
    if (sources > 0 && !loopback_v4)
      throw usage_error("--source-addresses needs a server on 127.x, not " + server.address().to_string());
    if (sources == 0 && loopback_v4) sources = needed_source_addresses(options->clients);
    race the_race(io, poem, options->clients, options->timeout);
    the_race.start(server, options->spread, sources);
    io.run();
    if (!options->csv_file.empty()) write_csv(options->csv_file, the_race.records());
    return report(the_race.records(), sources) ? 0 : 1;
  });
}
