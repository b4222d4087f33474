#include "common/address.hpp"

#include "common/errors.hpp"

#include <algorithm>
#include <charconv>
#include <stdexcept>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

namespace poetry {

std::uint16_t parse_port(std::string_view text, bool allow_zero)
{
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || value > 65535 ||
      (value == 0 && !allow_zero)) {
    throw usage_error("invalid port '" + std::string(text) + "' (expected " + (allow_zero ? "0" : "1") + "-65535)");
  }
  return static_cast<std::uint16_t>(value);
}

address parse_address(std::string_view text)
{
  auto bad = [&](const std::string& why) { return usage_error("invalid address '" + std::string(text) + "': " + why); };
  address result{"127.0.0.1", 0};
  std::string_view port = text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) throw bad("missing ']'");
    result.host = std::string(text.substr(1, close - 1));
    if (result.host.empty()) throw bad("empty host");
    if (close + 1 >= text.size() || text[close + 1] != ':') throw bad("expected ':PORT' after ']'");
    port = text.substr(close + 2);
  } else if (auto colon = text.find(':'); colon != std::string_view::npos) {
    if (text.find(':', colon + 1) != std::string_view::npos)
      throw bad("a host that contains ':' must be in brackets, as [HOST]:PORT");
    result.host = std::string(text.substr(0, colon));
    if (result.host.empty()) throw bad("empty host");
    port = text.substr(colon + 1);
  }
  try {
    result.port = parse_port(port, false);
  } catch (const usage_error&) {
    throw bad(port.empty() ? "missing port" : "port must be a number from 1 to 65535");
  }
  return result;
}

std::string to_string(const address& where)
{
  if (where.host.find(':') != std::string::npos) return "[" + where.host + "]:" + std::to_string(where.port);
  return where.host + ":" + std::to_string(where.port);
}

resolve_error::resolve_error(int code, int system_error)
  : std::runtime_error(code == EAI_SYSTEM ? system_reason(system_error) : ::gai_strerror(code)),
    code(code),
    system_error(system_error)
{
}

static std::vector<endpoint> get_addresses(const char* host, std::uint16_t port, int flags)
{
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = flags;
  addrinfo* list = nullptr;
  std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host, service.c_str(), &hints, &list); rc != 0) throw resolve_error(rc, errno);
  std::vector<endpoint> result;
  for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    endpoint e;
    e.family = ai->ai_family;
    e.length = static_cast<socklen_t>(ai->ai_addrlen);
    std::copy_n(reinterpret_cast<const char*>(ai->ai_addr), ai->ai_addrlen, reinterpret_cast<char*>(&e.storage));
    result.push_back(e);
  }
  ::freeaddrinfo(list);
  return result;
}

// "localhost" is always the loopback addresses, even on a machine whose /etc/hosts does not
// say so (a minimal container): the name is reserved for exactly that.
static std::vector<endpoint> get_addresses_or_loopback(const std::string& host, std::uint16_t port, int flags)
{
  try {
    return get_addresses(host.c_str(), port, flags);
  } catch (const std::runtime_error&) {
    if (host != "localhost") throw;
    auto result = get_addresses("127.0.0.1", port, flags | AI_NUMERICHOST);
    auto v6 = get_addresses("::1", port, flags | AI_NUMERICHOST);
    result.insert(result.end(), v6.begin(), v6.end());
    return result;
  }
}

std::vector<endpoint> resolve(const std::string& host, std::uint16_t port)
{
  return get_addresses_or_loopback(host, port, 0);
}

std::vector<endpoint> resolve_listen(const std::string& iface, std::uint16_t port)
{
  std::vector<endpoint> result;
  try {
    result = get_addresses_or_loopback(iface, port, AI_PASSIVE);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("cannot listen on " + to_string(address{iface, port}) + ": " + e.what());
  }
  std::stable_partition(result.begin(), result.end(), [](const endpoint& e) { return e.family == AF_INET; });
  return result;
}

std::string to_string(const sockaddr* sa)
{
  char host[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    // An IPv4 peer of a dual-stack socket ("::ffff:127.0.0.1"): print it as the peer sees itself.
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      ::inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof host);
      return std::string(host) + ":" + std::to_string(ntohs(in6->sin6_port));
    }
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "unknown address";
}

}  // namespace poetry
