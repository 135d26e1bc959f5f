// VRRP version 3 advertisements (RFC 5798 section 5, RFC 9568): encoding and validating
// decoding over byte spans, for IPv4 and IPv6. No sockets here: the caller receives the IP
// packet, strips the IP header and passes the VRRP message with the IP-level facts it needs
// (addresses, TTL / hop limit). This file needs only the core library, so the fuzz build,
// which has no control plane, compiles it as well.
//
// Wire format (8 bytes, then Count IPvX Addr addresses of 4 or 16 bytes):
//   byte 0     version (high 4 bits, = 3) | type (low 4 bits, 1 = ADVERTISEMENT)
//   byte 1     Virtual Rtr ID (1..255)
//   byte 2     Priority (0 = master resigns, 1..254, 255 = address owner)
//   byte 3     Count IPvX Addr (at least 1)
//   bytes 4-5  4 reserved bits (sent as 0, ignored on receipt) | Max Adver Int (12 bits,
//              centiseconds)
//   bytes 6-7  Checksum
//
// Checksum. RFC 5798 5.2.8 sums the message plus an RFC 2460 pseudo-header (source,
// destination, upper-layer length, next header 112) for both families. For IPv4 that reading
// is disputed: Cisco and Juniper leave the pseudo-header out, and RFC 9568 (which obsoletes
// RFC 5798) now says the IPv4 checksum covers the VRRP message only. keepalived includes the
// pseudo-header by default and leaves it out with `v3_checksum_as_v2`, and with that option
// set it stops rejecting IPv4 adverts for their checksum at all. Hence, for IPv4, encode either
// form on request and accept either on receipt (or only one, by policy). IPv6 always uses the
// pseudo-header. Not accepted: keepalived <= 1.3.6 in unicast mode summed the multicast group
// 224.0.0.18 as the pseudo-header destination; such adverts fail as bad_checksum.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "fulcrum/addr.hpp"

namespace fulcrum::control::vrrp {

inline constexpr uint8_t kIpProto = 112;  // IPv4 protocol / IPv6 next header
inline constexpr uint8_t kVersion = 3;
inline constexpr uint8_t kTypeAdvertisement = 1;
inline constexpr uint8_t kTtl = 255;  // sent and required on receipt (RFC 5798 5.1.1.3)
inline constexpr size_t kHeaderLen = 8;
inline constexpr uint16_t kMaxAdvertIntervalCs = 4095;  // 12 bits
inline constexpr uint8_t kPriorityOwner = 255;
inline constexpr uint8_t kPriorityResign = 0;

// Which bytes the checksum covers.
enum class ChecksumForm : uint8_t {
    pseudo_header,  // RFC 5798: message + pseudo-header (keepalived's default, Wireshark)
    message_only,   // RFC 9568 for IPv4 (Cisco, Juniper, keepalived v3_checksum_as_v2)
};
const char* to_string(ChecksumForm f);

// IPv4 checksum forms accepted on receipt. IPv6 always requires the pseudo-header.
enum class V4ChecksumAccept : uint8_t { both, pseudo_header_only, message_only };
const char* to_string(V4ChecksumAccept a);

struct Advert {
    uint8_t vrid = 0;
    uint8_t priority = 0;
    uint16_t max_advert_int_cs = 0;  // centiseconds, 1..4095
    std::vector<IpAddr> addresses;   // all of the IP header's family
    // Set by decode_advert: the form the received checksum matched.
    ChecksumForm checksum_form = ChecksumForm::pseudo_header;

    friend bool operator==(const Advert&, const Advert&) = default;
};

// The IP-level facts of a received advert. The addresses must be of `family`.
struct IpContext {
    Family family = Family::none;
    IpAddr source;
    IpAddr destination;
    uint8_t ttl = 0;  // IPv4 TTL or IPv6 hop limit
};

struct DecodeOptions {
    V4ChecksumAccept v4_checksum = V4ChecksumAccept::both;
    // RFC 5798 7.1 requires TTL / hop limit 255, which proves the sender is on the link.
    // keepalived skips the check for unicast peers, which may be routed, and (2.2.7, seen on
    // the wire) sends its unicast IPv6 adverts with hop limit 64: turn it off for unicast.
    bool require_ttl_255 = true;
};

// Every reason a received advert is refused, in the order they are checked.
enum class DecodeError : uint8_t {
    wrong_family,            // family not IPv4/IPv6, or an address of another family
    truncated,               // shorter than the 8-byte header
    bad_version,             // not version 3 (version 2 is RFC 3768, not supported)
    bad_type,                // not 1 (ADVERTISEMENT)
    bad_ttl,                 // TTL / hop limit not 255
    no_addresses,            // Count IPvX Addr is 0 (RFC 5798 5.2.5: at least 1)
    address_count_mismatch,  // length != 8 + count * address size
    bad_checksum,
    bad_vrid,      // 0
    bad_interval,  // Max Adver Int 0 (would make every timer fire at once)
};
inline constexpr size_t kDecodeErrorCount = 10;
const char* to_string(DecodeError e);  // snake_case name, for counters and logs

struct DecodeFailure {
    DecodeError error;
    std::string message;  // what was wrong, with the values seen and what to check
};

using DecodeResult = std::variant<Advert, DecodeFailure>;

// Validates and decodes one VRRP message (the IP payload: exactly the message, no Ethernet
// padding). Never reads outside `msg`, never throws.
DecodeResult decode_advert(std::span<const uint8_t> msg, const IpContext& ip,
                           const DecodeOptions& opt = {});

struct EncodeOptions {
    ChecksumForm v4_checksum = ChecksumForm::pseudo_header;  // ignored for IPv6
};

// The VRRP message of an advert sent from `source` to `destination` (for the checksum; both
// of one family, which the addresses share). The reserved bits are 0; `checksum_form` of the
// advert is ignored (opt decides). Throws std::invalid_argument naming the bad field if vrid is
// 0, the interval is outside 1..4095, there are no addresses or more than 255, or the families
// disagree.
std::vector<uint8_t> encode_advert(const Advert& a, const IpAddr& source, const IpAddr& destination,
                                   const EncodeOptions& opt = {});

// The checksum of `msg` (its checksum field counted as zero) in the given form, for the IP
// addresses given: the value to store big-endian at bytes 6-7. Computes what is asked for any
// family, although message_only is a valid form for IPv4 only.
uint16_t advert_checksum(std::span<const uint8_t> msg, const IpAddr& source,
                         const IpAddr& destination, ChecksumForm form);

}  // namespace fulcrum::control::vrrp
