// Packet rewrites: DSR MAC rewrite, IPIP / IPv6-in-IPv6 / GUE encapsulation, ICMP echo
// replies, ICMP fragmentation-needed / packet-too-big replies, and IPv4 fragmentation of an
// encapsulated packet. All work in place on a Frame with headroom, as in a DPDK mbuf.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

#include "fulcrum/parse.hpp"
#include "fulcrum/snapshot_abi.h"

namespace fulcrum {

// A frame inside a larger buffer: `headroom` free bytes before `data`, `tailroom` after.
struct Frame {
    uint8_t* data = nullptr;
    uint32_t len = 0;
    uint32_t headroom = 0;
    uint32_t tailroom = 0;
    // Set by the port adapter when the NIC verified the IPv4 header checksum as good: the
    // parser then skips its own check. Left false, the checksum is verified in software.
    bool ipv4_csum_good = false;

    std::span<const uint8_t> bytes() const { return {data, len}; }
    bool prepend(uint32_t n) {
        if (n > headroom) return false;
        data -= n;
        len += n;
        headroom -= n;
        return true;
    }
    void trim(uint32_t new_len) {
        if (new_len < len) {
            tailroom += len - new_len;
            len = new_len;
        }
    }
};

inline void set_macs(uint8_t* frame, const uint8_t* dst, const uint8_t* src) {
    std::memcpy(frame, dst, 6);
    std::memcpy(frame + 6, src, 6);
}
inline void swap_macs(uint8_t* frame) {
    uint8_t tmp[6];
    std::memcpy(tmp, frame, 6);
    std::memcpy(frame, frame + 6, 6);
    std::memcpy(frame + 6, tmp, 6);
}

// Encapsulation parameters, taken from the snapshot header and the port.
struct EncapParams {
    uint8_t src4[4] = {};
    uint8_t src4_len = 0;
    uint8_t src6[16] = {};
    uint8_t src6_len = 0;
    uint16_t gue_port = 6080;
    uint8_t ttl = 64;
    uint16_t mtu = 0;  // largest IP packet (outer headers included) to send; 0 = the port's

    static EncapParams from(const fl_snap_header& h);
};

// Bytes an encapsulation adds in front of the inner IP packet.
inline uint32_t encap_overhead(uint8_t forwarding, bool v6) {
    const uint32_t ip = v6 ? 40 : 20;
    return forwarding == FL_FWD_IPIP ? ip : forwarding == FL_FWD_GUE ? ip + 8 : 0;
}

// The outer source address for a flow: the configured prefix with host bits from the hash,
// so servers' RSS spreads encapsulated flows over their queues.
void encap_source_v4(const EncapParams& e, uint64_t hash, uint8_t out[4]);
void encap_source_v6(const EncapParams& e, uint64_t hash, uint8_t out[16]);

// Removes Ethernet padding after the IP packet.
inline void trim_to_ip(Frame& f, const Parsed& p) { f.trim(p.l3_end()); }

// Encapsulates the IP packet of `f` (parsed as `p`) for `server` (same family as the
// packet) with `forwarding` FL_FWD_IPIP or FL_FWD_GUE. The L2 header (with any VLAN tags)
// is kept in front; MACs are not touched. Returns false if the frame lacks headroom.
bool encapsulate(Frame& f, const Parsed& p, uint8_t forwarding, const uint8_t* server_addr,
                 const EncapParams& e, uint64_t hash, uint16_t ip_id);

// Turns an ICMP / ICMPv6 echo request into its reply in place (addresses and MACs swapped).
void make_echo_reply(Frame& f, const Parsed& p);

// Replaces `f` with an ICMP fragmentation-needed (IPv4) or packet-too-big (IPv6) message to
// the packet's sender, from the address it was sent to, quoting the packet and advertising
// `mtu`. Returns false if the frame lacks headroom.
bool make_too_big_reply(Frame& f, const Parsed& p, uint32_t mtu);

// Splits the IPv4 packet at `l3_off` of `f` (no IP options, as our outer headers) into
// fragments of at most `mtu` bytes. `f` keeps the first fragment; the rest are written to
// `out[0..]`, whose `data` must point at empty buffers with enough tailroom. Returns the
// number of frames used in `out`, or -1 if they are too few or too small.
int fragment_ipv4(Frame& f, uint32_t l3_off, uint32_t mtu, std::span<Frame> out);

}  // namespace fulcrum
