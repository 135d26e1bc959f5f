#include "packet_builder.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "fulcrum/bytes.hpp"
#include "fulcrum/checksum.hpp"

namespace fulcrum::test {

IpAddr ip(const std::string& text) {
    auto a = IpAddr::parse(text);
    if (!a) {
        std::fprintf(stderr, "bad IP literal in test: %s\n", text.c_str());
        std::abort();
    }
    return *a;
}

MacAddr mac(const std::string& text) {
    auto m = MacAddr::parse(text);
    if (!m) {
        std::fprintf(stderr, "bad MAC literal in test: %s\n", text.c_str());
        std::abort();
    }
    return *m;
}

PacketBuilder& PacketBuilder::icmp_echo(uint16_t id, uint16_t sq) {
    proto = src.is_v6() ? 58 : 1;
    icmp_type = src.is_v6() ? 128 : 8;
    icmp_code = 0;
    icmp_rest = (uint32_t{id} << 16) | sq;
    return *this;
}

PacketBuilder& PacketBuilder::icmp_error(uint8_t type, uint8_t code, uint32_t rest,
                                         std::vector<uint8_t> inner) {
    proto = src.is_v6() ? 58 : 1;
    icmp_type = type;
    icmp_code = code;
    icmp_rest = rest;
    payload = std::move(inner);
    return *this;
}

namespace {
void put16(std::vector<uint8_t>& v, uint16_t x) {
    v.push_back(static_cast<uint8_t>(x >> 8));
    v.push_back(static_cast<uint8_t>(x));
}
}  // namespace

std::vector<uint8_t> PacketBuilder::build_ip() const {
    const bool v6 = src.is_v6();
    // L4
    std::vector<uint8_t> l4;
    if (proto == 6) {
        l4.resize(20);
        store_be16(&l4[0], sport);
        store_be16(&l4[2], dport);
        store_be32(&l4[4], seq);
        store_be32(&l4[8], (tcp_flags & 0x10) ? 1 : 0);
        l4[12] = 5 << 4;
        l4[13] = tcp_flags;
        store_be16(&l4[14], 65535);
    } else if (proto == 17) {
        l4.resize(8);
        store_be16(&l4[0], sport);
        store_be16(&l4[2], dport);
        store_be16(&l4[4], static_cast<uint16_t>(8 + payload.size()));
    } else if (proto == 1 || proto == 58) {
        l4.resize(8);
        l4[0] = icmp_type;
        l4[1] = icmp_code;
        store_be32(&l4[4], icmp_rest);
    }
    l4.insert(l4.end(), payload.begin(), payload.end());
    const size_t l4_len = l4.size();

    std::vector<uint8_t> out;
    if (!v6) {
        const size_t ihl = 20 + ipv4_options.size();
        out.resize(ihl);
        out[0] = static_cast<uint8_t>(0x40 | (ihl / 4));
        out[1] = tos;
        store_be16(&out[2], static_cast<uint16_t>(ihl + l4_len));
        store_be16(&out[4], ip_id);
        store_be16(&out[6], static_cast<uint16_t>((df ? 0x4000 : 0) | (more_fragments ? 0x2000 : 0) |
                                                  (frag_offset / 8)));
        out[8] = ttl;
        out[9] = proto;
        std::memcpy(&out[12], src.bytes.data(), 4);
        std::memcpy(&out[16], dst.bytes.data(), 4);
        if (!ipv4_options.empty()) std::memcpy(&out[20], ipv4_options.data(), ipv4_options.size());
        uint16_t c = ipv4_header_checksum(out.data(), ihl);
        if (bad_ip_checksum) c ^= 0x5A5A;
        store_be16(&out[10], c);
        // L4 checksum (only meaningful for unfragmented packets)
        if (proto == 6 || proto == 17 || proto == 1) {
            const size_t co = proto == 6 ? 16 : proto == 17 ? 6 : 2;
            if (l4.size() >= co + 2) {
                uint32_t sum = proto == 1 ? 0 : pseudo_sum_v4(src.bytes.data(), dst.bytes.data(), proto, static_cast<uint32_t>(l4_len));
                uint16_t cs = csum_fold(csum_partial(l4.data(), l4.size(), sum));
                if (proto == 17 && cs == 0) cs = 0xFFFF;
                if (bad_l4_checksum) cs ^= 0x1111;
                store_be16(&l4[co], cs);
            }
        }
        out.insert(out.end(), l4.begin(), l4.end());
        return out;
    }
    // IPv6: extension headers chained in order, then L4.
    std::vector<uint8_t> ext;
    std::vector<uint8_t> types = ipv6_ext_types;
    std::vector<std::vector<uint8_t>> hdrs = ipv6_ext;
    if (ipv6_frag_header) {
        std::vector<uint8_t> fh(8, 0);
        store_be16(&fh[2], static_cast<uint16_t>((frag_offset & 0xFFF8) | (more_fragments ? 1 : 0)));
        store_be32(&fh[4], ip_id);
        types.push_back(44);
        hdrs.push_back(fh);
    }
    for (size_t i = 0; i < hdrs.size(); ++i) {
        std::vector<uint8_t> h = hdrs[i];
        h[0] = i + 1 < hdrs.size() ? types[i + 1] : proto;
        ext.insert(ext.end(), h.begin(), h.end());
    }
    out.resize(40);
    store_be32(&out[0], (6u << 28) | (uint32_t{tos} << 20));
    store_be16(&out[4], static_cast<uint16_t>(ext.size() + l4_len));
    out[6] = hdrs.empty() ? proto : types[0];
    out[7] = ttl;
    std::memcpy(&out[8], src.bytes.data(), 16);
    std::memcpy(&out[24], dst.bytes.data(), 16);
    if (proto == 6 || proto == 17 || proto == 58) {
        const size_t co = proto == 6 ? 16 : proto == 17 ? 6 : 2;
        if (l4.size() >= co + 2) {
            uint32_t sum = pseudo_sum_v6(src.bytes.data(), dst.bytes.data(), proto, static_cast<uint32_t>(l4_len));
            uint16_t cs = csum_fold(csum_partial(l4.data(), l4.size(), sum));
            if (proto == 17 && cs == 0) cs = 0xFFFF;
            if (bad_l4_checksum) cs ^= 0x1111;
            store_be16(&l4[co], cs);
        }
    }
    out.insert(out.end(), ext.begin(), ext.end());
    out.insert(out.end(), l4.begin(), l4.end());
    return out;
}

std::vector<uint8_t> PacketBuilder::build() const {
    std::vector<uint8_t> f;
    f.insert(f.end(), eth_dst.bytes.begin(), eth_dst.bytes.end());
    f.insert(f.end(), eth_src.bytes.begin(), eth_src.bytes.end());
    for (uint16_t tci : vlans) {
        put16(f, 0x8100);
        put16(f, tci);
    }
    put16(f, ethertype ? *ethertype : (src.is_v6() ? 0x86DD : 0x0800));
    auto l3 = build_ip();
    f.insert(f.end(), l3.begin(), l3.end());
    return f;
}

bool checksums_ok(const uint8_t* l3, size_t len) {
    if (len < 1) return false;
    const bool v6 = (l3[0] >> 4) == 6;
    size_t l4 = 0;
    uint8_t proto = 0;
    size_t l4_len = 0;
    uint32_t sum = 0;
    if (!v6) {
        const size_t ihl = static_cast<size_t>(l3[0] & 0x0F) * 4;
        if (csum_fold(csum_partial(l3, ihl, 0)) != 0) return false;
        if (load_be16(l3 + 6) & 0x3FFF) return true;  // fragment: L4 not checkable alone
        proto = l3[9];
        l4 = ihl;
        l4_len = load_be16(l3 + 2) - ihl;
        if (proto != 1) sum = pseudo_sum_v4(l3 + 12, l3 + 16, proto, static_cast<uint32_t>(l4_len));
    } else {
        proto = l3[6];
        l4 = 40;
        l4_len = load_be16(l3 + 4);
        sum = pseudo_sum_v6(l3 + 8, l3 + 24, proto, static_cast<uint32_t>(l4_len));
    }
    if (proto == 4 || proto == 41) return checksums_ok(l3 + l4, len - l4);  // IPIP: check inner
    if (proto == 17 && load_be16(l3 + l4 + 6) == 0 && !v6) return true;   // no UDP checksum
    if (proto != 6 && proto != 17 && proto != 1 && proto != 58) return true;
    return csum_fold(csum_partial(l3 + l4, l4_len, sum)) == 0;
}

}  // namespace fulcrum::test
