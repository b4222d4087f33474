// The asio_protocol model: its --pull dialogue (each complete "poems" request earns exactly one
// chunk, however TCP splits or joins the requests, and every request sent before the client's
// half-close is answered). The layer itself is tested in asio_protocol_layer_test.cpp.
#define BOOST_TEST_MODULE asio_protocol
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include "harness.hpp"

#include "common/poem.hpp"
#include "common/sockets.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

namespace bdata = boost::unit_test::data;
using namespace poetry::test;

namespace {

// A client written by hand, to send the requests exactly as a test wants them.
class raw_client {
public:
  explicit raw_client(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0))
  {
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_port = htons(port);
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_TEST_REQUIRE(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);
    int on = 1;  // every send its own segment: split requests really travel split
    ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  }

  void send(std::string_view bytes) { BOOST_TEST_REQUIRE(poetry::send_all(fd_.get(), bytes) == 0); }
  void shutdown_send() { ::shutdown(fd_.get(), SHUT_WR); }

  // Reads exactly n bytes (fails the test after 10 s without them).
  std::string read_exactly(std::size_t n)
  {
    std::string got;
    while (got.size() < n) {
      std::string more = read_some(n - got.size());
      BOOST_TEST_REQUIRE(!more.empty(), "end of stream after " << got.size() << " of " << n << " bytes");
      got += more;
    }
    return got;
  }

  // Reads until the server closes (fails the test after 10 s without it).
  std::string read_to_end()
  {
    std::string got;
    for (std::string more; !(more = read_some(65536)).empty();) got += more;
    return got;
  }

  // Waits, reading nothing, until the server has ended its side (fails the test after 10 s).
  void wait_for_the_servers_end()
  {
    pollfd p{fd_.get(), POLLRDHUP, 0};
    BOOST_TEST_REQUIRE(::poll(&p, 1, 10000) == 1, "the server did not end the connection within 10 s");
  }

  // Reads until the server resets the connection (fails the test if it ends it cleanly).
  std::string read_to_reset()
  {
    std::string got;
    for (std::string more; !(more = read_some(65536, true)).empty();) got += more;
    BOOST_TEST(reset_, "a clean end of stream after " << got.size() << " bytes, not a reset");
    return got;
  }

private:
  std::string read_some(std::size_t most, bool reset_allowed = false)
  {
    pollfd p{fd_.get(), POLLIN, 0};
    BOOST_TEST_REQUIRE(::poll(&p, 1, 10000) == 1, "nothing from the server for 10 s");
    std::string buffer(most, '\0');
    ssize_t n = ::recv(fd_.get(), buffer.data(), most, 0);
    if (n < 0 && errno == ECONNRESET && reset_allowed) return reset_ = true, "";
    BOOST_TEST_REQUIRE(n >= 0, "recv: " << std::strerror(errno));
    buffer.resize(static_cast<std::size_t>(n));
    return buffer;
  }

  poetry::unique_fd fd_;
  bool reset_ = false;  // the server reset the connection
};

}  // namespace

BOOST_AUTO_TEST_SUITE(pull)

BOOST_DATA_TEST_CASE(the_pull_client_gets_every_byte_from_the_pull_server, bdata::make(poem_kinds), kind)
{
  temp_dir dir;
  std::string poem = kind.make();
  server s("asio_protocol", dir.write("poem", poem), {"--pull", "--delay", "0", "--num-bytes", "7"});
  auto r = run_client("asio_protocol", {"--pull", s.address()});
  BOOST_TEST(r.status == 0, r.err);
  BOOST_TEST(same_bytes(r.out, poem));
  BOOST_TEST(s.process().wait_for_output("Sent " + std::to_string(poem.size()) + " bytes", 10s));
}

BOOST_AUTO_TEST_CASE(each_complete_request_earns_exactly_one_chunk)
{
  temp_dir dir;
  std::string poem = large_poem(400);  // 20 chunks of 20 bytes: more than the test asks for
  server s("asio_protocol", dir.write("poem", poem), {"--pull", "--delay", "0", "--num-bytes", "20"});
  raw_client c(s.port());
  std::string got;

  // Split into single bytes: one request.
  for (char letter : std::string("poems")) c.send(std::string_view(&letter, 1));
  got += c.read_exactly(20);
  // Three requests in one write: three chunks.
  c.send("poemspoemspoems");
  got += c.read_exactly(60);
  // Split across writes in the middle of requests: two.
  c.send("po");
  c.send("emspoe");
  c.send("ms");
  got += c.read_exactly(40);
  // Other bytes are not requests, and a false start does not hide the real one: one.
  c.send("xxpopoemsx");
  got += c.read_exactly(20);

  // Seven requests sent. Closing our side ends the dialogue: the server closes too, and by
  // then it must have sent seven chunks, not one byte more, then reset the poem cut short.
  c.shutdown_send();
  got += c.read_to_reset();
  BOOST_TEST(got.size() == 140u);
  BOOST_TEST(same_bytes(got, poem.substr(0, 140)));
  BOOST_TEST(s.process().wait_for_output("after 140 of 400 bytes: the client asked for no more", 10s),
             s.process().out());
}

// A client that sends all its requests at once and half-closes (printf 'poems%.0s' $(seq N) |
// nc -N) gets an answer to every one of them.
BOOST_DATA_TEST_CASE(requests_sent_before_the_half_close_are_all_answered, bdata::make({3, 41, 50, 51}), requests)
{
  temp_dir dir;
  std::string poem = large_poem(1000);  // 50 chunks of 20 bytes
  server s("asio_protocol", dir.write("poem", poem), {"--pull", "--delay", "0", "--num-bytes", "20"});
  raw_client c(s.port());
  std::string asked;
  for (int i = 0; i < requests; ++i) asked += "poems";
  c.send(asked);
  c.shutdown_send();
  std::size_t answered = std::min<std::size_t>(requests * 20, poem.size());
  if (answered < poem.size()) {
    // Cut short: every chunk asked for, then a reset, and the server says so. The reset must
    // not destroy the answers, even when the client reads only after it (as nc may).
    c.wait_for_the_servers_end();
    BOOST_TEST(same_bytes(c.read_to_reset(), poem.substr(0, answered)));
    BOOST_TEST(s.process().wait_for_output("after " + std::to_string(answered) + " of 1000 bytes", 10s),
               s.process().out());
  } else {
    // Asked for the whole poem: all of it, a clean end, and "Sent".
    BOOST_TEST(same_bytes(c.read_to_end(), poem));
    BOOST_TEST(s.process().wait_for_output("Sent 1000 bytes", 10s), s.process().out());
    BOOST_TEST(s.process().out().find("Lost") == std::string::npos, s.process().out());
  }
}

// The server's count is what the client got: a client that asks for a poem larger than the
// socket buffers, sent in one chunk, and half-closes at once gets all of it, and the server
// says "Sent" (it used to say "Lost ... after 0" bytes, its write still in flight at the
// client's end of stream).
BOOST_AUTO_TEST_CASE(a_whole_poem_asked_for_before_the_half_close_is_sent_not_lost)
{
  temp_dir dir;
  std::string poem = large_poem(3'200'000);
  server s("asio_protocol", dir.write("poem", poem), {"--pull", "--delay", "0", "--num-bytes", "4000000"});
  raw_client c(s.port());
  c.send("poems");
  c.shutdown_send();
  BOOST_TEST(same_bytes(c.read_to_end(), poem));
  BOOST_TEST(s.process().wait_for_output("Sent 3200000 bytes", 10s), s.process().out());
  BOOST_TEST(s.process().out().find("Lost") == std::string::npos, s.process().out());
}

BOOST_AUTO_TEST_CASE(after_the_last_chunk_the_server_half_closes_without_being_asked_again)
{
  temp_dir dir;
  std::string poem = large_poem(100);  // 5 chunks
  server s("asio_protocol", dir.write("poem", poem), {"--pull", "--delay", "0", "--num-bytes", "20"});
  raw_client c(s.port());
  c.send("poemspoemspoemspoemspoems");
  BOOST_TEST(same_bytes(c.read_to_end(), poem));
  c.shutdown_send();
  BOOST_TEST(s.process().wait_for_output("Sent 100 bytes", 10s));
  BOOST_TEST(s.process().out().find("Lost") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_pull_server_still_waits_the_delay_between_chunks)
{
  temp_dir dir;
  std::string poem = large_poem(100);  // 5 chunks: at least 4 delays
  server s("asio_protocol", dir.write("poem", poem), {"--pull", "--delay", "0.1", "--num-bytes", "20"});
  auto r = run_client("asio_protocol", {"--pull", s.address()});
  BOOST_TEST(r.status == 0, r.err);
  BOOST_TEST(same_bytes(r.out, poem));
  BOOST_TEST(r.seconds >= 0.4 * 0.9);
}

BOOST_AUTO_TEST_CASE(the_pull_client_also_reads_a_server_that_pushes)
{
  temp_dir dir;
  std::string poem = utf8_poem();
  // Requests sent to a pushing server are read and dropped.
  server s("asio_protocol", dir.write("poem", poem), {"--delay", "0.001"});
  auto r = run_client("asio_protocol", {"--pull", s.address()});
  BOOST_TEST(r.status == 0, r.err);
  BOOST_TEST(same_bytes(r.out, poem));
}

BOOST_AUTO_TEST_SUITE_END()
