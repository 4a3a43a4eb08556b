#include "km/enforcer/packet_log.h"

#include <arpa/inet.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>

#include <cstring>

#include "km/proxy/egress_policy.h"

namespace km::enforcer {

std::vector<DroppedPacket> parse_nflog(std::span<const uint8_t> d) {
  std::vector<DroppedPacket> out;
  size_t off = 0;
  while (off + NLMSG_HDRLEN <= d.size()) {
    nlmsghdr h;
    std::memcpy(&h, d.data() + off, sizeof h);
    if (h.nlmsg_len < NLMSG_HDRLEN || off + h.nlmsg_len > d.size()) break;
    size_t end = off + h.nlmsg_len;
    if (h.nlmsg_type == ((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)) {
      size_t a = off + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
      while (a + NLA_HDRLEN <= end) {
        nlattr attr;
        std::memcpy(&attr, d.data() + a, sizeof attr);
        if (attr.nla_len < NLA_HDRLEN || a + attr.nla_len > end) break;
        if ((attr.nla_type & NLA_TYPE_MASK) == NFULA_PAYLOAD) {
          const uint8_t* p = d.data() + a + NLA_HDRLEN;
          size_t n = attr.nla_len - NLA_HDRLEN;
          if (n >= 20 && (p[0] >> 4) == 4) {
            size_t ihl = size_t{p[0] & 0x0fu} * 4;
            DroppedPacket pkt;
            uint8_t proto = p[9];
            pkt.addr = proxy::IpAddress::from_bytes(p + 16, 4).to_string();
            pkt.proto = proto == 17 ? "udp" : proto == 6 ? "tcp" : proto == 1 ? "icmp" : std::to_string(proto);
            if ((proto == 17 || proto == 6) && ihl >= 20 && n >= ihl + 4) pkt.port = static_cast<uint16_t>((p[ihl + 2] << 8) | p[ihl + 3]);
            out.push_back(std::move(pkt));
          }
        }
        a += NLA_ALIGN(attr.nla_len);
      }
    }
    off += NLMSG_ALIGN(h.nlmsg_len);
  }
  return out;
}

void PacketLog::serve(int fd) {
  sock_.assign(fd);
  read();
}

void PacketLog::read() {
  sock_.async_read_some(asio::buffer(buf_), [this](std::error_code ec, size_t n) {
    // ENOBUFS (the kernel dropped log messages under a flood) is not fatal; anything else is.
    if (ec && ec != asio::error::no_buffer_space) return;
    if (!ec) {
      for (const auto& p : parse_nflog(std::span<const uint8_t>(buf_.data(), n))) {
        nlohmann::json f{{"proto", p.proto}, {"addr", p.addr}, {"verdict", "deny"}, {"rule", "default deny"},
                         {"reason", p.proto == "udp" ? "UDP other than DNS is not forwarded" : "only TCP and DNS leave a sandbox"}};
        if (p.port) f["port"] = p.port;
        audit_.emit("packet", std::move(f));
      }
    }
    read();
  });
}

}  // namespace km::enforcer
