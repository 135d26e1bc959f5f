// The server-side decapsulation program (ebpf/decap.bpf.c) run by the kernel on test frames
// (BPF_PROG_TEST_RUN), in both its XDP and its tc variant. Tunnel frames are made by the
// dataplane's own encapsulate(), so the program is checked against what Fulcrum emits.
// Needs root (CAP_BPF and CAP_NET_ADMIN) and a kernel with BPF_PROG_TEST_RUN for both types.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "decap.skel.h"
#include "frame_buf.hpp"
#include "fulcrum/bytes.hpp"
#include "fulcrum/parse.hpp"
#include "fulcrum/rewrite.hpp"
#include "fulcrum_decap.h"
#include "packet_builder.hpp"

using namespace fulcrum;
using test::FrameBuf;
using test::PacketBuilder;

namespace {

const char* const kLocal4 = "198.18.2.1";
const char* const kOther4 = "198.18.2.99";
const char* const kLocal6 = "2001:db8:2::1";
const char* const kOther6 = "2001:db8:2::99";
constexpr uint16_t kGuePort = 6080;

enum class Mode { xdp, tc };

struct Result {
    enum { pass, drop, other } verdict;
    std::vector<uint8_t> out;
};

// The loaded program, shared by every test (loading once keeps the test fast).
class Program {
  public:
    static Program& get() {
        static Program p;
        return p;
    }
    decap* skel() { return skel_; }
    std::string error;

    std::array<uint64_t, FL_DECAP_REASON_COUNT> counters() {
        std::array<uint64_t, FL_DECAP_REASON_COUNT> sum{};
        const int ncpu = libbpf_num_possible_cpus();
        std::vector<uint64_t> vals(static_cast<size_t>(ncpu));
        for (uint32_t r = 0; r < FL_DECAP_REASON_COUNT; r++) {
            if (bpf_map__lookup_elem(skel_->maps.fl_dc_stats, &r, sizeof r, vals.data(),
                                     vals.size() * sizeof(uint64_t), 0) == 0)
                for (auto v : vals) sum[r] += v;
        }
        return sum;
    }

    Result run(Mode m, const std::vector<uint8_t>& frame) {
        std::vector<uint8_t> out(frame.size() + 512);
        LIBBPF_OPTS(bpf_test_run_opts, opts);
        opts.data_in = frame.data();
        opts.data_size_in = static_cast<uint32_t>(frame.size());
        opts.data_out = out.data();
        opts.data_size_out = static_cast<uint32_t>(out.size());
        opts.repeat = 1;
        const auto* prog = m == Mode::xdp ? skel_->progs.fl_decap_xdp : skel_->progs.fl_decap_tc;
        const int rc = bpf_prog_test_run_opts(bpf_program__fd(prog), &opts);
        EXPECT_EQ(rc, 0) << "BPF_PROG_TEST_RUN failed: " << std::strerror(errno);
        out.resize(opts.data_size_out);
        Result r;
        r.out = std::move(out);
        if (m == Mode::xdp)
            r.verdict = opts.retval == XDP_PASS   ? Result::pass
                        : opts.retval == XDP_DROP ? Result::drop
                                                  : Result::other;
        else
            r.verdict = opts.retval == TC_ACT_OK     ? Result::pass
                        : opts.retval == TC_ACT_SHOT ? Result::drop
                                                     : Result::other;
        return r;
    }

  private:
    Program() {
        skel_ = decap::open_and_load();
        if (!skel_) {
            error =
                std::string("cannot load decap.bpf.o: ") + std::strerror(errno) + " (run as root)";
            return;
        }
        const uint32_t one = 1;
        const auto a4 = test::ip(kLocal4);
        const auto a6 = test::ip(kLocal6);
        const uint16_t port = htobe16(kGuePort);
        if (bpf_map__update_elem(skel_->maps.fl_dc_addr4, a4.bytes.data(), 4, &one, 4, 0) ||
            bpf_map__update_elem(skel_->maps.fl_dc_addr6, a6.bytes.data(), 16, &one, 4, 0) ||
            bpf_map__update_elem(skel_->maps.fl_dc_ports, &port, 2, &one, 4, 0))
            error = std::string("cannot fill the maps: ") + std::strerror(errno);
    }
    ~Program() { decap::destroy(skel_); }
    decap* skel_ = nullptr;
};

EncapParams params() {
    EncapParams e;
    const uint8_t p4[4] = {198, 18, 255, 0};
    std::memcpy(e.src4, p4, 4);
    e.src4_len = 24;
    auto p6 = test::ip("2001:db8:ffff::");
    std::memcpy(e.src6, p6.bytes.data(), 16);
    e.src6_len = 64;
    e.gue_port = kGuePort;
    return e;
}

PacketBuilder client4() {
    PacketBuilder b;
    b.from("198.18.0.1", 41000).to("198.18.0.100", 80).tcp(0x18).with_payload(33, 0x5A);
    return b;
}

PacketBuilder client6() {
    PacketBuilder b;
    b.from("2001:db8::1", 41000).to("2001:db8::100", 80).tcp(0x18).with_payload(21, 0xA5);
    return b;
}

// The frame the dataplane sends to `server` for the client frame `inner`.
std::vector<uint8_t> encap(const std::vector<uint8_t>& inner, uint8_t forwarding,
                           const char* server) {
    FrameBuf fb(inner);
    Parsed p;
    EXPECT_EQ(parse_packet(fb.f.bytes(), p), Drop::none);
    const auto srv = test::ip(server);
    EXPECT_TRUE(
        encapsulate(fb.f, p, forwarding, srv.bytes.data(), params(), 0x1234567890abcdefull, 9));
    return fb.bytes();
}

// An outer packet made by hand (for forms the dataplane does not emit: mixed families,
// options, fragments): `outer` describes the outer header, `inner` is an IP packet.
std::vector<uint8_t> wrap(PacketBuilder outer, const std::vector<uint8_t>& inner) {
    outer.payload = inner;
    return outer.build();
}

// The Ethernet header of `frame` with the ethertype `type`, followed by `ip`.
std::vector<uint8_t> eth_plus(const std::vector<uint8_t>& frame, size_t l2, uint16_t type,
                              const std::vector<uint8_t>& ip) {
    std::vector<uint8_t> v(l2 + ip.size());
    std::memcpy(v.data(), frame.data(), l2);
    store_be16(&v[l2 - 2], type);
    std::memcpy(v.data() + l2, ip.data(), ip.size());
    return v;
}

class Decap : public ::testing::TestWithParam<Mode> {
  protected:
    void SetUp() override {
        auto& p = Program::get();
        ASSERT_EQ(p.error, "");
    }
    // Runs `frame`; expects `verdict`, and the counter `reason` (only it) to go up by one.
    Result expect(const std::vector<uint8_t>& frame, decltype(Result::pass) verdict,
                  uint32_t reason) {
        auto& p = Program::get();
        const auto before = p.counters();
        Result r = p.run(GetParam(), frame);
        const auto after = p.counters();
        EXPECT_EQ(r.verdict, verdict);
        for (uint32_t i = 0; i < FL_DECAP_REASON_COUNT; i++)
            EXPECT_EQ(after[i] - before[i], i == reason ? 1u : 0u) << "counter " << i;
        return r;
    }
    void expect_untouched(const std::vector<uint8_t>& frame, uint32_t reason) {
        Result r = expect(frame, Result::pass, reason);
        EXPECT_EQ(r.out, frame);
    }
    void expect_drop(const std::vector<uint8_t>& frame, uint32_t reason) {
        expect(frame, Result::drop, reason);
    }
    void expect_decap(const std::vector<uint8_t>& frame, const std::vector<uint8_t>& inner,
                      uint32_t reason) {
        Result r = expect(frame, Result::pass, reason);
        EXPECT_EQ(r.out, inner);
    }
};

TEST_P(Decap, IpipFromTheDataplaneBecomesTheClientFrame) {
    const auto inner = client4().build();
    expect_decap(encap(inner, FL_FWD_IPIP, kLocal4), inner, FL_DECAP_IPIP4);
}

TEST_P(Decap, Ip6ip6FromTheDataplaneBecomesTheClientFrame) {
    const auto inner = client6().build();
    expect_decap(encap(inner, FL_FWD_IPIP, kLocal6), inner, FL_DECAP_IPIP6);
}

TEST_P(Decap, GueFromTheDataplaneBecomesTheClientFrame) {
    const auto inner4 = client4().build();
    expect_decap(encap(inner4, FL_FWD_GUE, kLocal4), inner4, FL_DECAP_GUE4);
    const auto inner6 = client6().build();
    expect_decap(encap(inner6, FL_FWD_GUE, kLocal6), inner6, FL_DECAP_GUE6);
    auto udp = client4();
    udp.udp();
    udp.dport = 53;
    const auto inner_udp = udp.build();
    expect_decap(encap(inner_udp, FL_FWD_GUE, kLocal4), inner_udp, FL_DECAP_GUE4);
}

TEST_P(Decap, MixedFamiliesGetTheInnerEthertype) {
    const auto in6 = client6().build_ip();
    const auto in4 = client4().build_ip();
    PacketBuilder o4;
    o4.from("198.18.255.7").to(kLocal4);
    o4.proto = 41;
    auto f = wrap(o4, in6);
    expect_decap(f, eth_plus(f, 14, 0x86DD, in6), FL_DECAP_IPIP4);
    PacketBuilder o6;
    o6.from("2001:db8:ffff::7").to(kLocal6);
    o6.proto = 4;
    f = wrap(o6, in4);
    expect_decap(f, eth_plus(f, 14, 0x0800, in4), FL_DECAP_IPIP6);
    PacketBuilder g6;
    g6.from("2001:db8:ffff::7", 50000).to(kLocal6, kGuePort).udp();
    f = wrap(g6, in4);
    expect_decap(f, eth_plus(f, 14, 0x0800, in4), FL_DECAP_GUE6);
}

TEST_P(Decap, EthernetPaddingIsRemoved) {
    auto b = client4();
    b.payload.clear();
    b.proto = 1;  // a 28-byte ICMP echo: the 62-byte IPIP frame, padded as a short frame may be
    b.icmp_echo();
    const auto inner = b.build();
    auto f = encap(inner, FL_FWD_IPIP, kLocal4);
    f.resize(f.size() + 10, 0);
    expect_decap(f, inner, FL_DECAP_IPIP4);
}

TEST_P(Decap, VlanTaggedFrames) {
    auto b = client4();
    b.vlans = {42};
    const auto inner = b.build();
    const auto f = encap(inner, FL_FWD_IPIP, kLocal4);
    if (GetParam() == Mode::xdp)
        expect_decap(f, inner, FL_DECAP_IPIP4);  // the tag stays
    else
        expect_untouched(f, FL_DECAP_PASS_VLAN);  // tc cannot remove headers behind an in-band tag
}

TEST_P(Decap, OtherDestinationsAreUntouched) {
    expect_untouched(encap(client4().build(), FL_FWD_IPIP, kOther4), FL_DECAP_PASS_NOT_LOCAL);
    expect_untouched(encap(client6().build(), FL_FWD_IPIP, kOther6), FL_DECAP_PASS_NOT_LOCAL);
    expect_untouched(encap(client4().build(), FL_FWD_GUE, kOther4), FL_DECAP_PASS_NOT_LOCAL);
    expect_untouched(encap(client6().build(), FL_FWD_GUE, kOther6), FL_DECAP_PASS_NOT_LOCAL);
}

TEST_P(Decap, NonTunnelTrafficIsUntouched) {
    auto tcp = client4();
    tcp.to(kLocal4, 22);
    expect_untouched(tcp.build(), FL_DECAP_PASS_NOT_TUNNEL);
    auto udp = client6();
    udp.to(kLocal6, 6081).udp();  // not the GUE port
    expect_untouched(udp.build(), FL_DECAP_PASS_NOT_TUNNEL);
    auto opts = client4();
    opts.to(kLocal4, 22);
    opts.ipv4_options = {1, 1, 1, 0};  // options on non-tunnel traffic are the kernel's business
    expect_untouched(opts.build(), FL_DECAP_PASS_NOT_TUNNEL);
    auto frag = client4();
    frag.to(kLocal4, 53).udp();
    frag.frag_offset = 1480;  // a later UDP fragment: no port to look at
    frag.df = false;
    expect_untouched(frag.build(), FL_DECAP_PASS_NOT_TUNNEL);
    std::vector<uint8_t> arp(60, 0);
    std::memset(arp.data(), 0xFF, 6);
    arp[6] = 2;
    store_be16(&arp[12], 0x0806);
    expect_untouched(arp, FL_DECAP_PASS_NOT_TUNNEL);
}

TEST_P(Decap, OuterFragmentsAreDropped) {
    const auto in4 = client4().build_ip();
    PacketBuilder o4;
    o4.from("198.18.255.7").to(kLocal4);
    o4.proto = 4;
    o4.df = false;
    o4.more_fragments = true;
    expect_drop(wrap(o4, in4), FL_DECAP_DROP_FRAGMENT);
    PacketBuilder g4;
    g4.from("198.18.255.7", 50000).to(kLocal4, kGuePort).udp();
    g4.df = false;
    g4.more_fragments = true;
    expect_drop(wrap(g4, in4), FL_DECAP_DROP_FRAGMENT);
    PacketBuilder o6;
    o6.from("2001:db8:ffff::7").to(kLocal6);
    o6.proto = 41;
    o6.ipv6_frag_header = true;
    o6.more_fragments = true;
    expect_drop(wrap(o6, client6().build_ip()), FL_DECAP_DROP_FRAGMENT);
}

TEST_P(Decap, OptionsAndExtensionHeadersAreDropped) {
    PacketBuilder o4;
    o4.from("198.18.255.7").to(kLocal4);
    o4.proto = 4;
    o4.ipv4_options = {1, 1, 1, 0};
    expect_drop(wrap(o4, client4().build_ip()), FL_DECAP_DROP_OPTIONS);
    PacketBuilder o6;
    o6.from("2001:db8:ffff::7").to(kLocal6, kGuePort).udp();
    o6.ipv6_ext = {{0, 0, 1, 4, 0, 0, 0, 0}};  // destination options: PadN
    o6.ipv6_ext_types = {60};
    expect_drop(wrap(o6, client6().build_ip()), FL_DECAP_DROP_OPTIONS);
}

TEST_P(Decap, TruncatedAndInconsistentFramesAreDropped) {
    const auto good = encap(client4().build(), FL_FWD_IPIP, kLocal4);
    for (size_t len : {size_t{20}, size_t{14 + 19}, size_t{14 + 20 + 10}, good.size() - 1}) {
        SCOPED_TRACE(len);
        // BPF_PROG_TEST_RUN refuses (EINVAL) to make an skb of an IPv4 frame whose IP header
        // is cut, so those lengths reach only the XDP variant here.
        if (GetParam() == Mode::tc && len < 14 + 20) continue;
        expect_drop({good.begin(), good.begin() + static_cast<long>(len)}, FL_DECAP_DROP_MALFORMED);
    }
    auto inner_len = good;
    store_be16(&inner_len[14 + 20 + 2], load_be16(&inner_len[14 + 20 + 2]) - 1);
    expect_drop(inner_len, FL_DECAP_DROP_MALFORMED);
    const auto good6 = encap(client6().build(), FL_FWD_GUE, kLocal6);
    expect_drop({good6.begin(), good6.end() - 1}, FL_DECAP_DROP_MALFORMED);
    auto udp_len = good6;
    store_be16(&udp_len[14 + 40 + 4], load_be16(&udp_len[14 + 40 + 4]) + 1);
    expect_drop(udp_len, FL_DECAP_DROP_MALFORMED);
    auto version = good6;
    version[14 + 48] = 0x45;  // says IPv4, holds an IPv6 header
    expect_drop(version, FL_DECAP_DROP_MALFORMED);
    auto v0 = encap(client4().build(), FL_FWD_GUE, kLocal4);
    v0[14 + 28] = 0x00;  // GUE variant 0 (a GUE header): never sent by the balancer
    expect_drop(v0, FL_DECAP_DROP_GUE_VARIANT);
    if (GetParam() == Mode::xdp) {
        std::vector<uint8_t> runt(good.begin(), good.begin() + 14);  // an IPv4 ethertype, no IP
        expect_drop(runt, FL_DECAP_DROP_MALFORMED);
    }
}

INSTANTIATE_TEST_SUITE_P(Both, Decap, ::testing::Values(Mode::xdp, Mode::tc),
                         [](const ::testing::TestParamInfo<Mode>& p) {
                             return p.param == Mode::xdp ? "xdp" : "tc";
                         });

}  // namespace
