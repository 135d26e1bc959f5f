#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <memory>
#include <random>

#include "fulcrum/bytes.hpp"
#include "fulcrum/flow.hpp"
#include "fulcrum/parse.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using fulcrum::test::PacketBuilder;

namespace {

Drop parse(const std::vector<uint8_t>& f, Parsed& p, bool verify = true) {
    // Copy into an exactly sized heap buffer so sanitizers catch any read past the end.
    std::unique_ptr<uint8_t[]> buf(new uint8_t[f.size() ? f.size() : 1]);
    if (!f.empty()) std::memcpy(buf.get(), f.data(), f.size());
    ParseOptions o;
    o.verify_ipv4_checksum = verify;
    return parse_packet({buf.get(), f.size()}, p, o);
}

PacketBuilder v6() {
    PacketBuilder b;
    b.src = test::ip("2001:db8::1");
    b.dst = test::ip("2001:db8:1::1");
    return b;
}

}  // namespace

TEST(Parse, Ipv4Tcp) {
    PacketBuilder b;
    b.from("198.18.0.7", 41000).to("198.18.1.1", 443).tcp(tcpflag::kSyn);
    Parsed p;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.l3, L3::ipv4);
    EXPECT_EQ(p.l3_off, 14);
    EXPECT_EQ(p.l4_off, 34);
    EXPECT_EQ(p.l3_len, 40);
    EXPECT_EQ(p.l4_proto, ipproto::kTcp);
    EXPECT_EQ(p.sport, 41000);
    EXPECT_EQ(p.dport, 443);
    EXPECT_EQ(p.tcp_flags, tcpflag::kSyn);
    EXPECT_EQ(p.ttl, 64);
    EXPECT_TRUE(p.df);
    EXPECT_EQ(p.frag, Frag::none);
    EXPECT_EQ(load_be32(p.src), 0xC6120007u);
    EXPECT_EQ(load_be32(p.dst), 0xC6120101u);
}

TEST(Parse, Ipv6Udp) {
    auto b = v6();
    b.udp().with_payload(10);
    b.sport = 5353;
    b.dport = 53;
    Parsed p;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.l3, L3::ipv6);
    EXPECT_EQ(p.l4_off, 54);
    EXPECT_EQ(p.l3_len, 40 + 18);
    EXPECT_EQ(p.l4_proto, ipproto::kUdp);
    EXPECT_EQ(p.sport, 5353);
    EXPECT_EQ(p.dport, 53);
    EXPECT_TRUE(p.df);
    EXPECT_EQ(0, std::memcmp(p.src, b.src.bytes.data(), 16));
}

TEST(Parse, VlanTags) {
    PacketBuilder b;
    b.vlans = {100};
    Parsed p;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.vlan_count, 1);
    EXPECT_EQ(p.vlan_tci[0], 100);
    EXPECT_EQ(p.l3_off, 18);
    b.vlans = {100, 200};
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.vlan_count, 2);
    EXPECT_EQ(p.vlan_tci[1], 200);
    EXPECT_EQ(p.l3_off, 22);
    EXPECT_EQ(p.sport, 40000);
    b.vlans = {1, 2, 3};
    EXPECT_EQ(parse(b.build(), p), Drop::vlan_too_many);
}

TEST(Parse, ArpAndOtherEthertypes) {
    std::vector<uint8_t> arp(14 + 28, 0);
    arp[12] = 0x08;
    arp[13] = 0x06;
    Parsed p;
    ASSERT_EQ(parse(arp, p), Drop::none);
    EXPECT_EQ(p.l3, L3::arp);
    arp.resize(14 + 27);
    EXPECT_EQ(parse(arp, p), Drop::arp_truncated);
    std::vector<uint8_t> lldp(60, 0);
    lldp[12] = 0x88;
    lldp[13] = 0xCC;
    ASSERT_EQ(parse(lldp, p), Drop::none);
    EXPECT_EQ(p.l3, L3::other);
    EXPECT_EQ(p.ethertype, 0x88CC);
}

TEST(Parse, EthernetPaddingIsNotPayload) {
    PacketBuilder b;
    b.udp();
    auto f = b.build();  // 14 + 28 = 42 bytes
    f.resize(60, 0);     // minimum Ethernet frame
    Parsed p;
    ASSERT_EQ(parse(f, p), Drop::none);
    EXPECT_EQ(p.l3_len, 28);
    EXPECT_EQ(p.l3_end(), 42);
}

TEST(Parse, Ipv4OptionsAreSkipped) {
    PacketBuilder b;
    b.ipv4_options = {0x01, 0x01, 0x01, 0x00};  // NOP NOP NOP EOL
    Parsed p;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.l4_off, 14 + 24);
    EXPECT_EQ(p.dport, 80);
}

// Option areas that follow RFC 791 3.1 parse; the others are dropped whatever the packet's
// destination, like any other malformed header.
TEST(Parse, Ipv4OptionLengths) {
    struct Case {
        const char* what;
        std::vector<uint8_t> options;  // 4-byte multiples: the builder sets IHL from the size
        Drop expect;
    };
    const Case cases[] = {
        {"NOP NOP NOP EOL", {0x01, 0x01, 0x01, 0x00}, Drop::none},
        {"router alert (length 4)", {0x94, 0x04, 0x00, 0x00}, Drop::none},
        {"garbage after end of list", {0x00, 0xFF, 0x00, 0xFF}, Drop::none},
        {"record route filling the 40-byte area",
         [] {
             std::vector<uint8_t> o(40, 0);
             o[0] = 0x07, o[1] = 39, o[2] = 4;
             return o;
         }(),
         Drop::none},
        {"length 0", {0x07, 0x00, 0x00, 0x00}, Drop::ipv4_bad_options},
        {"length 1", {0x44, 0x01, 0x00, 0x00}, Drop::ipv4_bad_options},
        {"length past the header",
         {0x07, 0x0B, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00},
         Drop::ipv4_bad_options},
        {"second option past the header",
         {0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x83, 0x08},
         Drop::ipv4_bad_options},
        {"type byte with no room for its length", {0x01, 0x01, 0x01, 0x07}, Drop::ipv4_bad_options},
    };
    for (const Case& c : cases) {
        PacketBuilder b;
        b.ipv4_options = c.options;
        Parsed p;
        EXPECT_EQ(parse(b.build(), p), c.expect) << c.what;
        if (c.expect == Drop::none) {
            EXPECT_EQ(p.l4_off, 14 + 20 + c.options.size()) << c.what;
        }
    }
}

TEST(Parse, Ipv4Fragments) {
    PacketBuilder b;
    b.udp().with_payload(100);
    b.df = false;
    b.more_fragments = true;
    Parsed p;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.frag, Frag::first);
    EXPECT_EQ(p.sport, 40000);
    b.frag_offset = 1480;
    b.more_fragments = false;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.frag, Frag::later);
    EXPECT_EQ(p.sport, 0);
    EXPECT_EQ(p.dport, 0);
    // Both fragments key alike.
    PacketBuilder first = b;
    first.frag_offset = 0;
    first.more_fragments = true;
    Parsed p1;
    ASSERT_EQ(parse(first.build(), p1), Drop::none);
    EXPECT_EQ(flow_key_of(p1), flow_key_of(p));
}

TEST(Parse, Ipv6ExtensionHeadersAreSkipped) {
    auto b = v6();
    b.ipv6_ext_types = {0, 43, 60};
    b.ipv6_ext = {std::vector<uint8_t>(8, 0), std::vector<uint8_t>(24, 0), std::vector<uint8_t>(16, 0)};
    b.ipv6_ext[1][1] = 2;  // routing header: (2 + 1) * 8 = 24 bytes
    b.ipv6_ext[2][1] = 1;  // destination options: 16 bytes
    b.tcp(tcpflag::kAck);
    Parsed p;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.l4_proto, ipproto::kTcp);
    EXPECT_EQ(p.l4_off, 14 + 40 + 8 + 24 + 16);
    EXPECT_EQ(p.dport, 80);
    EXPECT_EQ(p.tcp_flags, tcpflag::kAck);
}

TEST(Parse, Ipv6Fragments) {
    auto b = v6();
    b.udp().with_payload(64);
    b.ipv6_frag_header = true;
    b.more_fragments = true;
    Parsed p;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.frag, Frag::first);
    EXPECT_EQ(p.dport, 80);
    b.frag_offset = 1232;
    b.more_fragments = false;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.frag, Frag::later);
    EXPECT_EQ(p.l4_proto, ipproto::kUdp);
    EXPECT_EQ(p.dport, 0);
    // An atomic fragment (offset 0, no more fragments) is a whole datagram.
    b.frag_offset = 0;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.frag, Frag::none);
    EXPECT_EQ(p.dport, 80);
}

TEST(Parse, IcmpEcho) {
    PacketBuilder b;
    b.icmp_echo(7, 9);
    Parsed p;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.icmp, IcmpKind::echo_request);
    auto c = v6();
    c.icmp_echo();
    ASSERT_EQ(parse(c.build(), p), Drop::none);
    EXPECT_EQ(p.icmp, IcmpKind::echo_request);
    EXPECT_EQ(p.icmp_type, 128);
}

TEST(Parse, IcmpFragmentationNeededQuotesTheFlow) {
    PacketBuilder inner;  // a server's DSR reply from the VIP to the client
    inner.from("198.18.1.1", 80).to("198.18.0.7", 41000).tcp(tcpflag::kAck).with_payload(100);
    PacketBuilder b;
    b.from("198.18.9.9").to("198.18.1.1");
    auto quoted = inner.build_ip();
    quoted.resize(28);  // header + 8 bytes, the minimum RFC 792 guarantees
    b.icmp_error(3, 4, 1400, quoted);
    Parsed p;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.icmp, IcmpKind::error);
    EXPECT_EQ(p.icmp_mtu, 1400u);
    EXPECT_EQ(p.quoted.proto, ipproto::kTcp);
    EXPECT_EQ(p.quoted.sport, 80);
    EXPECT_EQ(p.quoted.dport, 41000);
    EXPECT_EQ(load_be32(p.quoted.src), 0xC6120101u);
    EXPECT_EQ(load_be32(p.quoted.dst), 0xC6120007u);
    // Less than 8 bytes of L4 cannot name the flow.
    quoted.resize(27);
    b.icmp_error(3, 4, 1400, quoted);
    EXPECT_EQ(parse(b.build(), p), Drop::icmp_inner_truncated);
    // A quoted packet that is not IPv4.
    quoted = inner.build_ip();
    quoted[0] = 0x65;
    b.icmp_error(3, 4, 1400, quoted);
    EXPECT_EQ(parse(b.build(), p), Drop::icmp_inner_bad);
}

TEST(Parse, Icmpv6PacketTooBigQuotesTheFlow) {
    PacketBuilder inner;
    inner.src = test::ip("2001:db8:1::1");
    inner.dst = test::ip("2001:db8::7");
    inner.sport = 443;
    inner.dport = 50000;
    inner.udp().with_payload(200);
    auto b = v6();
    b.dst = inner.src;
    b.icmp_error(2, 0, 1280, inner.build_ip());
    Parsed p;
    ASSERT_EQ(parse(b.build(), p), Drop::none);
    EXPECT_EQ(p.icmp, IcmpKind::error);
    EXPECT_EQ(p.icmp_mtu, 1280u);
    EXPECT_EQ(p.quoted.is_v6, 1);
    EXPECT_EQ(p.quoted.proto, ipproto::kUdp);
    EXPECT_EQ(p.quoted.sport, 443);
    EXPECT_EQ(p.quoted.dport, 50000);
    auto q = inner.build_ip();
    q.resize(40 + 4);
    b.icmp_error(2, 0, 1280, q);
    EXPECT_EQ(parse(b.build(), p), Drop::icmp_inner_truncated);
}

// ---- every malformed class has its reason ----

TEST(ParseMalformed, Layer2) {
    Parsed p;
    EXPECT_EQ(parse(std::vector<uint8_t>(13, 0), p), Drop::eth_truncated);
    EXPECT_EQ(parse({}, p), Drop::eth_truncated);
    std::vector<uint8_t> f(16, 0);
    f[12] = 0x81;
    f[13] = 0x00;
    EXPECT_EQ(parse(f, p), Drop::vlan_truncated);
    EXPECT_EQ(parse(std::vector<uint8_t>(70000, 0), p), Drop::frame_too_long);
}

TEST(ParseMalformed, Ipv4) {
    PacketBuilder b;
    auto f = b.build();
    Parsed p;
    auto t = f;
    t.resize(14 + 19);
    EXPECT_EQ(parse(t, p), Drop::ipv4_truncated);
    t = f;
    t[14] = 0x55;
    EXPECT_EQ(parse(t, p), Drop::ipv4_bad_version);
    t = f;
    t[14] = 0x44;
    EXPECT_EQ(parse(t, p), Drop::ipv4_bad_ihl);
    t = f;
    t[14] = 0x4F;  // 60-byte header in a 40-byte packet
    t.resize(14 + 40);
    EXPECT_EQ(parse(t, p), Drop::ipv4_truncated);
    t = f;
    store_be16(&t[16], 200);  // longer than the frame
    EXPECT_EQ(parse(t, p, false), Drop::ipv4_bad_length);
    store_be16(&t[16], 10);   // shorter than the header
    EXPECT_EQ(parse(t, p, false), Drop::ipv4_bad_length);
    b.bad_ip_checksum = true;
    EXPECT_EQ(parse(b.build(), p), Drop::ipv4_bad_checksum);
    EXPECT_EQ(parse(b.build(), p, false), Drop::none);  // the NIC verified it: not checked
    b.bad_ip_checksum = false;
    b.frag_offset = 65528;
    b.df = false;
    EXPECT_EQ(parse(b.build(), p), Drop::ipv4_bad_fragment);
}

TEST(ParseMalformed, Ipv6) {
    auto b = v6();
    auto f = b.build();
    Parsed p;
    auto t = f;
    t.resize(14 + 39);
    EXPECT_EQ(parse(t, p), Drop::ipv6_truncated);
    t = f;
    t[14] = 0x40;
    EXPECT_EQ(parse(t, p), Drop::ipv6_bad_version);
    t = f;
    store_be16(&t[18], 500);
    EXPECT_EQ(parse(t, p), Drop::ipv6_bad_length);
    t = f;
    store_be16(&t[18], 0);
    t[20] = 0;  // hop-by-hop with payload length 0: a jumbogram
    EXPECT_EQ(parse(t, p), Drop::ipv6_bad_length);
    // An extension header that claims more bytes than the packet has.
    b.ipv6_ext_types = {60};
    b.ipv6_ext = {std::vector<uint8_t>(8, 0)};
    b.ipv6_ext[0][1] = 10;
    EXPECT_EQ(parse(b.build(), p), Drop::ipv6_ext_truncated);
    // More extension headers than the parser follows.
    b.ipv6_ext_types.assign(12, 60);
    b.ipv6_ext.assign(12, std::vector<uint8_t>(8, 0));
    EXPECT_EQ(parse(b.build(), p), Drop::ipv6_ext_too_many);
}

TEST(ParseMalformed, Layer4) {
    Parsed p;
    PacketBuilder b;
    auto f = b.build();
    auto t = f;
    t.resize(14 + 20 + 19);
    store_be16(&t[16], 39);
    EXPECT_EQ(parse(t, p, false), Drop::tcp_truncated);
    t = f;
    t[14 + 20 + 12] = 4 << 4;
    EXPECT_EQ(parse(t, p), Drop::tcp_bad_offset);
    t[14 + 20 + 12] = 15 << 4;
    EXPECT_EQ(parse(t, p), Drop::tcp_bad_offset);

    b.udp();
    f = b.build();
    t = f;
    t.resize(14 + 20 + 7);
    store_be16(&t[16], 27);
    EXPECT_EQ(parse(t, p, false), Drop::udp_truncated);
    t = f;
    store_be16(&t[14 + 20 + 4], 7);
    EXPECT_EQ(parse(t, p), Drop::udp_bad_length);
    store_be16(&t[14 + 20 + 4], 9);
    EXPECT_EQ(parse(t, p), Drop::udp_bad_length);

    b.icmp_echo();
    f = b.build();
    t = f;
    t.resize(14 + 20 + 7);
    store_be16(&t[16], 27);
    EXPECT_EQ(parse(t, p, false), Drop::icmp_truncated);
}

// ---- properties ----

TEST(ParseProperty, EveryTruncationIsRejectedOrConsistent) {
    std::vector<std::vector<uint8_t>> frames;
    PacketBuilder b;
    frames.push_back(b.build());
    b.vlans = {5, 6};
    frames.push_back(b.udp().with_payload(30).build());
    auto c = v6();
    c.ipv6_ext_types = {0, 44};
    c.ipv6_ext = {std::vector<uint8_t>(8, 0), std::vector<uint8_t>(8, 0)};
    frames.push_back(c.tcp(tcpflag::kAck).build());
    PacketBuilder inner;
    inner.from("198.18.1.1", 80).to("198.18.0.7", 41000);
    PacketBuilder e;
    e.to("198.18.1.1");
    frames.push_back(e.icmp_error(3, 4, 1400, inner.build_ip()).build());
    for (const auto& f : frames) {
        Parsed full;
        ASSERT_EQ(parse(f, full), Drop::none);
        for (size_t n = 0; n < f.size(); ++n) {
            std::vector<uint8_t> t(f.begin(), f.begin() + static_cast<long>(n));
            Parsed p;
            const Drop d = parse(t, p, false);
            // Cutting anything below the IP packet's end must be detected.
            EXPECT_NE(d, Drop::none) << "truncated to " << n << " of " << f.size();
        }
    }
}

TEST(ParseProperty, RandomMutationsNeverEscapeTheBuffer) {
    std::mt19937 rng(12345);
    PacketBuilder b;
    auto c = v6();
    c.ipv6_ext_types = {0, 43};
    c.ipv6_ext = {std::vector<uint8_t>(8, 0), std::vector<uint8_t>(8, 0)};
    std::vector<std::vector<uint8_t>> seeds = {b.build(), b.udp().build(), c.build(),
                                               PacketBuilder().icmp_echo().build()};
    size_t ok = 0, bad = 0;
    for (int iter = 0; iter < 20000; ++iter) {
        auto f = seeds[static_cast<size_t>(iter) % seeds.size()];
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int k = 0; k < flips; ++k) f[rng() % f.size()] = static_cast<uint8_t>(rng());
        if (rng() % 3 == 0) f.resize(rng() % (f.size() + 1));
        Parsed p;
        const Drop d = parse(f, p, rng() % 2);
        (d == Drop::none ? ok : bad)++;
        if (d == Drop::none && p.is_ip()) {
            EXPECT_LE(p.l3_end(), f.size());
            EXPECT_LE(p.l4_off, p.l3_end());
        }
    }
    EXPECT_GT(ok, 0u);
    EXPECT_GT(bad, 0u);
}

TEST(ParseProperty, RandomEncodeParseRoundTrip) {
    std::mt19937 rng(777);
    for (int iter = 0; iter < 5000; ++iter) {
        PacketBuilder b;
        const bool is6 = rng() % 2;
        if (is6) {
            b.src.family = b.dst.family = Family::v6;
            for (auto& x : b.src.bytes) x = static_cast<uint8_t>(rng());
            for (auto& x : b.dst.bytes) x = static_cast<uint8_t>(rng());
        } else {
            b.src = IpAddr::v4(static_cast<uint32_t>(rng()));
            b.dst = IpAddr::v4(static_cast<uint32_t>(rng()));
        }
        b.sport = static_cast<uint16_t>(rng());
        b.dport = static_cast<uint16_t>(rng());
        b.ttl = static_cast<uint8_t>(rng());
        b.tos = static_cast<uint8_t>(rng());
        const unsigned nv = rng() % 3;
        for (unsigned i = 0; i < nv; ++i) b.vlans.push_back(static_cast<uint16_t>(rng() & 0xFFF));
        if (rng() % 2)
            b.tcp(static_cast<uint8_t>(rng() & 0x3F));
        else
            b.udp();
        b.with_payload(rng() % 300);
        Parsed p;
        ASSERT_EQ(parse(b.build(), p), Drop::none);
        EXPECT_EQ(p.vlan_count, nv);
        EXPECT_EQ(p.is_v6(), is6);
        EXPECT_EQ(0, std::memcmp(p.src, b.src.bytes.data(), is6 ? 16 : 4));
        EXPECT_EQ(0, std::memcmp(p.dst, b.dst.bytes.data(), is6 ? 16 : 4));
        EXPECT_EQ(p.sport, b.sport);
        EXPECT_EQ(p.dport, b.dport);
        EXPECT_EQ(p.ttl, b.ttl);
        EXPECT_EQ(p.tos, b.tos);
        EXPECT_EQ(p.l4_proto, b.proto);
        if (b.proto == 6) {
            EXPECT_EQ(p.tcp_flags, b.tcp_flags);
        }
    }
}

namespace {

// Parses `f` with parse_packet (the inline fast path, else the general parser) and with
// parse_packet_full, both into structs pre-filled with garbage, and checks that they agree on
// the result and on every byte they write. Returns whether the fast path took the frame.
bool expect_fast_parser_agrees(const std::vector<uint8_t>& f, bool verify) {
    std::unique_ptr<uint8_t[]> buf(new uint8_t[f.size() ? f.size() : 1]);
    if (!f.empty()) std::memcpy(buf.get(), f.data(), f.size());
    const std::span<const uint8_t> bytes{buf.get(), f.size()};
    ParseOptions o;
    o.verify_ipv4_checksum = verify;
    Parsed a, b, c;
    std::memset(static_cast<void*>(&a), 0xA5, sizeof a);
    std::memset(static_cast<void*>(&b), 0xA5, sizeof b);
    std::memset(static_cast<void*>(&c), 0x5A, sizeof c);
    const Drop da = parse_packet(bytes, a, o);
    const Drop db = parse_packet_full(bytes, b, o);
    const bool fast = detail::parse_ipv4_fast(bytes.data(), bytes.size(), c, verify);
    EXPECT_EQ(da, db);
    EXPECT_EQ(0, std::memcmp(&a, &b, offsetof(Parsed, quoted))) << "frame of " << f.size() << " bytes";
    if (fast) {
        // The fast path accepts only what the general parser accepts, and writes all of it.
        EXPECT_EQ(db, Drop::none);
        EXPECT_EQ(0, std::memcmp(&c, &b, offsetof(Parsed, quoted))) << "frame of " << f.size() << " bytes";
    }
    // With the packet checks (the forwarding path's fast lane): the same frames less those with
    // TTL 0 or TCP flags no stack sends.
    detail::Ipv4Fast q;
    const bool checked = detail::check_ipv4_fast<true>(bytes.data(), bytes.size(), verify, q);
    // Flag sets no stack sends: none (of the low six), or SYN with FIN or RST.
    const uint8_t fl = b.tcp_flags & 0x3F;
    const bool bad_flags = fl == 0 || ((fl & tcpflag::kSyn) && (fl & (tcpflag::kFin | tcpflag::kRst)));
    EXPECT_EQ(checked, fast && b.ttl != 0 && !(b.l4_proto == ipproto::kTcp && bad_flags))
        << "frame of " << f.size() << " bytes";
    return fast;
}

std::vector<std::vector<uint8_t>> parser_seeds() {
    std::vector<std::vector<uint8_t>> s;
    PacketBuilder b;
    s.push_back(b.build());                                   // IPv4 TCP SYN
    s.push_back(PacketBuilder().tcp(tcpflag::kAck).with_payload(100).build());
    s.push_back(PacketBuilder().udp().build());                // UDP, empty payload
    s.push_back(PacketBuilder().udp().with_payload(3).build());  // short: Ethernet padding
    PacketBuilder opt;
    opt.ipv4_options = {1, 1, 1, 0};
    s.push_back(opt.build());
    PacketBuilder vl;
    vl.vlans = {7};
    s.push_back(vl.udp().build());
    PacketBuilder fr;
    fr.more_fragments = true;
    s.push_back(fr.udp().with_payload(40).build());
    PacketBuilder later;
    later.frag_offset = 64;
    s.push_back(later.udp().with_payload(40).build());
    PacketBuilder nodf;
    nodf.df = false;
    nodf.tos = 0xB8;
    s.push_back(nodf.tcp(tcpflag::kFin | tcpflag::kAck).build());
    PacketBuilder badck;
    badck.bad_ip_checksum = true;
    s.push_back(badck.build());
    s.push_back(PacketBuilder().icmp_echo().build());
    s.push_back(v6().build());
    s.push_back(v6().udp().with_payload(20).build());
    PacketBuilder other;
    other.proto = 47;  // GRE
    s.push_back(other.with_payload(24).build());
    return s;
}

}  // namespace

TEST(ParseFast, AgreesWithTheGeneralParserOnWellFormedFrames) {
    size_t fast = 0;
    for (const auto& f : parser_seeds())
        for (bool verify : {true, false}) fast += expect_fast_parser_agrees(f, verify);
    // The five untagged IPv4 TCP/UDP frames without options or fragments, with both settings, and
    // the bad-checksum one without verification.
    EXPECT_EQ(fast, 2u * 5 + 1);
}

TEST(ParseFast, AgreesOnEveryTruncation) {
    for (const auto& f : parser_seeds())
        for (size_t n = 0; n <= f.size(); ++n)
            expect_fast_parser_agrees(std::vector<uint8_t>(f.begin(), f.begin() + static_cast<long>(n)), true);
}

TEST(ParseFast, AgreesOnMalformedFields) {
    // Each header field the fast path reads, set to values on both sides of every check.
    const auto base = PacketBuilder().tcp(tcpflag::kAck).with_payload(8).build();
    const auto ubase = PacketBuilder().udp().with_payload(8).build();
    const size_t ip = eth::kHeaderLen, l4 = ip + 20;
    size_t fast = 0, cases = 0;
    auto run = [&](std::vector<uint8_t> f, size_t at, uint8_t v) {
        f[at] = v;
        for (bool verify : {true, false}) {
            fast += expect_fast_parser_agrees(f, verify);
            ++cases;
        }
    };
    for (unsigned v = 0; v < 256; ++v) {
        const auto b = static_cast<uint8_t>(v);
        for (size_t at : {size_t{12}, size_t{13}, ip, ip + 2, ip + 3, ip + 6, ip + 7, ip + 8, ip + 9, l4 + 12, l4 + 13})
            run(base, at, b);
        for (size_t at : {ip + 2, ip + 3, ip + 6, ip + 8, ip + 9, l4 + 4, l4 + 5}) run(ubase, at, b);
    }
    EXPECT_GT(fast, 0u);
    EXPECT_LT(fast, cases);
}

TEST(ParseFast, AgreesOnRandomMutations) {
    std::mt19937 rng(4242);
    const auto seeds = parser_seeds();
    size_t fast = 0;
    for (int iter = 0; iter < 30000; ++iter) {
        auto f = seeds[static_cast<size_t>(iter) % seeds.size()];
        const int flips = static_cast<int>(rng() % 4);
        for (int k = 0; k < flips; ++k) f[rng() % f.size()] = static_cast<uint8_t>(rng());
        if (rng() % 4 == 0) f.resize(rng() % (f.size() + 1));
        fast += expect_fast_parser_agrees(f, rng() % 2);
    }
    EXPECT_GT(fast, 1000u);
}
