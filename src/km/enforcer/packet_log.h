// Audit of the packets the link rules drop (everything but TCP and DNS: other UDP such as
// QUIC, ICMP, ...): the rules send a rate-limited copy of each packet's first bytes to an NFLOG
// group, and this reads them from the inherited netlink socket and records one audit event
// per packet. parse_nflog() is pure (and fuzzed through the replay corpus of the tests).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "km/enforcer/asio.h"

#include "km/enforcer/audit.h"

namespace km::enforcer {

struct DroppedPacket {
  std::string proto;  // "udp", "icmp", "tcp", or the IP protocol number
  std::string addr;   // destination
  uint16_t port = 0;  // destination port (UDP/TCP), 0 otherwise
};

// The packets in one datagram read from an NFLOG netlink socket. Malformed parts are skipped.
std::vector<DroppedPacket> parse_nflog(std::span<const uint8_t> datagram);

class PacketLog {
 public:
  PacketLog(asio::io_context& io, AuditLog& audit) : sock_(io), audit_(audit) {}
  void serve(int fd);

 private:
  void read();
  asio::posix::stream_descriptor sock_;
  AuditLog& audit_;
  std::array<uint8_t, 65536> buf_{};
};

}  // namespace km::enforcer
