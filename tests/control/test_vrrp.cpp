// VRRPv3 tests: the advert codec against packets built by hand from the RFC 5798 5.1 layout
// (checksums by an RFC 1071 sum written here, independent of the core's), against bytes
// produced once by scapy 2.5 and captured once from keepalived 2.2.7, and the state machine
// through every transition of RFC 5798 6.4 plus Fulcrum's fault, hold and heal-split rules.
// Time is a plain value passed in: no clock, no sleeps.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "fulcrum/control/vrrp.hpp"
#include "fulcrum/control/vrrp_packet.hpp"

namespace {

using namespace fulcrum;
using namespace fulcrum::control::vrrp;
using namespace std::chrono_literals;
using std::chrono::microseconds;
using Bytes = std::vector<uint8_t>;

IpAddr ip(const char* text) {
    auto a = IpAddr::parse(text);
    if (!a) throw std::invalid_argument(std::string("bad test address ") + text);
    return *a;
}

Bytes from_hex(const std::string& hex) {
    Bytes out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
        out.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    return out;
}

// ---- an independent checksum: RFC 1071 over explicit pseudo-header bytes ---------------------

uint16_t rfc1071(const Bytes& b) {
    uint32_t sum = 0;
    for (size_t i = 0; i < b.size(); i += 2) {
        sum += uint32_t{b[i]} << 8;
        if (i + 1 < b.size()) sum += b[i + 1];
    }
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    return static_cast<uint16_t>(~sum & 0xFFFF);
}

// RFC 2460 8.1 for IPv6; the same fields in IPv4 size (RFC 768 layout) for IPv4.
Bytes pseudo_header(const IpAddr& src, const IpAddr& dst, size_t len) {
    Bytes p;
    const size_t n = src.size();
    p.insert(p.end(), src.bytes.begin(), src.bytes.begin() + static_cast<long>(n));
    p.insert(p.end(), dst.bytes.begin(), dst.bytes.begin() + static_cast<long>(n));
    if (src.is_v4()) {
        p.insert(p.end(), {0, 112, static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len)});
    } else {
        p.insert(p.end(),
                 {static_cast<uint8_t>(len >> 24), static_cast<uint8_t>(len >> 16),
                  static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len), 0, 0, 0, 112});
    }
    return p;
}

// Writes the checksum of `msg` (field zeroed first) into bytes 6-7.
void set_checksum(Bytes& msg, const IpAddr& src, const IpAddr& dst, bool with_pseudo = true) {
    msg[6] = msg[7] = 0;
    Bytes all = with_pseudo ? pseudo_header(src, dst, msg.size()) : Bytes{};
    all.insert(all.end(), msg.begin(), msg.end());
    const uint16_t c = rfc1071(all);
    msg[6] = static_cast<uint8_t>(c >> 8);
    msg[7] = static_cast<uint8_t>(c);
}

const IpAddr kSrc4 = ip("198.18.0.2");
const IpAddr kGroup4 = ip("224.0.0.18");
const IpAddr kSrc6 = ip("2001:db8::2");
const IpAddr kGroup6 = ip("ff02::12");

IpContext ctx4(uint8_t ttl = 255) {
    return {Family::v4, kSrc4, kGroup4, ttl};
}
IpContext ctx6(uint8_t ttl = 255) {
    return {Family::v6, kSrc6, kGroup6, ttl};
}

// RFC 5798 5.1 by hand: version 3 / type 1, VRID 51, priority 150, 2 addresses, 4 reserved
// bits 0 + Max Adver Int 100 cs, checksum, 198.18.1.10, 198.18.1.11.
Bytes hand_v4(bool with_pseudo = true) {
    Bytes m = {0x31, 51, 150, 2, 0x00, 100, 0, 0, 198, 18, 1, 10, 198, 18, 1, 11};
    set_checksum(m, kSrc4, kGroup4, with_pseudo);
    return m;
}

Advert advert_v4() {
    Advert a;
    a.vrid = 51;
    a.priority = 150;
    a.max_advert_int_cs = 100;
    a.addresses = {ip("198.18.1.10"), ip("198.18.1.11")};
    return a;
}

Advert advert_v6() {
    Advert a;
    a.vrid = 7;
    a.priority = 200;
    a.max_advert_int_cs = 10;
    a.addresses = {ip("2001:db8::10"), ip("2001:db8::11")};
    return a;
}

const DecodeFailure* failure(const DecodeResult& r) {
    return std::get_if<DecodeFailure>(&r);
}

// The error of a refused decode; fails the test if the decode succeeded.
DecodeError error_of(const DecodeResult& r) {
    const auto* f = failure(r);
    EXPECT_NE(f, nullptr) << "decode accepted a packet it should refuse";
    return f ? f->error : DecodeError::wrong_family;
}

// ---- codec -----------------------------------------------------------------------------------

TEST(VrrpPacket, EncodesIpv4AsTheRfcLayoutBuiltByHand) {
    EXPECT_EQ(encode_advert(advert_v4(), kSrc4, kGroup4), hand_v4(true));
    EncodeOptions o;
    o.v4_checksum = ChecksumForm::message_only;
    EXPECT_EQ(encode_advert(advert_v4(), kSrc4, kGroup4, o), hand_v4(false));
    EXPECT_NE(hand_v4(true), hand_v4(false));  // the two forms really differ here
}

TEST(VrrpPacket, MatchesScapyBytes) {
    // scapy 2.5: IP(src="198.18.0.2", dst="224.0.0.18", ttl=255)/VRRPv3(vrid=51,
    // priority=150, adv=100, addrlist=["198.18.1.10", "198.18.1.11"]), VRRP part only.
    EXPECT_EQ(encode_advert(advert_v4(), kSrc4, kGroup4),
              from_hex("3133960200640384c612010ac612010b"));
    // IPv6(src="2001:db8::2", dst="ff02::12", hlim=255)/VRRPv3(vrid=7, priority=200, adv=10,
    // addrlist=["2001:db8::10", "2001:db8::11"]).
    const Bytes scapy6 = from_hex(
        "3107c802000a7df020010db800000000000000000000001020010db8000000000000000000000011");
    EXPECT_EQ(encode_advert(advert_v6(), kSrc6, kGroup6), scapy6);
    // And the hand-built IPv6 layout agrees with both.
    Bytes hand = {0x31, 7, 200, 2, 0x00, 10, 0, 0};
    const Advert a6 = advert_v6();
    for (const auto& a : a6.addresses) hand.insert(hand.end(), a.bytes.begin(), a.bytes.end());
    set_checksum(hand, kSrc6, kGroup6);
    EXPECT_EQ(hand, scapy6);
}

// Adverts of keepalived 2.2.7 (vrrp_version 3), captured once between two network namespaces
// (198.18.99.1 -> 224.0.0.18 multicast; 2001:db8:99::1 -> 2001:db8:99::2 unicast), VRRP
// part only. keepalived sums the IPv4 pseudo-header and sends its unicast IPv6 adverts with
// hop limit 64; on stopping it sends priority 0.
TEST(VrrpPacket, InteroperatesWithKeepalivedBytes) {
    const IpContext k4{Family::v4, ip("198.18.99.1"), kGroup4, 255};
    const IpContext k6{Family::v6, ip("2001:db8:99::1"), ip("2001:db8:99::2"), 64};
    DecodeOptions strict4;
    strict4.v4_checksum = V4ChecksumAccept::pseudo_header_only;
    DecodeOptions unicast;
    unicast.require_ttl_255 = false;
    struct Case {
        const char* hex;
        const IpContext& ctx;
        const DecodeOptions& opt;
        uint8_t vrid, priority;
        uint16_t interval_cs;
        std::vector<IpAddr> addresses;
    };
    const std::vector<IpAddr> vips4 = {ip("198.18.99.100"), ip("198.18.99.101")};
    const std::vector<IpAddr> vips6 = {ip("2001:db8:99::100")};
    const Case cases[] = {
        {"313396020064dbcfc6126364c6126365", k4, strict4, 51, 150, 100, vips4},
        {"31330002006471d0c6126364c6126365", k4, strict4, 51, 0, 100, vips4},
        {"313478010032ca1620010db8009900000000000000000100", k6, unicast, 52, 120, 50, vips6},
        {"313400010032421720010db8009900000000000000000100", k6, unicast, 52, 0, 50, vips6},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.hex);
        const Bytes wire = from_hex(c.hex);
        auto r = decode_advert(wire, c.ctx, c.opt);
        ASSERT_TRUE(std::holds_alternative<Advert>(r)) << failure(r)->message;
        const Advert& a = std::get<Advert>(r);
        EXPECT_EQ(a.vrid, c.vrid);
        EXPECT_EQ(a.priority, c.priority);
        EXPECT_EQ(a.max_advert_int_cs, c.interval_cs);
        EXPECT_EQ(a.addresses, c.addresses);
        EXPECT_EQ(a.checksum_form, ChecksumForm::pseudo_header);
        // What we send to keepalived is byte for byte what it sends.
        EXPECT_EQ(encode_advert(a, c.ctx.source, c.ctx.destination), wire);
    }
    // With the default TTL check, keepalived's unicast IPv6 adverts are refused.
    EXPECT_EQ(error_of(decode_advert(from_hex(cases[2].hex), k6)), DecodeError::bad_ttl);
}

TEST(VrrpPacket, DecodesIpv4BothChecksumFormsUnderAcceptBoth) {
    auto r = decode_advert(hand_v4(true), ctx4());
    ASSERT_TRUE(std::holds_alternative<Advert>(r)) << failure(r)->message;
    Advert want = advert_v4();
    want.checksum_form = ChecksumForm::pseudo_header;
    EXPECT_EQ(std::get<Advert>(r), want);

    r = decode_advert(hand_v4(false), ctx4());
    ASSERT_TRUE(std::holds_alternative<Advert>(r)) << failure(r)->message;
    want.checksum_form = ChecksumForm::message_only;
    EXPECT_EQ(std::get<Advert>(r), want);
}

TEST(VrrpPacket, StrictChecksumPoliciesRefuseTheOtherForm) {
    DecodeOptions strict;
    strict.v4_checksum = V4ChecksumAccept::pseudo_header_only;
    EXPECT_TRUE(std::holds_alternative<Advert>(decode_advert(hand_v4(true), ctx4(), strict)));
    auto r = decode_advert(hand_v4(false), ctx4(), strict);
    EXPECT_EQ(error_of(r), DecodeError::bad_checksum);
    if (auto* f = failure(r)) {
        EXPECT_NE(f->message.find("v3_checksum_as_v2"), std::string::npos);
    }

    DecodeOptions msg_only;
    msg_only.v4_checksum = V4ChecksumAccept::message_only;
    auto ok = decode_advert(hand_v4(false), ctx4(), msg_only);
    ASSERT_TRUE(std::holds_alternative<Advert>(ok));
    EXPECT_EQ(std::get<Advert>(ok).checksum_form, ChecksumForm::message_only);
    EXPECT_EQ(error_of(decode_advert(hand_v4(true), ctx4(), msg_only)), DecodeError::bad_checksum);
}

TEST(VrrpPacket, Ipv6AlwaysNeedsThePseudoHeader) {
    const Bytes good = encode_advert(advert_v6(), kSrc6, kGroup6);
    auto r = decode_advert(good, ctx6());
    ASSERT_TRUE(std::holds_alternative<Advert>(r)) << failure(r)->message;
    Advert want = advert_v6();
    EXPECT_EQ(std::get<Advert>(r), want);

    Bytes msg_only = good;
    set_checksum(msg_only, kSrc6, kGroup6, false);
    ASSERT_NE(msg_only, good);
    EXPECT_EQ(error_of(decode_advert(msg_only, ctx6())), DecodeError::bad_checksum);
    // The message-only option does not apply to IPv6.
    EncodeOptions o;
    o.v4_checksum = ChecksumForm::message_only;
    EXPECT_EQ(encode_advert(advert_v6(), kSrc6, kGroup6, o), good);
}

TEST(VrrpPacket, ChecksumCoversTheAddresses) {
    // The same message from another source or to another destination fails: the
    // pseudo-header is really in the sum.
    IpContext other = ctx4();
    other.source = ip("198.18.0.3");
    DecodeOptions strict;
    strict.v4_checksum = V4ChecksumAccept::pseudo_header_only;
    EXPECT_EQ(error_of(decode_advert(hand_v4(true), other, strict)), DecodeError::bad_checksum);
    IpContext unicast = ctx6();
    unicast.destination = ip("2001:db8::1");
    EXPECT_EQ(error_of(decode_advert(encode_advert(advert_v6(), kSrc6, kGroup6), unicast)),
              DecodeError::bad_checksum);
    // A unicast advert summed with its real destination decodes.
    EXPECT_TRUE(std::holds_alternative<Advert>(
        decode_advert(encode_advert(advert_v6(), kSrc6, unicast.destination), unicast)));
}

TEST(VrrpPacket, EveryDecodeError) {
    // wrong_family
    IpContext none = ctx4();
    none.family = Family::none;
    EXPECT_EQ(error_of(decode_advert(hand_v4(), none)), DecodeError::wrong_family);
    IpContext mixed = ctx4();
    mixed.destination = kGroup6;
    EXPECT_EQ(error_of(decode_advert(hand_v4(), mixed)), DecodeError::wrong_family);
    IpContext v6_says_v4 = ctx6();
    v6_says_v4.family = Family::v4;
    EXPECT_EQ(error_of(decode_advert(hand_v4(), v6_says_v4)), DecodeError::wrong_family);

    // truncated
    const Bytes full = hand_v4();
    EXPECT_EQ(error_of(decode_advert(std::span<const uint8_t>(), ctx4())), DecodeError::truncated);
    EXPECT_EQ(error_of(decode_advert(std::span(full.data(), 7), ctx4())), DecodeError::truncated);

    // bad_version: a VRRPv2 header (version 2, auth type and interval in seconds)
    Bytes v2 = full;
    v2[0] = 0x21;
    auto r = decode_advert(v2, ctx4());
    EXPECT_EQ(error_of(r), DecodeError::bad_version);
    if (auto* f = failure(r)) {
        EXPECT_NE(f->message.find("version 2"), std::string::npos) << f->message;
    }

    // bad_type
    Bytes type2 = full;
    type2[0] = 0x32;
    EXPECT_EQ(error_of(decode_advert(type2, ctx4())), DecodeError::bad_type);

    // bad_ttl, and the option that lifts it
    r = decode_advert(full, ctx4(64));
    EXPECT_EQ(error_of(r), DecodeError::bad_ttl);
    if (auto* f = failure(r)) {
        EXPECT_NE(f->message.find("TTL 64"), std::string::npos) << f->message;
    }
    r = decode_advert(encode_advert(advert_v6(), kSrc6, kGroup6), ctx6(254));
    EXPECT_EQ(error_of(r), DecodeError::bad_ttl);
    if (auto* f = failure(r)) {
        EXPECT_NE(f->message.find("hop limit 254"), std::string::npos);
    }
    DecodeOptions no_ttl;
    no_ttl.require_ttl_255 = false;
    EXPECT_TRUE(std::holds_alternative<Advert>(decode_advert(full, ctx4(64), no_ttl)));

    // no_addresses
    Bytes empty = {0x31, 51, 150, 0, 0x00, 100, 0, 0};
    set_checksum(empty, kSrc4, kGroup4);
    EXPECT_EQ(error_of(decode_advert(empty, ctx4())), DecodeError::no_addresses);

    // address_count_mismatch: too few bytes for the count, trailing bytes, IPv4-sized
    // addresses in an IPv6 packet
    EXPECT_EQ(error_of(decode_advert(std::span(full.data(), full.size() - 4), ctx4())),
              DecodeError::address_count_mismatch);
    Bytes trailing = full;
    trailing.insert(trailing.end(), {0, 0, 0, 0});
    r = decode_advert(trailing, ctx4());
    EXPECT_EQ(error_of(r), DecodeError::address_count_mismatch);
    if (auto* f = failure(r)) {
        EXPECT_NE(f->message.find("20 bytes"), std::string::npos) << f->message;
    }
    Bytes v4_in_v6 = full;
    set_checksum(v4_in_v6, kSrc6, kGroup6);
    EXPECT_EQ(error_of(decode_advert(v4_in_v6, ctx6())), DecodeError::address_count_mismatch);

    // bad_checksum: one bit of an address flipped
    Bytes flipped = full;
    flipped[11] ^= 0x01;
    EXPECT_EQ(error_of(decode_advert(flipped, ctx4())), DecodeError::bad_checksum);

    // bad_vrid
    Bytes vrid0 = full;
    vrid0[1] = 0;
    set_checksum(vrid0, kSrc4, kGroup4);
    EXPECT_EQ(error_of(decode_advert(vrid0, ctx4())), DecodeError::bad_vrid);

    // bad_interval (the reserved bits do not count as interval)
    Bytes int0 = full;
    int0[4] = 0xF0;
    int0[5] = 0;
    set_checksum(int0, kSrc4, kGroup4);
    EXPECT_EQ(error_of(decode_advert(int0, ctx4())), DecodeError::bad_interval);
}

TEST(VrrpPacket, AcceptsEitherOnesComplementZeroAsChecksum) {
    // Adjust the last word of an address by the checksum so that the computed checksum
    // becomes 0x0000; then 0xffff (the other zero) must verify too.
    Bytes m = hand_v4();
    const uint32_t c = (uint32_t{m[6]} << 8) | m[7];
    uint32_t w = ((uint32_t{m[14]} << 8) | m[15]) + c;
    w = (w & 0xFFFF) + (w >> 16);
    m[14] = static_cast<uint8_t>(w >> 8);
    m[15] = static_cast<uint8_t>(w);
    set_checksum(m, kSrc4, kGroup4);
    ASSERT_EQ(m[6], 0);
    ASSERT_EQ(m[7], 0);
    EXPECT_TRUE(std::holds_alternative<Advert>(decode_advert(m, ctx4())));
    m[6] = m[7] = 0xFF;
    DecodeOptions strict;
    strict.v4_checksum = V4ChecksumAccept::pseudo_header_only;
    auto r = decode_advert(m, ctx4(), strict);
    EXPECT_TRUE(std::holds_alternative<Advert>(r)) << failure(r)->message;
}

TEST(VrrpPacket, ReservedBitsAreIgnoredOnReceipt) {
    Bytes m = hand_v4();
    m[4] |= 0xA0;
    set_checksum(m, kSrc4, kGroup4);
    auto r = decode_advert(m, ctx4());
    ASSERT_TRUE(std::holds_alternative<Advert>(r)) << failure(r)->message;
    EXPECT_EQ(std::get<Advert>(r).max_advert_int_cs, 100);
}

TEST(VrrpPacket, DecodeErrorNamesAreDistinct) {
    std::set<std::string> names;
    for (size_t i = 0; i < kDecodeErrorCount; ++i) {
        const std::string n = to_string(static_cast<DecodeError>(i));
        EXPECT_NE(n, "unknown") << i;
        names.insert(n);
    }
    EXPECT_EQ(names.size(), kDecodeErrorCount);
}

TEST(VrrpPacket, RoundTripsLimits) {
    Advert a;
    a.vrid = 255;
    a.priority = 0;  // a resigning master
    a.max_advert_int_cs = 4095;
    for (int i = 0; i < 255; ++i) {
        IpAddr v = ip("2001:db8::");
        v.bytes[14] = static_cast<uint8_t>(i >> 8);
        v.bytes[15] = static_cast<uint8_t>(i);
        a.addresses.push_back(v);
    }
    const Bytes m = encode_advert(a, kSrc6, kGroup6);
    EXPECT_EQ(m.size(), 8u + 255u * 16u);
    auto r = decode_advert(m, ctx6());
    ASSERT_TRUE(std::holds_alternative<Advert>(r)) << failure(r)->message;
    EXPECT_EQ(std::get<Advert>(r), a);
}

TEST(VrrpPacket, EncodeRefusesInvalidAdverts) {
    auto bad = [](auto mutate, const IpAddr& dst = kGroup4) {
        Advert a = advert_v4();
        mutate(a);
        EXPECT_THROW(encode_advert(a, kSrc4, dst), std::invalid_argument);
    };
    bad([](Advert& a) { a.vrid = 0; });
    bad([](Advert& a) { a.max_advert_int_cs = 0; });
    bad([](Advert& a) { a.max_advert_int_cs = 4096; });
    bad([](Advert& a) { a.addresses.clear(); });
    bad([](Advert& a) { a.addresses.assign(256, ip("198.18.1.1")); });
    bad([](Advert& a) { a.addresses.push_back(ip("2001:db8::1")); });
    bad([](Advert&) {}, kGroup6);
}

// ---- state machine ---------------------------------------------------------------------------

const TimePoint T0 = TimePoint{} + 1000s;
const Action kBecomeMaster{ActionKind::become_master, 0};
const Action kLeaveMaster{ActionKind::leave_master, 0};
const Action kHeal{ActionKind::heal_split, 0};
Action advert(uint8_t prio) {
    return {ActionKind::send_advert, prio};
}
using Actions = std::vector<Action>;

// Advertisement_Interval 1 s so that the timer values read easily.
Config cfg(uint8_t priority, const char* address = "198.18.0.1") {
    Config c;
    c.vrid = 51;
    c.priority = priority;
    c.advert_interval_cs = 100;
    c.primary_address = ip(address);
    return c;
}

PeerAdvert peer(uint8_t priority, const char* source = "198.18.0.2", uint16_t interval_cs = 100) {
    return PeerAdvert{ip(source), 51, priority, interval_cs};
}

// Skew_Time and Master_Down_Interval computed from the RFC formulas, in microseconds.
microseconds skew(int priority, int master_adver_int_cs) {
    return microseconds((256 - priority) * int64_t{master_adver_int_cs} * 10'000 / 256);
}
microseconds mdi(int priority, int master_adver_int_cs) {
    return microseconds(3 * int64_t{master_adver_int_cs} * 10'000) +
           skew(priority, master_adver_int_cs);
}

// A router that started at T0 and became Master when its Master_Down_Timer fired.
Router started_master(Config c, TimePoint* at = nullptr) {
    Router r(std::move(c));
    const auto d = r.startup(T0).next_deadline;
    EXPECT_TRUE(d.has_value());
    r.tick(*d);
    EXPECT_EQ(r.state(), State::master);
    if (at) *at = *d;
    return r;
}

TEST(Vrrp, StartupGoesToBackupWithMasterDownTimer) {
    Router r(cfg(100));
    EXPECT_EQ(r.state(), State::initialize);
    EXPECT_EQ(r.next_deadline(), std::nullopt);
    const Step s = r.startup(T0);
    EXPECT_EQ(s.actions, Actions{});
    EXPECT_EQ(r.state(), State::backup);
    // 3 * 1 s + (256 - 100) / 256 s
    EXPECT_EQ(s.next_deadline, T0 + 3'609'375us);
    EXPECT_EQ(r.last_transition().from, State::initialize);
    EXPECT_EQ(r.last_transition().to, State::backup);
    EXPECT_EQ(r.last_transition().reason, "startup");
    EXPECT_EQ(r.master_address(), std::nullopt);
    // A second startup changes nothing.
    EXPECT_EQ(r.startup(T0 + 1s).next_deadline, T0 + 3'609'375us);
}

TEST(Vrrp, AddressOwnerStartsAsMaster) {
    Router r(cfg(255));
    const Step s = r.startup(T0);
    EXPECT_EQ(s.actions, (Actions{advert(255), kBecomeMaster}));
    EXPECT_EQ(r.state(), State::master);
    EXPECT_EQ(s.next_deadline, T0 + 1s);
    EXPECT_EQ(r.last_transition().reason, "startup as address owner (priority 255)");
    EXPECT_TRUE(r.accepts_vip_traffic());
}

TEST(Vrrp, MasterDownTimerExpiryMakesMaster) {
    Router r(cfg(100));
    const TimePoint due = *r.startup(T0).next_deadline;
    EXPECT_EQ(r.tick(due - 1us).actions, Actions{});
    EXPECT_EQ(r.state(), State::backup);
    const Step s = r.tick(due);
    EXPECT_EQ(s.actions, (Actions{advert(100), kBecomeMaster}));
    EXPECT_EQ(r.state(), State::master);
    EXPECT_EQ(s.next_deadline, due + 1s);
    EXPECT_EQ(r.last_transition().reason,
              "no advert within Master_Down_Interval (3609.375 ms) after startup");
    EXPECT_EQ(r.master_address(), ip("198.18.0.1"));
    // As Master: one advert per Advertisement_Interval, measured from when it was sent.
    EXPECT_EQ(r.tick(due + 999ms).actions, Actions{});
    const Step next = r.tick(due + 1500ms);
    EXPECT_EQ(next.actions, Actions{advert(100)});
    EXPECT_EQ(next.next_deadline, due + 2500ms);
    EXPECT_EQ(r.stats().adverts_sent, 2u);
}

TEST(Vrrp, SkewFollowsPriority) {
    for (int p : {1, 100, 200, 254, 255}) {
        Config c = cfg(static_cast<uint8_t>(p));
        Router r(c);
        EXPECT_EQ(r.skew_time(), skew(p, 100)) << p;
        EXPECT_EQ(r.master_down_interval(), mdi(p, 100)) << p;
    }
    EXPECT_EQ(Router(cfg(200)).skew_time(), 218'750us);  // 56/256 s
    EXPECT_EQ(Router(cfg(1)).skew_time(), 996'093us);    // 255/256 s, to the microsecond
    Config fast = cfg(100);
    fast.advert_interval_cs = 10;  // the default 100 ms: the skew must not round to 0 or 60 ms
    EXPECT_EQ(Router(fast).skew_time(), 60'937us);
    EXPECT_EQ(Router(fast).master_down_interval(), 360'937us);

    // Two backups that lost their master at the same moment: the higher priority fires first,
    // and its advert keeps the other in Backup.
    Router high(cfg(200, "198.18.0.3"));
    Router low(cfg(100, "198.18.0.4"));
    const TimePoint high_due = *high.startup(T0).next_deadline;
    const TimePoint low_due = *low.startup(T0).next_deadline;
    EXPECT_EQ(low_due - high_due, mdi(100, 100) - mdi(200, 100));
    EXPECT_EQ(high.tick(high_due).actions, (Actions{advert(200), kBecomeMaster}));
    const Step s = low.advert_received(high_due, peer(200, "198.18.0.3"));
    EXPECT_EQ(s.next_deadline, high_due + mdi(100, 100));
    EXPECT_EQ(low.tick(low_due).actions, Actions{});
    EXPECT_EQ(low.state(), State::backup);
    EXPECT_EQ(low.master_address(), ip("198.18.0.3"));
    EXPECT_EQ(low.master_priority(), 200);
}

TEST(Vrrp, MasterHearingHigherPriorityBecomesBackup) {
    TimePoint t;
    Router r = started_master(cfg(100), &t);
    const Step s = r.advert_received(t + 200ms, peer(200, "198.18.0.2", 50));
    EXPECT_EQ(s.actions, Actions{kLeaveMaster});
    EXPECT_EQ(r.state(), State::backup);
    EXPECT_EQ(r.master_advert_interval_cs(), 50);
    EXPECT_EQ(s.next_deadline, t + 200ms + mdi(100, 50));
    EXPECT_EQ(r.last_transition().reason,
              "advert from 198.18.0.2 with higher priority (200 > 100)");
    EXPECT_EQ(r.master_address(), ip("198.18.0.2"));
    EXPECT_EQ(r.stats().left_master, 1u);
}

TEST(Vrrp, MasterHearingLowerPriorityAdvertisesAndHeals) {
    TimePoint t;
    Router r = started_master(cfg(150), &t);
    const Step s = r.advert_received(t + 300ms, peer(100));
    EXPECT_EQ(s.actions, (Actions{advert(150), kHeal}));
    EXPECT_EQ(r.state(), State::master);
    EXPECT_EQ(s.next_deadline, t + 1300ms);  // the Adver_Timer restarts from this advert
    EXPECT_EQ(r.stats().split_heals, 1u);
}

TEST(Vrrp, MasterAnswersPriorityZeroAtOnce) {
    TimePoint t;
    Router r = started_master(cfg(150), &t);
    const Step s = r.advert_received(t + 400ms, peer(0));
    EXPECT_EQ(s.actions, Actions{advert(150)});
    EXPECT_EQ(s.next_deadline, t + 1400ms);
    EXPECT_EQ(r.state(), State::master);
    EXPECT_EQ(r.stats().priority_zero_received, 1u);
}

TEST(Vrrp, BackupHearingPriorityZeroWaitsOnlySkewTime) {
    Router r(cfg(100));
    r.startup(T0);
    EXPECT_EQ(r.advert_received(T0 + 1s, peer(200)).next_deadline, T0 + 1s + mdi(100, 100));
    const Step s = r.advert_received(T0 + 2s, peer(0));
    EXPECT_EQ(s.actions, Actions{});
    EXPECT_EQ(s.next_deadline, T0 + 2s + 609'375us);
    EXPECT_EQ(r.master_address(), std::nullopt);
    EXPECT_EQ(r.tick(T0 + 2s + 609'374us).actions, Actions{});
    EXPECT_EQ(r.tick(T0 + 2s + 609'375us).actions, (Actions{advert(100), kBecomeMaster}));
    EXPECT_EQ(r.last_transition().reason,
              "master 198.18.0.2 resigned (priority 0 advert), Skew_Time 609.375 ms passed");
}

TEST(Vrrp, PreemptOffLeavesALiveLowerMaster) {
    Config c = cfg(200);
    c.preempt = false;
    Router r(c);
    r.startup(T0);
    TimePoint last = T0;
    for (int i = 0; i < 20; ++i) {  // 20 s of adverts from a priority-100 master
        last = T0 + 500ms + std::chrono::seconds(i);
        r.advert_received(last, peer(100));
        EXPECT_EQ(r.tick(last + 900ms).actions, Actions{}) << i;
    }
    EXPECT_EQ(r.state(), State::backup);
    EXPECT_EQ(r.master_priority(), 100);
    // The master goes silent: take over after Master_Down_Interval.
    EXPECT_EQ(r.next_deadline(), last + mdi(200, 100));
    EXPECT_EQ(r.tick(last + mdi(200, 100)).actions, (Actions{advert(200), kBecomeMaster}));
}

TEST(Vrrp, PreemptOnTakesOverFromALowerMaster) {
    Router r(cfg(200));
    const TimePoint due = *r.startup(T0).next_deadline;
    for (int i = 0; i < 3; ++i) {  // adverts at 0.5, 1.5, 2.5 s are discarded
        const Step s = r.advert_received(T0 + 500ms + std::chrono::seconds(i), peer(100));
        EXPECT_EQ(s.next_deadline, due) << "a lower-priority advert must not reset the timer";
    }
    EXPECT_EQ(r.stats().preempt_discards, 3u);
    EXPECT_EQ(r.tick(due).actions, (Actions{advert(200), kBecomeMaster}));
    EXPECT_EQ(r.last_transition().reason,
              "preempted lower-priority master 198.18.0.2 (priority 100 < 200)");
}

TEST(Vrrp, PreemptDelayWaitsBeforePreempting) {
    Config c = cfg(200);
    c.preempt_delay = 5s;
    Router r(c);
    r.startup(T0);
    // A lower master advertises every second from 0.5 s. Its adverts are accepted while the
    // delay runs (0.5 s up to 5.5 s), so the timer keeps being reset; from 5.5 s they are
    // discarded, so it runs out 4.5 s + Master_Down_Interval.
    for (int i = 0; i < 8; ++i) {
        const TimePoint at = T0 + 500ms + std::chrono::seconds(i);
        EXPECT_EQ(r.tick(at).actions, Actions{}) << i;
        r.advert_received(at, peer(100));
    }
    EXPECT_EQ(r.stats().preempt_discards, 3u);  // 5.5, 6.5 and 7.5 s
    const TimePoint due = T0 + 4500ms + mdi(200, 100);
    EXPECT_EQ(r.next_deadline(), due);
    EXPECT_EQ(r.tick(due).actions, (Actions{advert(200), kBecomeMaster}));

    // An advert of priority >= ours restarts the delay clock.
    Router q(c);
    q.startup(T0);
    q.advert_received(T0 + 1s, peer(100));                     // delay starts at 1 s
    q.advert_received(T0 + 2s, peer(250, "198.18.0.9"));       // higher master: clock reset
    q.advert_received(T0 + 3s, peer(100));                     // delay starts again at 3 s
    const Step s = q.advert_received(T0 + 7500ms, peer(100));  // < 3 s + 5 s: accepted
    EXPECT_EQ(s.next_deadline, T0 + 7500ms + mdi(200, 100));
    EXPECT_EQ(q.stats().preempt_discards, 0u);
    q.advert_received(T0 + 8s, peer(100));  // >= 8 s: discarded
    EXPECT_EQ(q.stats().preempt_discards, 1u);
}

TEST(Vrrp, EqualPriorityTieBreaksOnTheHigherAddress) {
    TimePoint t;
    Router low = started_master(cfg(100, "198.18.0.1"), &t);
    Router high = started_master(cfg(100, "198.18.0.2"));
    EXPECT_EQ(low.advert_received(t, peer(100, "198.18.0.2")).actions, Actions{kLeaveMaster});
    EXPECT_EQ(low.state(), State::backup);
    EXPECT_EQ(low.last_transition().reason,
              "advert from 198.18.0.2 with equal priority 100 and a higher primary address");
    EXPECT_EQ(high.advert_received(t, peer(100, "198.18.0.1")).actions,
              (Actions{advert(100), kHeal}));
    EXPECT_EQ(high.state(), State::master);

    // IPv6 addresses compare numerically: ::10 > ::9.
    Router v6 = started_master(cfg(100, "2001:db8::9"));
    EXPECT_EQ(v6.advert_received(t, peer(100, "2001:db8::10")).actions, Actions{kLeaveMaster});
    Router v6b = started_master(cfg(100, "2001:db8::10"));
    EXPECT_EQ(v6b.advert_received(t, peer(100, "2001:db8::9")).actions,
              (Actions{advert(100), kHeal}));

    // A Backup does not preempt on a tie: equal priority adverts are accepted.
    Router b(cfg(100, "198.18.0.200"));
    b.startup(T0);
    EXPECT_EQ(b.advert_received(T0 + 1s, peer(100)).next_deadline, T0 + 1s + mdi(100, 100));
}

TEST(Vrrp, ShutdownSendsPriorityZero) {
    TimePoint t;
    Router m = started_master(cfg(100), &t);
    const Step s = m.shutdown(t + 10ms);
    EXPECT_EQ(s.actions, (Actions{advert(0), kLeaveMaster}));
    EXPECT_EQ(s.next_deadline, std::nullopt);
    EXPECT_EQ(m.state(), State::initialize);
    EXPECT_EQ(m.last_transition().reason, "shutdown");
    EXPECT_EQ(m.stats().priority_zero_sent, 1u);
    // Not running: adverts and ticks do nothing; startup runs again.
    EXPECT_EQ(m.advert_received(t + 1s, peer(0)).actions, Actions{});
    EXPECT_EQ(m.tick(t + 100s).actions, Actions{});
    EXPECT_EQ(m.startup(t + 101s).next_deadline, t + 101s + mdi(100, 100));

    Router b(cfg(100));
    b.startup(T0);
    EXPECT_EQ(b.shutdown(T0 + 1s).actions, Actions{});
    EXPECT_EQ(b.state(), State::initialize);
}

TEST(Vrrp, FaultLeavesMasterUntilEveryFaultClears) {
    TimePoint t;
    Router r = started_master(cfg(150), &t);
    Step s = r.set_fault(t + 1s, "dataplane", true);
    EXPECT_EQ(s.actions, (Actions{advert(0), kLeaveMaster}));
    EXPECT_EQ(r.state(), State::backup);
    EXPECT_TRUE(r.faulted());
    EXPECT_EQ(s.next_deadline, std::nullopt);
    EXPECT_EQ(r.last_transition().reason, "fault: dataplane");
    // No timer, and not even a resigning master makes it take over.
    EXPECT_EQ(r.advert_received(t + 2s, peer(0)).next_deadline, std::nullopt);
    EXPECT_EQ(r.tick(t + 100s).actions, Actions{});
    EXPECT_EQ(r.set_fault(t + 101s, "uplink", true).actions, Actions{});
    EXPECT_EQ(r.set_fault(t + 102s, "dataplane", false).next_deadline, std::nullopt);
    EXPECT_EQ(r.faults(), (std::set<std::string, std::less<>>{"uplink"}));
    // Clearing the last fault restarts the Master_Down_Timer.
    s = r.set_fault(t + 103s, "uplink", false);
    EXPECT_EQ(s.actions, Actions{});
    EXPECT_EQ(s.next_deadline, t + 103s + mdi(150, 100));
    EXPECT_EQ(r.tick(*s.next_deadline).actions, (Actions{advert(150), kBecomeMaster}));
    EXPECT_EQ(r.last_transition().reason,
              "no advert within Master_Down_Interval (3414.062 ms) after the fault cleared");
}

TEST(Vrrp, FaultAtStartupAndForTheOwner) {
    Router r(cfg(255));
    r.set_fault(T0, "no server up", true);
    EXPECT_EQ(r.startup(T0).actions, Actions{});
    EXPECT_EQ(r.state(), State::backup);
    EXPECT_EQ(r.last_transition().reason, "startup while faulted (no server up)");
    EXPECT_EQ(r.next_deadline(), std::nullopt);
    // The owner takes over as soon as it is healthy, as it would at startup.
    EXPECT_EQ(r.set_fault(T0 + 5s, "no server up", false).actions,
              (Actions{advert(255), kBecomeMaster}));
    EXPECT_EQ(r.state(), State::master);
}

TEST(Vrrp, HoldBlocksPreemptionUntilSyncCompletes) {
    Router r(cfg(200));
    r.set_hold(T0, true, "bulk sync running");
    r.startup(T0);
    TimePoint last = T0;
    for (int i = 0; i < 30; ++i) {  // a lower-priority master keeps advertising
        last = T0 + 500ms + std::chrono::seconds(i);
        r.advert_received(last, peer(100));
        EXPECT_EQ(r.tick(last + 900ms).actions, Actions{}) << i;
    }
    EXPECT_EQ(r.state(), State::backup);
    EXPECT_EQ(r.stats().preempt_discards, 0u);
    // Sync complete: the next lower-priority adverts are discarded and the timer runs out.
    r.set_hold(last + 950ms, false);
    EXPECT_FALSE(r.held());
    for (int i = 1; i <= 3; ++i) r.advert_received(last + std::chrono::seconds(i), peer(100));
    EXPECT_EQ(r.stats().preempt_discards, 3u);
    EXPECT_EQ(r.tick(last + mdi(200, 100)).actions, (Actions{advert(200), kBecomeMaster}));
}

TEST(Vrrp, HoldNeverStopsTakingOverFromADeadMaster) {
    Router r(cfg(200));
    r.set_hold(T0, true, "bulk sync running");
    const TimePoint due = *r.startup(T0).next_deadline;
    EXPECT_EQ(r.tick(due).actions, (Actions{advert(200), kBecomeMaster}));

    // An address owner that starts held waits in Backup like the others.
    Router owner(cfg(255));
    owner.set_hold(T0, true, "bulk sync running");
    EXPECT_EQ(owner.startup(T0).actions, Actions{});
    EXPECT_EQ(owner.state(), State::backup);
    EXPECT_EQ(owner.last_transition().reason,
              "startup as address owner held in backup (bulk sync running)");
    EXPECT_EQ(owner.advert_received(T0 + 1s, peer(100)).next_deadline, T0 + 1s + mdi(255, 100));
}

TEST(Vrrp, BackupLearnsMasterAdverInterval) {
    Router r(cfg(100));  // own interval 1 s
    r.startup(T0);
    Step s = r.advert_received(T0 + 1s, peer(200, "198.18.0.2", 10));
    EXPECT_EQ(r.master_advert_interval_cs(), 10);
    EXPECT_EQ(s.next_deadline, T0 + 1s + 360'937us);  // 3 * 100 ms + 156/256 * 100 ms
    s = r.advert_received(T0 + 2s, peer(200, "198.18.0.2", 200));
    EXPECT_EQ(s.next_deadline, T0 + 2s + 6s + 1'218'750us);
    // A discarded (lower-priority) advert teaches nothing.
    r.advert_received(T0 + 3s, peer(50, "198.18.0.3", 20));
    EXPECT_EQ(r.master_advert_interval_cs(), 200);
    // Our own adverts keep our configured interval.
    EXPECT_EQ(r.config().advert_interval_cs, 100);
}

TEST(Vrrp, IgnoresOtherVridOwnAndInvalidAdverts) {
    Router r(cfg(100));
    const TimePoint due = *r.startup(T0).next_deadline;
    PeerAdvert other = peer(200);
    other.vrid = 52;
    EXPECT_EQ(r.advert_received(T0 + 1s, other).next_deadline, due);
    EXPECT_EQ(r.advert_received(T0 + 1s, peer(200, "198.18.0.1")).next_deadline, due);
    EXPECT_EQ(r.advert_received(T0 + 1s, peer(200, "2001:db8::2")).next_deadline, due);
    EXPECT_EQ(r.advert_received(T0 + 1s, peer(200, "198.18.0.2", 0)).next_deadline, due);
    EXPECT_EQ(r.stats().other_vrid, 1u);
    EXPECT_EQ(r.stats().own_adverts, 1u);
    EXPECT_EQ(r.stats().invalid, 2u);
    EXPECT_EQ(r.stats().adverts_received, 4u);
}

TEST(Vrrp, AcceptMode) {
    Router plain = started_master(cfg(100));
    EXPECT_FALSE(plain.accepts_vip_traffic());
    Config c = cfg(100);
    c.accept_mode = true;
    Router accepting = started_master(c);
    EXPECT_TRUE(accepting.accepts_vip_traffic());
    accepting.shutdown(T0 + 100s);
    EXPECT_FALSE(accepting.accepts_vip_traffic());
}

TEST(Vrrp, ConfigIsValidated) {
    auto refused = [](auto mutate, const char* word) {
        Config c = cfg(100);
        mutate(c);
        try {
            Router r(c);
            ADD_FAILURE() << "accepted a config with bad " << word;
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
        }
    };
    refused([](Config& c) { c.vrid = 0; }, "vrid");
    refused([](Config& c) { c.priority = 0; }, "priority");
    refused([](Config& c) { c.advert_interval_cs = 0; }, "interval");
    refused([](Config& c) { c.advert_interval_cs = 4096; }, "interval");
    refused([](Config& c) { c.preempt_delay = -1ms; }, "preempt_delay");
    refused([](Config& c) { c.preempt_delay = 1001s; }, "preempt_delay");
    refused([](Config& c) { c.primary_address = IpAddr{}; }, "primary_address");
    EXPECT_NO_THROW(Router{cfg(255)});
}

}  // namespace
