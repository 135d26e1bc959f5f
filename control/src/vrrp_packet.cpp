#include "fulcrum/control/vrrp_packet.hpp"

#include <stdexcept>

#include "fulcrum/bytes.hpp"
#include "fulcrum/checksum.hpp"

namespace fulcrum::control::vrrp {

const char* to_string(ChecksumForm f) {
    switch (f) {
        case ChecksumForm::pseudo_header:
            return "pseudo_header";
        case ChecksumForm::message_only:
            return "message_only";
    }
    return "unknown";
}

const char* to_string(V4ChecksumAccept a) {
    switch (a) {
        case V4ChecksumAccept::both:
            return "both";
        case V4ChecksumAccept::pseudo_header_only:
            return "pseudo_header_only";
        case V4ChecksumAccept::message_only:
            return "message_only";
    }
    return "unknown";
}

const char* to_string(DecodeError e) {
    switch (e) {
        case DecodeError::wrong_family:
            return "wrong_family";
        case DecodeError::truncated:
            return "truncated";
        case DecodeError::bad_version:
            return "bad_version";
        case DecodeError::bad_type:
            return "bad_type";
        case DecodeError::bad_ttl:
            return "bad_ttl";
        case DecodeError::no_addresses:
            return "no_addresses";
        case DecodeError::address_count_mismatch:
            return "address_count_mismatch";
        case DecodeError::bad_checksum:
            return "bad_checksum";
        case DecodeError::bad_vrid:
            return "bad_vrid";
        case DecodeError::bad_interval:
            return "bad_interval";
    }
    return "unknown";
}

namespace {

size_t addr_len(Family f) {
    return f == Family::v4 ? 4 : (f == Family::v6 ? 16 : 0);
}

// Ones'-complement sum of the message with its checksum field (bytes 6-7) left out, plus the
// pseudo-header when asked. Not folded.
uint32_t sum_without_checksum(std::span<const uint8_t> msg, const IpAddr& src, const IpAddr& dst,
                              ChecksumForm form) {
    uint32_t sum = 0;
    if (form == ChecksumForm::pseudo_header) {
        const auto len = static_cast<uint32_t>(msg.size());
        sum = src.is_v6() ? pseudo_sum_v6(src.bytes.data(), dst.bytes.data(), kIpProto, len)
                          : pseudo_sum_v4(src.bytes.data(), dst.bytes.data(), kIpProto, len);
    }
    if (msg.size() <= 6) return csum_partial(msg.data(), msg.size(), sum);
    // Bytes 0-5 and 8.. are both an even number of bytes from the start, so summing them as
    // two runs gives the same 16-bit words as one run with the field zeroed.
    sum = csum_partial(msg.data(), 6, sum);
    if (msg.size() > 8) sum = csum_partial(msg.data() + 8, msg.size() - 8, sum);
    return sum;
}

DecodeFailure fail(DecodeError e, std::string message) {
    return {e, std::move(message)};
}

std::string hex16(uint16_t v) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string s = "0x0000";
    for (int i = 0; i < 4; ++i) s[static_cast<size_t>(5 - i)] = kDigits[(v >> (4 * i)) & 0xF];
    return s;
}

}  // namespace

uint16_t advert_checksum(std::span<const uint8_t> msg, const IpAddr& source,
                         const IpAddr& destination, ChecksumForm form) {
    return csum_fold(sum_without_checksum(msg, source, destination, form));
}

DecodeResult decode_advert(std::span<const uint8_t> msg, const IpContext& ip,
                           const DecodeOptions& opt) {
    const size_t alen = addr_len(ip.family);
    if (alen == 0 || ip.source.family != ip.family || ip.destination.family != ip.family) {
        return fail(DecodeError::wrong_family,
                    "VRRP advert with inconsistent address families: the IP context must be IPv4 "
                    "or IPv6 with source and destination of that family (a caller bug)");
    }
    // Built only for a refusal: valid adverts arrive every interval and need no strings.
    const auto from = [&ip] { return " from " + ip.source.str(); };
    if (msg.size() < kHeaderLen) {
        return fail(DecodeError::truncated, "VRRP advert" + from() + " has " +
                                                std::to_string(msg.size()) +
                                                " bytes, shorter than the 8-byte header");
    }
    const uint8_t version = msg[0] >> 4;
    const uint8_t type = msg[0] & 0x0F;
    if (version != kVersion) {
        return fail(DecodeError::bad_version,
                    "VRRP advert" + from() + " has version " + std::to_string(version) +
                        ", only version 3 (RFC 5798) is supported: configure the peer for "
                        "version 3 (keepalived: vrrp_version 3)");
    }
    if (type != kTypeAdvertisement) {
        return fail(DecodeError::bad_type, "VRRP packet" + from() + " has type " +
                                               std::to_string(type) +
                                               ", only 1 (ADVERTISEMENT) exists");
    }
    if (opt.require_ttl_255 && ip.ttl != kTtl) {
        return fail(DecodeError::bad_ttl,
                    "VRRP advert" + from() + " arrived with " +
                        (ip.family == Family::v4 ? "TTL " : "hop limit ") + std::to_string(ip.ttl) +
                        ", expected 255: it was routed or sent by a non-conforming peer "
                        "(unicast peers across routers need the TTL check turned off)");
    }
    const uint8_t count = msg[3];
    if (count == 0) {
        return fail(DecodeError::no_addresses,
                    "VRRP advert" + from() +
                        " lists no virtual addresses (Count IPvX Addr 0); "
                        "RFC 5798 requires at least one (keepalived: remove "
                        "no_virtual_ipaddress)");
    }
    const size_t expected = kHeaderLen + size_t{count} * alen;
    if (msg.size() != expected) {
        return fail(DecodeError::address_count_mismatch,
                    "VRRP advert" + from() + " is " + std::to_string(msg.size()) +
                        " bytes but its count of " + std::to_string(count) +
                        (ip.family == Family::v4 ? " IPv4" : " IPv6") + " addresses needs " +
                        std::to_string(expected));
    }
    const uint16_t stored = load_be16(msg.data() + 6);
    // RFC 1071 verification: the sum over everything, the stored checksum included, is all
    // ones. Unlike comparing with a recomputed value, this also takes 0xffff for 0x0000 (the
    // two zeros of ones' complement), which some senders store.
    const auto verifies = [&](ChecksumForm f) {
        return csum_fold(sum_without_checksum(msg, ip.source, ip.destination, f) + stored) == 0;
    };
    ChecksumForm form = ChecksumForm::pseudo_header;
    bool ok = false;
    if (ip.family == Family::v6 || opt.v4_checksum != V4ChecksumAccept::message_only)
        ok = verifies(ChecksumForm::pseudo_header);
    if (!ok && ip.family == Family::v4 && opt.v4_checksum != V4ChecksumAccept::pseudo_header_only) {
        ok = verifies(ChecksumForm::message_only);
        form = ChecksumForm::message_only;
    }
    if (!ok) {
        const uint16_t with_ph =
            advert_checksum(msg, ip.source, ip.destination, ChecksumForm::pseudo_header);
        const uint16_t msg_only =
            advert_checksum(msg, ip.source, ip.destination, ChecksumForm::message_only);
        std::string m = "VRRP advert" + from() + " to " + ip.destination.str() + " has checksum " +
                        hex16(stored) + "; expected " + hex16(with_ph) + " (with pseudo-header)";
        if (ip.family == Family::v4) {
            if (opt.v4_checksum == V4ChecksumAccept::both)
                m += " or " + hex16(msg_only) + " (message only)";
            else if (opt.v4_checksum == V4ChecksumAccept::message_only)
                m = "VRRP advert" + from() + " to " + ip.destination.str() + " has checksum " +
                    hex16(stored) + "; expected " + hex16(msg_only) +
                    " (message only, as configured)";
            else
                m += ", as configured; the peer may sum the message only (RFC 9568, "
                     "keepalived v3_checksum_as_v2): accept both forms";
        }
        return fail(DecodeError::bad_checksum, std::move(m));
    }
    if (msg[1] == 0) {
        return fail(DecodeError::bad_vrid,
                    "VRRP advert" + from() + " has Virtual Rtr ID 0; valid IDs are 1..255");
    }
    const uint16_t interval = load_be16(msg.data() + 4) & 0x0FFF;
    if (interval == 0) {
        return fail(
            DecodeError::bad_interval,
            "VRRP advert" + from() + " has Max Adver Int 0; valid intervals are 1..4095 cs");
    }
    Advert a;
    a.vrid = msg[1];
    a.priority = msg[2];
    a.max_advert_int_cs = interval;
    a.checksum_form = form;
    a.addresses.reserve(count);
    for (size_t i = 0; i < count; ++i) {
        const uint8_t* p = msg.data() + kHeaderLen + i * alen;
        a.addresses.push_back(ip.family == Family::v4 ? IpAddr::v4(p) : IpAddr::v6(p));
    }
    return a;
}

std::vector<uint8_t> encode_advert(const Advert& a, const IpAddr& source, const IpAddr& destination,
                                   const EncodeOptions& opt) {
    const size_t alen = addr_len(source.family);
    if (alen == 0 || destination.family != source.family) {
        throw std::invalid_argument("VRRP advert: source " + source.str() + " and destination " +
                                    destination.str() + " must both be IPv4 or both IPv6");
    }
    if (a.vrid == 0) throw std::invalid_argument("VRRP advert: vrid 0 is invalid (1..255)");
    if (a.max_advert_int_cs == 0 || a.max_advert_int_cs > kMaxAdvertIntervalCs) {
        throw std::invalid_argument("VRRP advert: advert interval " +
                                    std::to_string(a.max_advert_int_cs) +
                                    " cs is outside 1..4095 cs (10 ms .. 40.95 s)");
    }
    if (a.addresses.empty() || a.addresses.size() > 255) {
        throw std::invalid_argument("VRRP advert: " + std::to_string(a.addresses.size()) +
                                    " virtual addresses; an advert carries 1..255");
    }
    std::vector<uint8_t> out(kHeaderLen + a.addresses.size() * alen);
    out[0] = static_cast<uint8_t>((kVersion << 4) | kTypeAdvertisement);
    out[1] = a.vrid;
    out[2] = a.priority;
    out[3] = static_cast<uint8_t>(a.addresses.size());
    store_be16(out.data() + 4, a.max_advert_int_cs);
    for (size_t i = 0; i < a.addresses.size(); ++i) {
        const IpAddr& v = a.addresses[i];
        if (v.family != source.family) {
            throw std::invalid_argument("VRRP advert: virtual address " + v.str() +
                                        " is not of the family of the source " + source.str() +
                                        " (one VRRP instance per family, RFC 5798 1.2)");
        }
        std::memcpy(out.data() + kHeaderLen + i * alen, v.bytes.data(), alen);
    }
    const ChecksumForm form = source.is_v6() ? ChecksumForm::pseudo_header : opt.v4_checksum;
    store_be16(out.data() + 6, advert_checksum(out, source, destination, form));
    return out;
}

}  // namespace fulcrum::control::vrrp
