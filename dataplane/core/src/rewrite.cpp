#include "fulcrum/rewrite.hpp"

#include <algorithm>

#include "fulcrum/bytes.hpp"
#include "fulcrum/checksum.hpp"

namespace fulcrum {

EncapParams EncapParams::from(const fl_snap_header& h) {
    EncapParams e;
    std::memcpy(e.src4, h.encap_src4, 4);
    e.src4_len = h.encap_src4_len;
    std::memcpy(e.src6, h.encap_src6, 16);
    e.src6_len = h.encap_src6_len;
    e.gue_port = h.gue_port;
    e.ttl = h.outer_ttl ? h.outer_ttl : 64;
    e.mtu = h.mtu;
    return e;
}

namespace detail {
namespace {
// Both entry points below inline this: from the EncapParams the template's values stay in
// registers instead of being written out and read back.
[[gnu::always_inline]] inline bool encap_v6(Frame& f, const Parsed& p, bool gue,
                                            const uint8_t* server_addr, const EncapTemplate::V6& v,
                                            uint64_t hash) {
    const uint32_t oh = gue ? 48 : 40;
    // Everything is read before the first packet byte is written (see make_room).
    const uint32_t l3 = p.l3_off;
    const uint32_t inner_len = p.l3_len;
    const uint32_t flow_label = static_cast<uint32_t>(hash >> 12) & 0xFFFFF;
    // Bytes 0-7: version, traffic class, flow label, payload length, next header, hop limit.
    const uint64_t w0 = v.w0 | (uint64_t{(uint32_t{p.tos} << 20) | flow_label} << 32) |
                        (uint64_t{static_cast<uint16_t>(inner_len + oh - 40)} << 16);
    // The source (see encap_source_v6), in memory order.
    const uint64_t src[2] = {v.prefix[0] | (hash & v.host_mask[0]),
                             v.prefix[1] | ((hash * 0x9E3779B97F4A7C15ull) & v.host_mask[1])};
    uint64_t dst[2];
    std::memcpy(dst, server_addr, 16);
    const uint32_t ulen = inner_len + 8;
    const uint64_t udp = (uint64_t{0xC000 | ((hash >> 20) & 0x3FFF)} << 48) | v.udp |
                         (uint64_t{static_cast<uint16_t>(ulen)} << 16);
    uint8_t* const d = make_room(f, p, oh);
    if (!d) return false;
    uint8_t* const ip = d + l3;
    store_be64_wide(ip, w0);
    std::memcpy(ip + 8, src, 16);
    std::memcpy(ip + 24, dst, 16);
    if (!gue) return true;
    store_be64_wide(ip + 40, udp);
    // A zero UDP checksum is not allowed over IPv6 (RFC 8200). The pseudo-header's addresses
    // are summed from the registers as native 64-bit words with end-around carry (RFC 1071:
    // byte-order independent), folded and put in big-endian order once.
    uint64_t acc = 0;
    for (const uint64_t w : {src[0], src[1], dst[0], dst[1]}) {
        acc += w;
        acc += acc < w;
    }
    const auto native = static_cast<uint16_t>(csum_fold64(acc));
    uint8_t b[2];
    std::memcpy(b, &native, 2);
    const uint32_t pseudo = uint32_t{load_be16(b)} + (ulen >> 16) + (ulen & 0xFFFF) + ipproto::kUdp;
    const uint16_t c = csum_fold(csum_partial(ip + 40, ulen, pseudo));
    store_be16(ip + 46, c ? c : 0xFFFF);  // 0 would mean "no checksum"
    return true;
}

}  // namespace

bool encapsulate_v6(Frame& f, const Parsed& p, bool gue, const uint8_t* server_addr,
                    const EncapTemplate::V6& v, uint64_t hash) {
    return encap_v6(f, p, gue, server_addr, v, hash);
}

bool encapsulate_v6(Frame& f, const Parsed& p, bool gue, const uint8_t* server_addr,
                    const EncapParams& e, uint64_t hash) {
    return encap_v6(f, p, gue, server_addr, EncapTemplate::make_v6(e, gue), hash);
}
}  // namespace detail

void make_echo_reply(Frame& f, const Parsed& p) {
    trim_to_ip(f, p);
    swap_macs(f.data);
    uint8_t* ip = f.data + p.l3_off;
    uint8_t* icmp = f.data + p.l4_off;
    if (!p.is_v6()) {
        uint8_t tmp[4];
        std::memcpy(tmp, ip + 12, 4);
        std::memcpy(ip + 12, ip + 16, 4);
        std::memcpy(ip + 16, tmp, 4);
        ip[8] = 64;
        const size_t ihl = static_cast<size_t>(ip[0] & 0x0F) * 4;
        store_be16(ip + 10, ipv4_header_checksum(ip, ihl));
        const uint16_t old = load_be16(icmp);
        icmp[0] = 0;  // echo reply
        store_be16(icmp + 2, csum_update16(load_be16(icmp + 2), old, load_be16(icmp)));
    } else {
        uint8_t tmp[16];
        std::memcpy(tmp, ip + 8, 16);
        std::memcpy(ip + 8, ip + 24, 16);
        std::memcpy(ip + 24, tmp, 16);
        ip[7] = 64;
        // The pseudo-header sum is unchanged by swapping addresses; only the type changes.
        const uint16_t old = load_be16(icmp);
        icmp[0] = 129;
        store_be16(icmp + 2, csum_update16(load_be16(icmp + 2), old, load_be16(icmp)));
    }
}

bool make_too_big_reply(Frame& f, const Parsed& p, uint32_t mtu) {
    trim_to_ip(f, p);
    const bool v6 = p.is_v6();
    const uint32_t l2 = p.l3_off;
    const uint32_t hdr = v6 ? 48 : 28;  // new IP header + ICMP header
    // RFC 1812 4.3.2.3: at most 576 bytes in all; RFC 4443 2.4: at most the IPv6 minimum MTU.
    const uint32_t quote = std::min<uint32_t>(p.l3_len, (v6 ? 1280u : 576u) - hdr);
    f.trim(l2 + quote);
    if (!f.prepend(hdr)) return false;
    std::memmove(f.data, f.data + hdr, l2);
    swap_macs(f.data);
    uint8_t* ip = f.data + l2;
    uint8_t* icmp = ip + (v6 ? 40 : 20);
    if (!v6) {
        mtu = std::clamp<uint32_t>(mtu, 68, 0xFFFF);
        ip[0] = 0x45;
        ip[1] = 0;
        store_be16(ip + 2, static_cast<uint16_t>(hdr + quote));
        store_be16(ip + 4, 0);
        store_be16(ip + 6, 0);
        ip[8] = 64;
        ip[9] = ipproto::kIcmp;
        std::memcpy(ip + 12, p.dst, 4);
        std::memcpy(ip + 16, p.src, 4);
        store_be16(ip + 10, 0);
        store_be16(ip + 10, ipv4_header_checksum(ip, 20));
        icmp[0] = 3;  // destination unreachable
        icmp[1] = 4;  // fragmentation needed and DF set
        store_be16(icmp + 2, 0);
        store_be16(icmp + 4, 0);
        store_be16(icmp + 6, static_cast<uint16_t>(mtu));
        store_be16(icmp + 2, csum_fold(csum_partial(icmp, 8 + quote, 0)));
    } else {
        mtu = std::max<uint32_t>(mtu, 1280);
        store_be32(ip, 6u << 28);
        store_be16(ip + 4, static_cast<uint16_t>(8 + quote));
        ip[6] = ipproto::kIcmpv6;
        ip[7] = 64;
        std::memcpy(ip + 8, p.dst, 16);
        std::memcpy(ip + 24, p.src, 16);
        icmp[0] = 2;  // packet too big
        icmp[1] = 0;
        store_be16(icmp + 2, 0);
        store_be32(icmp + 4, mtu);
        uint32_t sum = pseudo_sum_v6(ip + 8, ip + 24, ipproto::kIcmpv6, 8 + quote);
        store_be16(icmp + 2, csum_fold(csum_partial(icmp, 8 + quote, sum)));
    }
    store_be16(f.data + l2 - 2, v6 ? eth::kIpv6 : eth::kIpv4);
    return true;
}

int fragment_ipv4(Frame& f, uint32_t l3_off, uint32_t mtu, std::span<Frame> out) {
    uint8_t* ip = f.data + l3_off;
    const uint32_t ihl = uint32_t{ip[0] & 0x0Fu} * 4;
    const uint32_t tot = load_be16(ip + 2);
    if (tot <= mtu) return 0;
    if (mtu < ihl + 8 || f.len < l3_off + tot) return -1;
    const uint32_t chunk = (mtu - ihl) & ~7u;  // payload per fragment, multiple of 8
    const uint32_t payload = tot - ihl;
    const uint32_t nfrag = (payload + chunk - 1) / chunk;
    if (nfrag - 1 > out.size()) return -1;
    const uint16_t base_ff = load_be16(ip + 6);
    const uint32_t base_off = uint32_t{base_ff & 0x1FFFu} * 8;
    const bool base_mf = base_ff & 0x2000;
    for (uint32_t i = 1; i < nfrag; ++i) {
        Frame& o = out[i - 1];
        const uint32_t plen = std::min(chunk, payload - i * chunk);
        const uint32_t need = l3_off + ihl + plen;
        if (o.buf_len - o.headroom < need) return -1;
        o.len = need;
        std::memcpy(o.data, f.data, l3_off + ihl);
        std::memcpy(o.data + l3_off + ihl, ip + ihl + i * chunk, plen);
        uint8_t* oip = o.data + l3_off;
        store_be16(oip + 2, static_cast<uint16_t>(ihl + plen));
        const bool mf = (i + 1 < nfrag) || base_mf;
        store_be16(oip + 6,
                   static_cast<uint16_t>((mf ? 0x2000 : 0) | ((base_off + i * chunk) / 8)));
        store_be16(oip + 10, 0);
        store_be16(oip + 10, ipv4_header_checksum(oip, ihl));
    }
    store_be16(ip + 2, static_cast<uint16_t>(ihl + chunk));
    store_be16(ip + 6, static_cast<uint16_t>(0x2000 | (base_off / 8)));
    store_be16(ip + 10, 0);
    store_be16(ip + 10, ipv4_header_checksum(ip, ihl));
    f.trim(l3_off + ihl + chunk);
    return static_cast<int>(nfrag - 1);
}

}  // namespace fulcrum
