#include "fulcrum/addr.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstdio>

namespace fulcrum {

std::optional<IpAddr> IpAddr::parse(std::string_view text) {
    if (text.empty() || text.size() > 45) return std::nullopt;
    char buf[64];
    text.copy(buf, text.size());
    buf[text.size()] = '\0';
    IpAddr a;
    if (text.find(':') == std::string_view::npos) {
        if (inet_pton(AF_INET, buf, a.bytes.data()) != 1) return std::nullopt;
        a.family = Family::v4;
    } else {
        if (inet_pton(AF_INET6, buf, a.bytes.data()) != 1) return std::nullopt;
        a.family = Family::v6;
    }
    return a;
}

std::string IpAddr::str() const {
    char buf[INET6_ADDRSTRLEN] = "";
    if (family == Family::v4)
        inet_ntop(AF_INET, bytes.data(), buf, sizeof buf);
    else if (family == Family::v6)
        inet_ntop(AF_INET6, bytes.data(), buf, sizeof buf);
    else
        return "(none)";
    return buf;
}

std::optional<IpPrefix> IpPrefix::parse(std::string_view text) {
    const auto slash = text.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    auto a = IpAddr::parse(text.substr(0, slash));
    if (!a) return std::nullopt;
    const auto len_text = text.substr(slash + 1);
    unsigned len = 0;
    auto [ptr, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (ec != std::errc{} || ptr != len_text.data() + len_text.size() || len_text.empty())
        return std::nullopt;
    if (len > a->size() * 8) return std::nullopt;
    IpPrefix p{*a, static_cast<uint8_t>(len)};
    // Host bits must be zero.
    for (unsigned bit = len; bit < a->size() * 8; ++bit)
        if (a->bytes[bit / 8] & (0x80 >> (bit % 8))) return std::nullopt;
    return p;
}

bool IpPrefix::contains(const IpAddr& a) const {
    if (a.family != addr.family) return false;
    for (unsigned bit = 0; bit < length; ++bit) {
        const uint8_t m = static_cast<uint8_t>(0x80 >> (bit % 8));
        if ((a.bytes[bit / 8] & m) != (addr.bytes[bit / 8] & m)) return false;
    }
    return true;
}

std::string IpPrefix::str() const { return addr.str() + "/" + std::to_string(length); }

std::optional<MacAddr> MacAddr::parse(std::string_view text) {
    if (text.size() != 17) return std::nullopt;
    MacAddr m;
    for (int i = 0; i < 6; ++i) {
        if (i > 0 && text[static_cast<size_t>(i) * 3 - 1] != ':') return std::nullopt;
        unsigned v = 0;
        const char* b = text.data() + i * 3;
        auto [ptr, ec] = std::from_chars(b, b + 2, v, 16);
        if (ec != std::errc{} || ptr != b + 2) return std::nullopt;
        m.bytes[static_cast<size_t>(i)] = static_cast<uint8_t>(v);
    }
    return m;
}

std::string MacAddr::str() const {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", bytes[0], bytes[1], bytes[2],
                  bytes[3], bytes[4], bytes[5]);
    return buf;
}

}  // namespace fulcrum
