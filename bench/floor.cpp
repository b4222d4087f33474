// floor: what one chunk costs the kernel, with no model around it. The race (scripts/bench)
// prints each server's CPU time per chunk beside this floor, measured in the same run.
//
// One thread sends --sends chunks of --num-bytes bytes, back to back, over one loopback TCP
// connection (TCP_NODELAY, so that each send is a segment of its own, as a chunk sent every
// --delay is) to a peer that reads everything on a second thread. The sending thread's CPU time
// (getrusage RUSAGE_THREAD: user + system) over the sends, divided by their number, is the
// floor: a send(2) and the loopback's delivery to the peer, which Linux does on the sender's
// time. No timer, no event loop, no allocation: what a server spends above it is the model's.
//
// Prints one line on stdout:
//   sends=N num_bytes=B cpu_s=S us_per_send=U wall_s=S
// Exit status 0 when every byte arrived; 1 otherwise; 2 for a usage error.
#include "common/errors.hpp"
#include "common/options.hpp"

#include <boost/program_options.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

namespace po = boost::program_options;
using poetry::usage_error;

struct floor_options {
  std::size_t sends = 200'000;
  std::size_t num_bytes = 20;
};

std::size_t parse_count(const std::string& option, const std::string& text, unsigned long most)
{
  unsigned long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value == 0 || value > most)
    throw usage_error("invalid value '" + text + "' for " + option + " (expected 1 to " + std::to_string(most) + ")");
  return value;
}

std::optional<floor_options> parse_options(int argc, const char* const argv[])
{
  floor_options result;
  std::string sends = "200000", num_bytes = "20";
  po::options_description options("Options");
  options.add_options()("sends,n", po::value(&sends), "chunks to send (default 200000)")(
    "num-bytes", po::value(&num_bytes), "bytes per chunk (default 20)")("help,h", "print this help, then exit");
  po::variables_map vm = poetry::parse_command_line(argc, argv, options);
  if (vm.count("help")) {
    std::cout << "Usage: floor [--sends N] [--num-bytes B]\n"
                 "The kernel's floor for one chunk: one thread's CPU time per send(2) of B bytes over\n"
                 "one loopback TCP connection (TCP_NODELAY) to a peer that reads everything. Prints\n"
                 "  sends=N num_bytes=B cpu_s=S us_per_send=U wall_s=S\n\n"
              << options;
    return std::nullopt;
  }
  result.sends = parse_count("--sends", sends, 100'000'000);
  result.num_bytes = parse_count("--num-bytes", num_bytes, 1 << 20);
  return result;
}

[[noreturn]] void fail(const std::string& what)
{
  throw std::runtime_error(what + ": " + poetry::system_reason(errno));
}

// A descriptor closed at the end of its scope.
struct fd_holder {
  int fd;
  explicit fd_holder(int f) : fd(f) {}
  fd_holder(const fd_holder&) = delete;
  fd_holder& operator=(const fd_holder&) = delete;
  ~fd_holder()
  {
    if (fd >= 0) ::close(fd);
  }
};

// This thread's user + system CPU time, in seconds.
double thread_cpu_seconds()
{
  rusage usage{};
  ::getrusage(RUSAGE_THREAD, &usage);
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

void send_all(int fd, const char* data, std::size_t size)
{
  while (size > 0) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("send");
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

}  // namespace

int main(int argc, char* argv[])
{
  return poetry::run_main(argv[0], [&] {
    auto options = parse_options(argc, argv);
    if (!options) return 0;

    // The peer: a listener on a free loopback port, and a thread that accepts and reads.
    fd_holder listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (listener.fd < 0) fail("socket");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (::bind(listener.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) fail("bind");
    if (::listen(listener.fd, 1) != 0) fail("listen");
    if (::getsockname(listener.fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) fail("getsockname");

    fd_holder sender(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (sender.fd < 0) fail("socket");
    if (::connect(sender.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) fail("connect");
    fd_holder peer(::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (peer.fd < 0) fail("accept");
    int on = 1;
    if (::setsockopt(sender.fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) != 0) fail("setsockopt TCP_NODELAY");

    std::size_t received = 0;
    int read_errno = 0;
    std::thread reader([&] {
      std::vector<char> buffer(64 * 1024);
      for (;;) {
        ssize_t n = ::recv(peer.fd, buffer.data(), buffer.size(), 0);
        if (n > 0) received += static_cast<std::size_t>(n);
        else if (n < 0 && errno == EINTR) continue;
        else {
          if (n < 0) read_errno = errno;
          return;
        }
      }
    });

    std::string chunk(options->num_bytes, 'x');
    for (std::size_t i = 0; i < 1000; ++i) send_all(sender.fd, chunk.data(), chunk.size());  // warm up
    auto wall_start = std::chrono::steady_clock::now();
    double cpu_start = thread_cpu_seconds();
    for (std::size_t i = 0; i < options->sends; ++i) send_all(sender.fd, chunk.data(), chunk.size());
    double cpu = thread_cpu_seconds() - cpu_start;
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
    ::shutdown(sender.fd, SHUT_WR);
    reader.join();

    std::size_t expected = (options->sends + 1000) * options->num_bytes;
    if (read_errno != 0 || received != expected)
      throw std::runtime_error("the peer read " + std::to_string(received) + " of " + std::to_string(expected) +
                               " bytes" + (read_errno ? ": " + poetry::system_reason(read_errno) : std::string()));
    char line[160];
    std::snprintf(line, sizeof line, "sends=%zu num_bytes=%zu cpu_s=%.3f us_per_send=%.2f wall_s=%.3f", options->sends,
                  options->num_bytes, cpu, cpu * 1e6 / static_cast<double>(options->sends), wall);
    std::cout << line << std::endl;
    return 0;
  });
}
