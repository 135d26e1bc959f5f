#include "seeds.hpp"

#include "fulcrum/parse.hpp"
#include "fulcrum/snapshot.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using fulcrum::test::ip;
using fulcrum::test::PacketBuilder;

namespace fuzzseeds {

std::vector<uint8_t> sample_snapshot() {
    SnapshotSpec spec;
    spec.generation = 1;
    spec.hash_seed = 99;
    spec.encap.src4 = IpPrefix::parse("198.18.255.0/24");
    spec.encap.src6 = IpPrefix::parse("2001:db8:ffff::/64");
    const char* vips[] = {"198.18.1.1", "198.18.1.1", "2001:db8:1::1", "198.18.1.2"};
    const uint16_t ports[] = {80, 53, 443, 5432};
    const uint8_t protos[] = {FL_PROTO_TCP, FL_PROTO_UDP, FL_PROTO_TCP, FL_PROTO_TCP};
    const Forwarding fwd[] = {Forwarding::dsr, Forwarding::gue, Forwarding::ipip, Forwarding::ipip};
    uint32_t slot = 0;
    for (uint32_t i = 0; i < 4; ++i) {
        ServiceSpec s;
        s.id = i;
        s.name = "svc" + std::to_string(i);
        s.vip = ip(vips[i]);
        s.port = ports[i];
        s.proto = protos[i];
        s.forwarding = fwd[i];
        s.scheduler = i % 2 ? Scheduler::wrr : Scheduler::maglev;
        s.table_size = 251;
        for (int k = 0; k < 3; ++k) {
            ServerSpec srv;
            srv.slot = slot++;
            srv.addr = s.vip.is_v4() ? IpAddr::v4(0xC6120200u + slot) : ip("2001:db8:2::" + std::to_string(slot));
            srv.weight = 1 + static_cast<uint32_t>(k);
            srv.backup = k == 2;
            s.servers.push_back(srv);
        }
        spec.services.push_back(s);
    }
    return build_snapshot(spec);
}

std::vector<std::vector<uint8_t>> sample_packets() {
    std::vector<std::vector<uint8_t>> out;
    PacketBuilder b;
    b.to("198.18.1.1", 80);
    out.push_back(b.build());
    b.vlans = {7};
    out.push_back(b.tcp(tcpflag::kAck).with_payload(100).build());
    PacketBuilder u;
    u.to("198.18.1.1", 53).udp().with_payload(40);
    out.push_back(u.build());
    u.df = false;
    u.more_fragments = true;
    out.push_back(u.build());
    PacketBuilder v6;
    v6.src = ip("2001:db8::9");
    v6.dst = ip("2001:db8:1::1");
    v6.dport = 443;
    v6.ipv6_ext_types = {0, 60};
    v6.ipv6_ext = {std::vector<uint8_t>(8, 0), std::vector<uint8_t>(8, 0)};
    out.push_back(v6.build());
    PacketBuilder e;
    e.to("198.18.1.1").icmp_echo();
    out.push_back(e.build());
    PacketBuilder reply;
    reply.from("198.18.1.1", 80).to("198.18.0.1", 40000);
    PacketBuilder icmp;
    icmp.to("198.18.1.1").icmp_error(3, 4, 1400, reply.build_ip());
    out.push_back(icmp.build());
    PacketBuilder big;
    big.to("198.18.1.2", 5432).with_payload(1470);
    big.df = false;
    out.push_back(big.build());
    return out;
}

}  // namespace fuzzseeds
