#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include <set>
#include <tuple>

#include "frame_buf.hpp"
#include "fulcrum/bytes.hpp"
#include "fulcrum/checksum.hpp"
#include "fulcrum/parse.hpp"
#include "fulcrum/rewrite.hpp"
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
                ASSERT_EQ((a[bit / 8] >> (7 - bit % 8)) & 1, (e.src4[bit / 8] >> (7 - bit % 8)) & 1)
                    << len;
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
                ASSERT_EQ((a[bit / 8] >> (7 - bit % 8)) & 1, (e.src6[bit / 8] >> (7 - bit % 8)) & 1)
                    << len;
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
    fb.limit_headroom(10);
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

// A frame keeps its buffer's length; prepending and trimming move its room around.
TEST(Rewrite, FrameRoomFollowsPrependAndTrim) {
    FrameBuf fb(std::vector<uint8_t>(100, 1), 512);
    EXPECT_EQ(fb.f.buf_len, 512u);
    EXPECT_EQ(fb.f.tailroom(), 512u - 128 - 100);
    ASSERT_TRUE(fb.f.prepend(20));
    EXPECT_EQ(fb.f.headroom, 108u);
    EXPECT_EQ(fb.f.len, 120u);
    EXPECT_EQ(fb.f.tailroom(), 284u);
    fb.f.trim(60);
    EXPECT_EQ(fb.f.len, 60u);
    EXPECT_EQ(fb.f.tailroom(), 344u);
    fb.f.trim(70);  // not longer
    EXPECT_EQ(fb.f.len, 60u);
    EXPECT_FALSE(fb.f.prepend(109));
    EXPECT_EQ(fb.f.headroom, 108u);
    fb.limit_headroom(8);
    EXPECT_EQ(fb.f.headroom, 8u);
    EXPECT_EQ(fb.f.tailroom(), 344u);
    EXPECT_EQ(fb.f.buf_len, 412u);
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
    // Output frames without room for a fragment after their headroom: refused.
    std::vector<FrameBuf> tiny(2);
    std::vector<Frame> tiny_outs;
    for (auto& x : tiny) {
        x.load({}, 1000);  // 872 bytes after the headroom, for 1514-byte fragments
        tiny_outs.push_back(x.f);
    }
    EXPECT_EQ(fragment_ipv4(again.f, 14, 1500, tiny_outs), -1);
    // Already small enough: nothing to do.
    FrameBuf small(PacketBuilder().build());
    EXPECT_EQ(fragment_ipv4(small.f, 14, 1500, outs), 0);
}

// ---- encapsulation against the previous implementation ------------------------------------

namespace {
namespace ref {
// The encapsulation as it was at ba2b881, before the outer headers were assembled in
// registers: byte stores, the checksum read back from the written header. The new code must
// write exactly the same bytes.
inline uint64_t prefix_mask64(unsigned len) {
    return len == 0 ? 0 : ~uint64_t{0} << (64 - std::min(len, 64u));
}
inline uint64_t load_be64(const uint8_t* p) {
    return (uint64_t{load_be32(p)} << 32) | load_be32(p + 4);
}
inline void store_be64(uint8_t* p, uint64_t v) {
    store_be32(p, static_cast<uint32_t>(v >> 32));
    store_be32(p + 4, static_cast<uint32_t>(v));
}

void encap_source_v4(const EncapParams& e, uint64_t hash, uint8_t out[4]) {
    const auto m = static_cast<uint32_t>(prefix_mask64(e.src4_len) >> 32);
    const auto host = static_cast<uint32_t>(hash ^ (hash >> 32));
    store_be32(out, (load_be32(e.src4) & m) | (host & ~m));
}

void encap_source_v6(const EncapParams& e, uint64_t hash, uint8_t out[16]) {
    uint8_t host[16];
    const uint64_t mixed = hash * 0x9E3779B97F4A7C15ull;
    std::memcpy(host, &hash, 8);
    std::memcpy(host + 8, &mixed, 8);
    const unsigned len = e.src6_len;
    const uint64_t m0 = prefix_mask64(len);
    const uint64_t m1 = prefix_mask64(len > 64 ? len - 64 : 0);
    store_be64(out, (load_be64(e.src6) & m0) | (load_be64(host) & ~m0));
    store_be64(out + 8, (load_be64(e.src6 + 8) & m1) | (load_be64(host + 8) & ~m1));
}

bool encapsulate(Frame& f, const Parsed& p, uint8_t forwarding, const uint8_t* server_addr,
                 const EncapParams& e, uint64_t hash, uint16_t ip_id) {
    trim_to_ip(f, p);
    const bool v6 = p.is_v6();
    const uint32_t oh = encap_overhead(forwarding, v6);
    const uint32_t l2 = p.l3_off;
    if (!f.prepend(oh)) return false;
    uint8_t l2hdr[22];
    std::memcpy(l2hdr, f.data + oh, sizeof l2hdr);
    std::memcpy(f.data, l2hdr, sizeof l2hdr);
    uint8_t* ip = f.data + l2;
    const uint32_t inner_len = p.l3_len;
    const bool gue = forwarding == FL_FWD_GUE;
    const uint8_t proto = gue ? ipproto::kUdp : (v6 ? ipproto::kIpv6 : ipproto::kIpip);
    uint8_t* udp;
    if (!v6) {
        const uint32_t tot = inner_len + oh;
        ip[0] = 0x45;
        ip[1] = p.tos;
        store_be16(ip + 2, static_cast<uint16_t>(tot));
        store_be16(ip + 4, ip_id);
        store_be16(ip + 6, p.df ? 0x4000 : 0);
        ip[8] = e.ttl;
        ip[9] = proto;
        store_be16(ip + 10, 0);
        ref::encap_source_v4(e, hash, ip + 12);
        std::memcpy(ip + 16, server_addr, 4);
        store_be16(ip + 10, ipv4_header_checksum(ip, 20));
        udp = ip + 20;
    } else {
        const uint32_t flow_label = static_cast<uint32_t>(hash >> 12) & 0xFFFFF;
        store_be32(ip, (6u << 28) | (uint32_t{p.tos} << 20) | flow_label);
        store_be16(ip + 4, static_cast<uint16_t>(inner_len + oh - 40));
        ip[6] = proto;
        ip[7] = e.ttl;
        ref::encap_source_v6(e, hash, ip + 8);
        std::memcpy(ip + 24, server_addr, 16);
        udp = ip + 40;
    }
    store_be16(f.data + l2 - 2, v6 ? eth::kIpv6 : eth::kIpv4);
    if (gue) {
        const uint16_t sport = static_cast<uint16_t>(0xC000 | ((hash >> 20) & 0x3FFF));
        const uint32_t ulen = inner_len + 8;
        store_be16(udp, sport);
        store_be16(udp + 2, e.gue_port);
        store_be16(udp + 4, static_cast<uint16_t>(ulen));
        store_be16(udp + 6, 0);
        if (v6) {
            uint32_t sum = pseudo_sum_v6(ip + 8, ip + 24, ipproto::kUdp, ulen);
            sum = csum_partial(udp, ulen, sum);
            uint16_t c = csum_fold(sum);
            store_be16(udp + 6, c ? c : 0xFFFF);
        }
    }
    return true;
}
}  // namespace ref

EncapParams random_params(std::mt19937_64& rng) {
    EncapParams e;
    const uint64_t a = rng(), b = rng(), c = rng();
    std::memcpy(e.src4, &a, 4);
    std::memcpy(e.src6, &b, 8);
    std::memcpy(e.src6 + 8, &c, 8);
    // Lengths past the family's width too: the snapshot field is a byte, and such a prefix
    // must behave as before (the whole configured address).
    e.src4_len = static_cast<uint8_t>(rng() % 41);
    e.src6_len = static_cast<uint8_t>(rng() % 8 == 0 ? rng() % 256 : rng() % 129);
    e.gue_port = static_cast<uint16_t>(rng());
    e.ttl = static_cast<uint8_t>(rng());
    e.mtu = static_cast<uint16_t>(rng());
    return e;
}
}  // namespace

TEST(Encap, SourcesMatchThePreviousImplementation) {
    std::mt19937_64 rng(11);
    for (int i = 0; i < 20000; ++i) {
        const EncapParams e = random_params(rng);
        const uint64_t h = rng();
        uint8_t a4[4], r4[4], a6[16], r6[16];
        encap_source_v4(e, h, a4);
        ref::encap_source_v4(e, h, r4);
        ASSERT_EQ(0, std::memcmp(a4, r4, 4)) << "src4_len " << int{e.src4_len};
        encap_source_v6(e, h, a6);
        ref::encap_source_v6(e, h, r6);
        ASSERT_EQ(0, std::memcmp(a6, r6, 16)) << "src6_len " << int{e.src6_len};
    }
}

TEST(Encap, MatchesThePreviousImplementationOnRandomPackets) {
    std::mt19937_64 rng(20261202);
    // Every mode, inner family and tag count must come up: counted, and checked at the end.
    std::set<std::tuple<bool, uint8_t, size_t>> seen;
    int failures = 0, checked_v4 = 0;
    for (int i = 0; i < 6000; ++i) {
        const bool inner6 = rng() % 2;
        PacketBuilder b;
        if (inner6) {
            b.src = test::ip("2001:db8::7");
            b.dst = test::ip("2001:db8:1::1");
        }
        b.vlans.resize(rng() % 3);
        for (auto& v : b.vlans) v = static_cast<uint16_t>(rng() % 4095 + 1);
        b.tos = static_cast<uint8_t>(rng());
        b.df = rng() % 2;
        b.ip_id = static_cast<uint16_t>(rng());
        b.ttl = static_cast<uint8_t>(rng() % 255 + 1);
        if (!inner6 && rng() % 8 == 0) b.ipv4_options = {1, 1, 1, 0};  // inner options ride along
        if (rng() % 2)
            b.udp();
        else
            b.tcp(static_cast<uint8_t>(rng() % 0x40 | tcpflag::kAck));
        b.sport = static_cast<uint16_t>(rng());
        b.dport = static_cast<uint16_t>(rng() % 65535 + 1);
        const size_t payload = rng() % 4 == 0 ? rng() % 1400 : rng() % 64;
        b.with_payload(payload, static_cast<uint8_t>(rng()));
        for (auto& x : b.payload) x = static_cast<uint8_t>(rng());
        auto frame = b.build();
        frame.resize(frame.size() + rng() % 12, 0);  // Ethernet padding, not encapsulated

        const EncapParams e = random_params(rng);
        const uint8_t fwd = rng() % 2 ? FL_FWD_GUE : FL_FWD_IPIP;
        uint8_t server[16];
        for (auto& x : server) x = static_cast<uint8_t>(rng());
        const uint64_t hash = rng();
        const auto id = static_cast<uint16_t>(rng());

        FrameBuf got(frame), want(frame), tpl(frame);
        if (rng() % 16 == 0) {  // sometimes too little headroom, or just enough
            const auto room = static_cast<uint32_t>(rng() % 50);
            for (FrameBuf* x : {&got, &want, &tpl}) x->limit_headroom(room);
        }
        Parsed p = parsed(got.f);
        ASSERT_EQ(p.is_v6(), inner6);
        const bool ok_got = encapsulate(got.f, p, fwd, server, e, hash, id);
        const bool ok_want = ref::encapsulate(want.f, p, fwd, server, e, hash, id);
        // The per-snapshot template gives the same as the parameters.
        const bool ok_tpl = encapsulate(tpl.f, p, fwd, server, EncapTemplate::from(e), hash, id);
        ASSERT_EQ(ok_got, ok_want) << i;
        ASSERT_EQ(ok_tpl, ok_want) << i;
        ASSERT_EQ(tpl.mem, got.mem) << i;
        ASSERT_EQ(tpl.f.data, tpl.mem.data() + (got.f.data - got.mem.data())) << i;
        ASSERT_EQ(tpl.f.len, got.f.len) << i;
        ASSERT_EQ(tpl.f.buf_len, got.f.buf_len) << i;
        ASSERT_EQ(got.f.data - got.mem.data(), want.f.data - want.mem.data()) << i;
        ASSERT_EQ(got.f.len, want.f.len) << i;
        ASSERT_EQ(got.f.headroom, want.f.headroom) << i;
        ASSERT_EQ(got.f.buf_len, want.f.buf_len) << i;
        ASSERT_EQ(got.f.tailroom(), want.f.tailroom()) << i;
        // The whole buffer: the frame, and nothing written outside it.
        if (got.mem != want.mem) {
            ADD_FAILURE() << "packet " << i << ": fwd " << int{fwd} << " v6 " << inner6 << " vlans "
                          << b.vlans.size() << " differs";
            if (++failures > 5) return;
            continue;
        }
        if (!ok_got) continue;
        seen.insert({inner6, fwd, b.vlans.size()});
        const uint8_t* ip = got.f.data + p.l3_off;
        if (!inner6) {
            ASSERT_TRUE(ipv4_header_checksum_ok(ip, 20)) << i;
            ASSERT_EQ(csum_fold(csum_partial(ip, 20, 0)), 0) << i;
            ++checked_v4;
        }
        // The outer headers verify as a whole (IPv4 header, the GUE UDP checksum over IPv6).
        ASSERT_TRUE(test::checksums_ok(ip, got.f.len - p.l3_off)) << i;
    }
    EXPECT_EQ(seen.size(), 2u * 2u * 3u);
    EXPECT_GT(checked_v4, 1000);
}

TEST(Encap, OuterIpv4ChecksumOverEveryIdentification) {
    // Every outer checksum value comes up as the id runs over its range, 0x0000 included
    // (the one a careless fold turns into 0xFFFF).
    PacketBuilder b;
    b.df = false;
    b.with_payload(21);
    const auto frame = b.build();
    const EncapParams e = params();
    Parsed p;
    {
        FrameBuf fb(frame);
        p = parsed(fb.f);
    }
    std::set<uint16_t> checks;
    FrameBuf got(frame), want(frame);
    for (uint32_t id = 0; id <= 0xFFFF; ++id) {
        got.load(frame);
        want.load(frame);
        ASSERT_TRUE(
            encapsulate(got.f, p, FL_FWD_IPIP, kServer4, e, 0x5eed, static_cast<uint16_t>(id)));
        ASSERT_TRUE(ref::encapsulate(want.f, p, FL_FWD_IPIP, kServer4, e, 0x5eed,
                                     static_cast<uint16_t>(id)));
        ASSERT_EQ(got.bytes(), want.bytes()) << id;
        checks.insert(load_be16(got.f.data + 14 + 10));
    }
    EXPECT_EQ(checks.size(), 0xFFFFu);  // ~sum is never 0xFFFF for a non-zero header
    EXPECT_TRUE(checks.count(0));
}

TEST(Encap, OtherForwardingModesAreRefused) {
    // encapsulate() knows IPIP and GUE only: another mode leaves the frame as it was (the old
    // code wrote an IPv4 header over the packet's own).
    for (const bool six : {false, true}) {
        PacketBuilder b = six ? v6() : PacketBuilder{};
        b.with_payload(30);
        auto frame = b.build();
        frame.resize(frame.size() + 4, 0);
        for (const uint8_t fwd : {uint8_t{0}, uint8_t{FL_FWD_DSR}, uint8_t{4}, uint8_t{0xFF}}) {
            FrameBuf fb(frame);
            const auto before = fb.mem;
            const Frame f0 = fb.f;
            Parsed p = parsed(fb.f);
            auto server = test::ip("2001:db8:2::1");
            EXPECT_FALSE(
                encapsulate(fb.f, p, fwd, six ? server.bytes.data() : kServer4, params(), 1, 1));
            EXPECT_FALSE(encapsulate(fb.f, p, fwd, six ? server.bytes.data() : kServer4,
                                     EncapTemplate::from(params()), 1, 1));
            EXPECT_EQ(fb.mem, before);
            EXPECT_EQ(fb.f.data, f0.data);
            EXPECT_EQ(fb.f.len, f0.len);
        }
    }
}
