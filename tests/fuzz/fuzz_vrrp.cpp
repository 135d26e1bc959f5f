// libFuzzer target: the VRRPv3 advert decoder, with the IP-level facts taken from the input.
// Input layout (tests/fuzz/corpus/vrrp/ holds seeds in it):
//   byte 0    bit 0: 0 = IPv4, 1 = IPv6; bits 1-2: IPv4 checksum policy (0 both,
//             1 pseudo-header only, 2 message only, 3 both); bit 3: do not require TTL 255
//   byte 1    TTL / hop limit
//   then      source and destination address (4 or 16 bytes each), then the VRRP message.
// Checks: decoding never reads outside the message (exact-size copy under ASan); a refusal has
// a named error and a message; an accepted advert is consistent with its bytes and encodes back
// to them (up to the reserved bits, which encoding zeroes, and a 0xffff checksum, which
// encodes as the equivalent 0x0000) with the checksum form it matched.
#include <cstring>
#include <memory>
#include <span>
#include <variant>

#include "fulcrum/control/vrrp_packet.hpp"

using namespace fulcrum;
using namespace fulcrum::control::vrrp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    const bool v6 = data[0] & 1;
    const size_t alen = v6 ? 16 : 4;
    if (size < 2 + 2 * alen) return 0;
    IpContext ip;
    ip.family = v6 ? Family::v6 : Family::v4;
    ip.source = v6 ? IpAddr::v6(data + 2) : IpAddr::v4(data + 2);
    ip.destination = v6 ? IpAddr::v6(data + 2 + alen) : IpAddr::v4(data + 2 + alen);
    ip.ttl = data[1];
    DecodeOptions opt;
    switch ((data[0] >> 1) & 3) {
        case 1:
            opt.v4_checksum = V4ChecksumAccept::pseudo_header_only;
            break;
        case 2:
            opt.v4_checksum = V4ChecksumAccept::message_only;
            break;
        default:
            opt.v4_checksum = V4ChecksumAccept::both;
            break;
    }
    opt.require_ttl_255 = !(data[0] & 8);

    const size_t off = 2 + 2 * alen;
    const size_t n = size - off;
    // Exactly sized copy: any read past the end is caught by ASan.
    std::unique_ptr<uint8_t[]> exact(new uint8_t[n ? n : 1]);
    if (n) std::memcpy(exact.get(), data + off, n);
    const std::span<const uint8_t> msg(exact.get(), n);

    const DecodeResult r = decode_advert(msg, ip, opt);
    if (const auto* f = std::get_if<DecodeFailure>(&r)) {
        if (f->message.empty() || std::strcmp(to_string(f->error), "unknown") == 0)
            __builtin_trap();
        return 0;
    }
    const Advert& a = std::get<Advert>(r);
    if (n != kHeaderLen + a.addresses.size() * alen || a.addresses.size() != msg[3] ||
        a.addresses.empty() || a.vrid == 0 || a.vrid != msg[1] || a.priority != msg[2] ||
        a.max_advert_int_cs == 0 || a.max_advert_int_cs > kMaxAdvertIntervalCs)
        __builtin_trap();
    if (!ip.source.is_v4() && !ip.source.is_v6()) __builtin_trap();
    if (v6 && a.checksum_form != ChecksumForm::pseudo_header) __builtin_trap();
    for (const IpAddr& v : a.addresses)
        if (v.family != ip.family) __builtin_trap();

    EncodeOptions eo;
    eo.v4_checksum = a.checksum_form;
    const std::vector<uint8_t> back = encode_advert(a, ip.source, ip.destination, eo);
    if ((msg[4] & 0xF0) == 0) {
        // Byte for byte, but for a stored checksum of 0xffff, which verifies as 0x0000 does.
        if (back.size() != n || std::memcmp(back.data(), msg.data(), 6) != 0 ||
            std::memcmp(back.data() + 8, msg.data() + 8, n - 8) != 0)
            __builtin_trap();
        const bool same = back[6] == msg[6] && back[7] == msg[7];
        const bool other_zero = back[6] == 0 && back[7] == 0 && msg[6] == 0xFF && msg[7] == 0xFF;
        if (!same && !other_zero) __builtin_trap();
    }
    const DecodeResult again = decode_advert(back, ip, opt);
    const auto* b = std::get_if<Advert>(&again);
    if (!b || !(*b == a)) __builtin_trap();
    return 0;
}
