// IP and MAC address value types shared by the dataplane and the control plane.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace fulcrum {

// Address family as stored in Fulcrum structures (independent of the OS's AF_* values).
enum class Family : uint8_t { none = 0, v4 = 4, v6 = 6 };

// An IPv4 or IPv6 address. IPv4 occupies the first 4 bytes; the rest are zero, so
// two equal addresses are also byte-wise equal.
struct IpAddr {
    Family family = Family::none;
    std::array<uint8_t, 16> bytes{};

    static IpAddr v4(const uint8_t* p) {
        IpAddr a;
        a.family = Family::v4;
        std::memcpy(a.bytes.data(), p, 4);
        return a;
    }
    static IpAddr v4(uint32_t host_order) {
        IpAddr a;
        a.family = Family::v4;
        a.bytes[0] = static_cast<uint8_t>(host_order >> 24);
        a.bytes[1] = static_cast<uint8_t>(host_order >> 16);
        a.bytes[2] = static_cast<uint8_t>(host_order >> 8);
        a.bytes[3] = static_cast<uint8_t>(host_order);
        return a;
    }
    static IpAddr v6(const uint8_t* p) {
        IpAddr a;
        a.family = Family::v6;
        std::memcpy(a.bytes.data(), p, 16);
        return a;
    }
    // Parses dotted-quad IPv4 or RFC 4291 IPv6 text. No brackets, no zone, no prefix.
    static std::optional<IpAddr> parse(std::string_view text);

    bool is_v4() const { return family == Family::v4; }
    bool is_v6() const { return family == Family::v6; }
    size_t size() const { return family == Family::v4 ? 4 : (family == Family::v6 ? 16 : 0); }
    std::string str() const;

    friend bool operator==(const IpAddr&, const IpAddr&) = default;
    friend auto operator<=>(const IpAddr&, const IpAddr&) = default;
};

// An address prefix such as 198.18.0.0/15 or 2001:db8::/32.
struct IpPrefix {
    IpAddr addr;
    uint8_t length = 0;

    // Accepts "addr/len"; the host bits must be zero.
    static std::optional<IpPrefix> parse(std::string_view text);
    bool contains(const IpAddr& a) const;
    std::string str() const;
    friend bool operator==(const IpPrefix&, const IpPrefix&) = default;
};

struct MacAddr {
    std::array<uint8_t, 6> bytes{};

    static std::optional<MacAddr> parse(std::string_view text);  // aa:bb:cc:dd:ee:ff
    bool is_zero() const {
        for (auto b : bytes)
            if (b) return false;
        return true;
    }
    std::string str() const;
    friend bool operator==(const MacAddr&, const MacAddr&) = default;
};

}  // namespace fulcrum
