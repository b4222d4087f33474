// The asio_coroutines model. The server: each connection is two coroutines (send_poem and
// discard_input) sharing one socket; the reader never hurries the writer, and the writer does
// not wait out the linger once the reader has seen the client close. The client: its --timeout,
// a coroutine beside the download, covers the connect too. (Many clients at once, every
// connection ending with its client, full speed at --delay 0: tests/load_test.cpp, every model.)
#define BOOST_TEST_MODULE asio_coroutines
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include "common/poem.hpp"
#include "common/sockets.hpp"

#include <cerrno>
#include <cstring>

#include <netinet/in.h>
#include <sys/socket.h>

using namespace poetry::test;

BOOST_AUTO_TEST_SUITE(asio_coroutines_server)

BOOST_AUTO_TEST_CASE(a_client_that_half_closes_mid_poem_gets_every_chunk_on_time_and_a_prompt_close)
{
  temp_dir dir;
  std::string poem = large_poem(200);
  server s("asio_coroutines", dir.write("poem", poem), {"--delay", "0.2", "--num-bytes", "20", "-q"});
  std::size_t idle = open_files(s.process().pid());

  // Three chunks, then this client says it has nothing more to send: the reader sees the end
  // of its stream and ends while the writer waits for the fourth chunk. The writer must go on
  // at its own pace (the reader must not wake it early), and, the reader gone, close without
  // waiting out the linger time.
  poetry::unique_fd fd = poetry::connect_to(poetry::address{"127.0.0.1", s.port()}, std::chrono::seconds(30));
  std::string got;
  char buffer[4096];
  auto receive = [&] {
    for (;;) {
      ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
      if (n < 0 && errno == EINTR) continue;
      BOOST_TEST_REQUIRE(n >= 0, "recv: " << std::strerror(errno));
      got.append(buffer, static_cast<std::size_t>(n));
      return n > 0;
    }
  };
  while (got.size() < 60) BOOST_TEST_REQUIRE(receive(), "end of stream after " << got.size() << " bytes");
  auto third = std::chrono::steady_clock::now();
  ::shutdown(fd.get(), SHUT_WR);
  BOOST_TEST_REQUIRE(receive());
  double gap = std::chrono::duration<double>(std::chrono::steady_clock::now() - third).count();
  BOOST_TEST(gap >= 0.1, "the fourth chunk came " << gap << " s after the third, --delay 0.2");
  while (receive()) {}
  BOOST_TEST((got == poem), "got " << got.size() << " bytes");
  // Our socket is still open, so only the server's own prompt close brings it back to idle;
  // waiting out the linger time (one second) would not.
  BOOST_TEST(poll_until([&] { return open_files(s.process().pid()) <= idle; }, 700ms));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(asio_coroutines_client)

// The --timeout is a second coroutine beside the download; it must cover the connect too, not
// only the reads. A listener whose queue is full drops new handshakes, so a connect to it
// neither succeeds nor fails.
BOOST_AUTO_TEST_CASE(a_connect_that_never_completes_is_given_up_after_the_timeout)
{
  poetry::unique_fd full = poetry::listen_on("127.0.0.1", 0);
  BOOST_TEST_REQUIRE(::listen(full.get(), 0) == 0);
  std::uint16_t port = poetry::local_port(full.get());
  std::vector<poetry::unique_fd> fillers;
  for (int i = 0; i < 2; ++i) {  // never accepted: they fill the queue
    fillers.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_port = htons(port);
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::connect(fillers.back().get(), reinterpret_cast<sockaddr*>(&at), sizeof at);
  }
  temp_dir dir;
  std::string poem = ascii_poem();
  server s("asio_coroutines", dir.write("poem", poem), {"--delay", "0.01", "-q"});

  auto r = run_client("asio_coroutines", {"-q", "-t", "0.5", std::to_string(port), s.address()}, 30s);
  BOOST_TEST(r.status == 1, r.err);
  BOOST_TEST(r.err.find("Task 1: failed to get poetry from 127.0.0.1:" + std::to_string(port) +
                        ": Connection timed out") != std::string::npos,  // as every client says
             r.err);
  BOOST_TEST(same_bytes(r.out, poem));  // the other task is not held up
  BOOST_TEST(r.seconds < 10.0);         // the kernel itself would retry the handshake for minutes
}

BOOST_AUTO_TEST_SUITE_END()
