// Addresses as the user writes them (PORT, HOST:PORT, [IPV6]:PORT) and as the system gives them.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <sys/socket.h>

namespace poetry {

struct address {
  std::string host;  // a name, an IPv4 address or an IPv6 address (without brackets)
  std::uint16_t port = 0;
  bool operator==(const address&) const = default;
};

// Parses PORT, HOST:PORT or [IPV6]:PORT; HOST defaults to 127.0.0.1. Throws usage_error.
address parse_address(std::string_view text);

// Parses a port number 0-65535 (the server's --port). Throws usage_error.
std::uint16_t parse_port(std::string_view text, bool allow_zero);

// "127.0.0.1:10000", "[::1]:10000", "example.org:10000".
std::string to_string(const address& where);

// One address the system resolved: what socket(), bind() and connect() take.
struct endpoint {
  int family = AF_UNSPEC;
  sockaddr_storage storage{};
  socklen_t length = sizeof storage;  // what accept may fill in
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
  sockaddr* get() { return reinterpret_cast<sockaddr*>(&storage); }
};

// What resolve throws: the resolver's reason ("Name or service not known") and its code, an
// EAI_* value (EAI_SYSTEM: system_error says why).
struct resolve_error : std::runtime_error {
  resolve_error(int code, int system_error);
  int code;
  int system_error;
};

// Every address getaddrinfo gives for host:port, in its order, to be tried in turn.
// Throws resolve_error.
std::vector<endpoint> resolve(const std::string& host, std::uint16_t port);

// The addresses to listen on for an interface name, IPv4 first (so that "localhost"
// serves the clients' default 127.0.0.1). Throws std::runtime_error("cannot listen on IFACE:PORT: reason").
std::vector<endpoint> resolve_listen(const std::string& iface, std::uint16_t port);

// "127.0.0.1:51234" or "[::1]:51234" for a socket address.
std::string to_string(const sockaddr* sa);

}  // namespace poetry
