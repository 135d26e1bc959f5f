#include <gtest/gtest.h>

#include <random>

#include <set>

#include "fulcrum/bytes.hpp"
#include "fulcrum/checksum.hpp"
#include "fulcrum/parse.hpp"
#include "fulcrum/rewrite.hpp"
#include "frame_buf.hpp"
#include "packet_builder.hpp"

using namespace fulcrum;
using test::FrameBuf;
using test::PacketBuilder;

namespace {

EncapParams params() {
    EncapParams e;
    const uint8_t p4[4] = {198, 18, 255, 0};
    std::memcpy(e.src4, p4, 4);
    e.src4_len = 24;
    auto p6 = test::ip("2001:db8:ffff::");
    std::memcpy(e.src6, p6.bytes.data(), 16);
    e.src6_len = 64;
    e.gue_port = 6080;
    e.ttl = 64;
    e.mtu = 1500;
    return e;
}

Parsed parsed(const Frame& f) {
    Parsed p;
    EXPECT_EQ(parse_packet(f.bytes(), p), Drop::none);
    return p;
}

PacketBuilder v6() {
    PacketBuilder b;
    b.src = test::ip("2001:db8::7");
    b.dst = test::ip("2001:db8:1::1");
    return b;
}

const uint8_t kServer4[4] = {198, 18, 2, 1};

}  // namespace

TEST(Rewrite, DsrSetsOnlyMacs) {
    PacketBuilder b;
    auto orig = b.build();
    FrameBuf fb(orig);
    const auto srv = test::mac("02:00:00:00:02:01");
    const auto own = test::mac("02:00:00:00:00:aa");
    set_macs(fb.f.data, srv.bytes.data(), own.bytes.data());
    auto out = fb.bytes();
    EXPECT_EQ(0, std::memcmp(out.data(), srv.bytes.data(), 6));
    EXPECT_EQ(0, std::memcmp(out.data() + 6, own.bytes.data(), 6));
    EXPECT_TRUE(std::equal(out.begin() + 12, out.end(), orig.begin() + 12));
}

TEST(Rewrite, IpipV4) {
    PacketBuilder b;
    b.vlans = {42};
    b.with_payload(100);
    b.tos = 0x2E;
    auto orig = b.build();
    auto inner = b.build_ip();
    orig.resize(orig.size() + 6, 0);  // Ethernet padding must not be encapsulated
    FrameBuf fb(orig);
    Parsed p = parsed(fb.f);
    ASSERT_TRUE(encapsulate(fb.f, p, FL_FWD_IPIP, kServer4, params(), 0x1234567890abcdefull, 77));
    auto out = fb.bytes();
    ASSERT_EQ(out.size(), 18 + 20 + inner.size());
    EXPECT_EQ(load_be16(&out[12]), 0x8100);  // VLAN kept
    EXPECT_EQ(load_be16(&out[14]), 42);
    EXPECT_EQ(load_be16(&out[16]), 0x0800);
    const uint8_t* ip = &out[18];
    EXPECT_EQ(ip[0], 0x45);
    EXPECT_EQ(ip[1], 0x2E);
    EXPECT_EQ(load_be16(ip + 2), 20 + inner.size());
    EXPECT_EQ(load_be16(ip + 4), 77);
    EXPECT_EQ(load_be16(ip + 6), 0x4000);  // DF copied from the inner packet
    EXPECT_EQ(ip[8], 64);
    EXPECT_EQ(ip[9], ipproto::kIpip);
    EXPECT_EQ(ip[12], 198);
    EXPECT_EQ(ip[13], 18);
    EXPECT_EQ(ip[14], 255);
    EXPECT_EQ(0, std::memcmp(ip + 16, kServer4, 4));
    EXPECT_TRUE(test::checksums_ok(ip, out.size() - 18));
    EXPECT_TRUE(std::equal(inner.begin(), inner.end(), out.begin() + 38));
    // The result parses as IPv4 carrying IPIP.
    Parsed q = parsed(fb.f);
    EXPECT_EQ(q.l4_proto, ipproto::kIpip);
}

TEST(Rewrite, OuterSourceSpreadsInsideThePrefix) {
    std::set<uint32_t> srcs;
    for (uint64_t h = 0; h < 1000; ++h) {
        uint8_t out[4];
        encap_source_v4(params(), h * 0x9E3779B97F4A7C15ull, out);
        EXPECT_EQ(out[0], 198);
        EXPECT_EQ(out[1], 18);
        EXPECT_EQ(out[2], 255);
        srcs.insert(load_be32(out));
    }
    EXPECT_GT(srcs.size(), 200u);
    std::set<std::vector<uint8_t>> s6;
    for (uint64_t h = 0; h < 1000; ++h) {
        uint8_t out[16];
        encap_source_v6(params(), h * 0x9E3779B97F4A7C15ull, out);
        auto pfx = test::ip("2001:db8:ffff::");
        EXPECT_EQ(0, std::memcmp(out, pfx.bytes.data(), 8));
        s6.insert({out, out + 16});
    }
    EXPECT_EQ(s6.size(), 1000u);
}

TEST(Rewrite, OuterSourceKeepsExactlyThePrefixBits) {
    // Reference: bit by bit, prefix bits from the configured address, the rest from the host
    // part (which the implementation derives from the hash).
    std::mt19937_64 rng(5);
    for (unsigned len : {0u, 1u, 7u, 8u, 21u, 24u, 31u, 32u}) {
        EncapParams e = params();
        e.src4_len = static_cast<uint8_t>(len);
        for (int i = 0; i < 200; ++i) {
            uint8_t a[4], b[4];
            encap_source_v4(e, rng(), a);
            encap_source_v4(e, rng(), b);
            for (unsigned bit = 0; bit < len; ++bit)
                ASSERT_EQ((a[bit / 8] >> (7 - bit % 8)) & 1, (e.src4[bit / 8] >> (7 - bit % 8)) & 1) << len;
            if (len < 32) continue;
            EXPECT_EQ(0, std::memcmp(a, b, 4));  // /32: always the configured address
        }
    }
    for (unsigned len : {0u, 9u, 48u, 64u, 65u, 100u, 127u, 128u}) {
        EncapParams e = params();
        e.src6_len = static_cast<uint8_t>(len);
        std::set<std::vector<uint8_t>> seen;
        for (int i = 0; i < 200; ++i) {
            uint8_t a[16];
            encap_source_v6(e, rng(), a);
            for (unsigned bit = 0; bit < len; ++bit)
                ASSERT_EQ((a[bit / 8] >> (7 - bit % 8)) & 1, (e.src6[bit / 8] >> (7 - bit % 8)) & 1) << len;
            seen.insert({a, a + 16});
        }
        if (len == 64) {  // the host half is the remixed hash as laid out in memory, as before
            const uint64_t h = rng();
            const uint64_t mixed = h * 0x9E3779B97F4A7C15ull;
            uint8_t a[16];
            encap_source_v6(e, h, a);
            EXPECT_EQ(0, std::memcmp(a + 8, &mixed, 8));
        }
        // The host bits vary with the hash (/127 leaves one of them, /128 none).
        EXPECT_EQ(seen.size(), len == 128 ? 1u : len == 127 ? 2u : 200u) << len;
    }
}

TEST(Rewrite, Ipv6InIpv6) {
    auto b = v6();
    b.udp().with_payload(64);
    auto inner = b.build_ip();
    FrameBuf fb(b.build());
    Parsed p = parsed(fb.f);
    auto server = test::ip("2001:db8:2::1");
    ASSERT_TRUE(encapsulate(fb.f, p, FL_FWD_IPIP, server.bytes.data(), params(), 0xfeedull, 1));
    auto out = fb.bytes();
    ASSERT_EQ(out.size(), 14 + 40 + inner.size());
    EXPECT_EQ(load_be16(&out[12]), 0x86DD);
    const uint8_t* ip = &out[14];
    EXPECT_EQ(ip[0] >> 4, 6);
    EXPECT_EQ(load_be16(ip + 4), inner.size());
    EXPECT_EQ(ip[6], ipproto::kIpv6);
    EXPECT_EQ(ip[7], 64);
    EXPECT_EQ(0, std::memcmp(ip + 24, server.bytes.data(), 16));
    EXPECT_TRUE(std::equal(inner.begin(), inner.end(), out.begin() + 54));
}

TEST(Rewrite, GueV4AndV6) {
    PacketBuilder b;
    b.with_payload(33);
    auto inner = b.build_ip();
    FrameBuf fb(b.build());
    Parsed p = parsed(fb.f);
    ASSERT_TRUE(encapsulate(fb.f, p, FL_FWD_GUE, kServer4, params(), 0xabcdef, 5));
    auto out = fb.bytes();
    ASSERT_EQ(out.size(), 14 + 28 + inner.size());
    const uint8_t* ip = &out[14];
    EXPECT_EQ(ip[9], ipproto::kUdp);
    const uint8_t* udp = ip + 20;
    EXPECT_GE(load_be16(udp), 0xC000);
    EXPECT_EQ(load_be16(udp + 2), 6080);
    EXPECT_EQ(load_be16(udp + 4), 8 + inner.size());
    EXPECT_TRUE(test::checksums_ok(ip, out.size() - 14));
    EXPECT_TRUE(std::equal(inner.begin(), inner.end(), out.begin() + 42));

    auto c = v6();
    c.with_payload(17);
    auto inner6 = c.build_ip();
    FrameBuf fb6(c.build());
    Parsed p6 = parsed(fb6.f);
    auto server = test::ip("2001:db8:2::1");
    ASSERT_TRUE(encapsulate(fb6.f, p6, FL_FWD_GUE, server.bytes.data(), params(), 0x77, 5));
    auto out6 = fb6.bytes();
    const uint8_t* ip6 = &out6[14];
    EXPECT_EQ(ip6[6], ipproto::kUdp);
    EXPECT_NE(load_be16(ip6 + 40 + 6), 0);  // IPv6 UDP checksum is mandatory
    EXPECT_TRUE(test::checksums_ok(ip6, out6.size() - 14));
    // Different flows get different source ports.
    std::set<uint16_t> ports;
    for (uint64_t h = 0; h < 200; ++h) {
        FrameBuf x(b.build());
        Parsed px = parsed(x.f);
        encapsulate(x.f, px, FL_FWD_GUE, kServer4, params(), h * 0x9E3779B97F4A7C15ull, 1);
        ports.insert(load_be16(x.f.data + 34));
    }
    EXPECT_GT(ports.size(), 150u);
}

TEST(Rewrite, NoHeadroomFailsCleanly) {
    PacketBuilder b;
    FrameBuf fb(b.build());
    fb.f.headroom = 10;
    Parsed p = parsed(fb.f);
    EXPECT_FALSE(encapsulate(fb.f, p, FL_FWD_IPIP, kServer4, params(), 1, 1));
}

TEST(Rewrite, EchoReplyV4V6) {
    PacketBuilder b;
    b.from("198.18.0.7").to("198.18.1.1").icmp_echo(3, 4).with_payload(56);
    FrameBuf fb(b.build());
    Parsed p = parsed(fb.f);
    make_echo_reply(fb.f, p);
    auto out = fb.bytes();
    EXPECT_EQ(0, std::memcmp(&out[0], b.eth_src.bytes.data(), 6));
    EXPECT_EQ(0, std::memcmp(&out[6], b.eth_dst.bytes.data(), 6));
    Parsed q = parsed(fb.f);
    EXPECT_EQ(q.icmp, IcmpKind::echo_reply);
    EXPECT_EQ(load_be32(q.src), 0xC6120101u);
    EXPECT_EQ(load_be32(q.dst), 0xC6120007u);
    EXPECT_TRUE(test::checksums_ok(&out[14], out.size() - 14));

    auto c = v6();
    c.icmp_echo(9, 9).with_payload(10);
    FrameBuf fb6(c.build());
    Parsed p6 = parsed(fb6.f);
    make_echo_reply(fb6.f, p6);
    auto out6 = fb6.bytes();
    Parsed q6 = parsed(fb6.f);
    EXPECT_EQ(q6.icmp, IcmpKind::echo_reply);
    EXPECT_EQ(0, std::memcmp(q6.src, c.dst.bytes.data(), 16));
    EXPECT_TRUE(test::checksums_ok(&out6[14], out6.size() - 14));
}

TEST(Rewrite, FragmentationNeededReply) {
    PacketBuilder b;
    b.from("198.18.0.7", 41000).to("198.18.1.1", 80).tcp(tcpflag::kAck).with_payload(1460);
    auto orig_ip = b.build_ip();
    FrameBuf fb(b.build());
    Parsed p = parsed(fb.f);
    ASSERT_TRUE(make_too_big_reply(fb.f, p, 1480));
    auto out = fb.bytes();
    EXPECT_EQ(out.size(), 14 + 576u);  // RFC 1812: at most 576 bytes
    Parsed q = parsed(fb.f);
    EXPECT_EQ(q.icmp, IcmpKind::error);
    EXPECT_EQ(q.icmp_type, 3);
    EXPECT_EQ(q.icmp_code, 4);
    EXPECT_EQ(q.icmp_mtu, 1480u);
    EXPECT_EQ(load_be32(q.src), 0xC6120101u);  // from the VIP
    EXPECT_EQ(load_be32(q.dst), 0xC6120007u);  // to the client
    EXPECT_EQ(q.quoted.sport, 41000);
    EXPECT_EQ(q.quoted.dport, 80);
    EXPECT_TRUE(test::checksums_ok(&out[14], out.size() - 14));
    EXPECT_TRUE(std::equal(out.begin() + 14 + 28, out.end(), orig_ip.begin()));
}

TEST(Rewrite, PacketTooBigReply) {
    auto b = v6();
    b.tcp(tcpflag::kAck).with_payload(1440);
    FrameBuf fb(b.build());
    Parsed p = parsed(fb.f);
    ASSERT_TRUE(make_too_big_reply(fb.f, p, 1460));
    auto out = fb.bytes();
    EXPECT_EQ(out.size(), 14 + 1280u);  // RFC 4443: no more than the minimum MTU
    Parsed q = parsed(fb.f);
    EXPECT_EQ(q.icmp_type, 2);
    EXPECT_EQ(q.icmp_mtu, 1460u);
    EXPECT_EQ(0, std::memcmp(q.dst, b.src.bytes.data(), 16));
    EXPECT_TRUE(test::checksums_ok(&out[14], out.size() - 14));
    // A tiny packet is quoted whole; the MTU is never below the IPv6 minimum.
    auto c = v6();
    FrameBuf small(c.build());
    Parsed ps = parsed(small.f);
    ASSERT_TRUE(make_too_big_reply(small.f, ps, 1000));
    Parsed qs = parsed(small.f);
    EXPECT_EQ(qs.icmp_mtu, 1280u);
    EXPECT_EQ(small.f.len, 14u + 48 + 60);
}

TEST(Rewrite, FragmentIpv4ReassemblesToTheOriginal) {
    PacketBuilder b;
    b.df = false;
    b.udp().with_payload(3000);
    auto inner = b.build_ip();
    FrameBuf fb(b.build(), 4096);
    Parsed p = parsed(fb.f);
    ASSERT_TRUE(encapsulate(fb.f, p, FL_FWD_IPIP, kServer4, params(), 99, 1234));
    const auto whole = fb.bytes();
    std::vector<FrameBuf> bufs(4);
    std::vector<Frame> outs;
    for (auto& x : bufs) {
        x.load({}, 2048);
        outs.push_back(x.f);
    }
    const int n = fragment_ipv4(fb.f, 14, 1500, outs);
    ASSERT_EQ(n, 2);  // 3048 bytes of outer payload in 1480-byte pieces: 3 fragments
    std::vector<Frame> frags = {fb.f, outs[0], outs[1]};
    std::vector<uint8_t> payload;
    uint32_t expect_off = 0;
    for (size_t i = 0; i < frags.size(); ++i) {
        const uint8_t* ip = frags[i].data + 14;
        EXPECT_LE(frags[i].len - 14, 1500u);
        EXPECT_EQ(0, std::memcmp(frags[i].data, whole.data(), 14));
        EXPECT_EQ(csum_fold(csum_partial(ip, 20, 0)), 0);
        const uint16_t ff = load_be16(ip + 6);
        EXPECT_EQ(uint32_t{ff & 0x1FFFu} * 8, expect_off);
        EXPECT_EQ((ff & 0x2000) != 0, i + 1 < frags.size());
        EXPECT_EQ(load_be16(ip + 4), 1234);  // same identification
        const uint32_t plen = load_be16(ip + 2) - 20u;
        payload.insert(payload.end(), ip + 20, ip + 20 + plen);
        expect_off += plen;
        Parsed fp;
        EXPECT_EQ(parse_packet(frags[i].bytes(), fp), Drop::none);
    }
    EXPECT_EQ(payload, inner);
    // Not enough output frames: refused.
    FrameBuf again(b.build(), 4096);
    Parsed p2 = parsed(again.f);
    encapsulate(again.f, p2, FL_FWD_IPIP, kServer4, params(), 99, 1);
    EXPECT_EQ(fragment_ipv4(again.f, 14, 1500, std::span(outs).first(1)), -1);
    // Already small enough: nothing to do.
    FrameBuf small(PacketBuilder().build());
    EXPECT_EQ(fragment_ipv4(small.f, 14, 1500, outs), 0);
}
