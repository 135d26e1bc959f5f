// Named reasons for every packet the dataplane does not forward. Each reason has a
// stable snake_case name used in counters, telemetry and Prometheus labels.
#pragma once

#include <cstdint>
#include <string_view>

namespace fulcrum {

#define FULCRUM_DROP_REASONS(X)                                                            \
    /* parser: layer 2 */                                                                  \
    X(eth_truncated, "frame shorter than an Ethernet header")                              \
    X(frame_too_long, "frame longer than 64 KiB")                                          \
    X(vlan_truncated, "802.1Q tag cut short")                                              \
    X(vlan_too_many, "more than two 802.1Q tags")                                          \
    X(arp_truncated, "ARP packet shorter than its header")                                 \
    /* parser: IPv4 */                                                                     \
    X(ipv4_truncated, "IPv4 header cut short")                                             \
    X(ipv4_bad_version, "IPv4 ethertype with a version other than 4")                      \
    X(ipv4_bad_ihl, "IPv4 header length below 20 bytes")                                   \
    X(ipv4_bad_length, "IPv4 total length inconsistent with header or frame")              \
    X(ipv4_bad_checksum, "IPv4 header checksum wrong")                                     \
    X(ipv4_bad_fragment, "IPv4 fragment offset overflows the datagram")                    \
    X(ipv4_bad_options, "IPv4 option with a length below 2 or running past the header")    \
    /* parser: IPv6 */                                                                     \
    X(ipv6_truncated, "IPv6 header cut short")                                             \
    X(ipv6_bad_version, "IPv6 ethertype with a version other than 6")                      \
    X(ipv6_bad_length, "IPv6 payload length larger than the frame or zero (jumbo)")        \
    X(ipv6_ext_truncated, "IPv6 extension header runs past the packet")                    \
    X(ipv6_ext_too_many, "more IPv6 extension headers than the parser follows")            \
    /* parser: layer 4 */                                                                  \
    X(tcp_truncated, "TCP header cut short")                                               \
    X(tcp_bad_offset, "TCP data offset below 5 or past the packet")                        \
    X(udp_truncated, "UDP header cut short")                                               \
    X(udp_bad_length, "UDP length inconsistent with the IP payload")                       \
    X(icmp_truncated, "ICMP header cut short")                                             \
    X(icmp_inner_truncated, "ICMP error quotes too little of the original packet")         \
    X(icmp_inner_bad, "ICMP error quotes a malformed packet")                              \
    /* forwarding */                                                                       \
    X(no_snapshot, "no forwarding snapshot loaded yet")                                    \
    X(no_service, "VIP traffic on a port or protocol with no service")                     \
    X(no_server, "service has no usable server")                                           \
    X(fragment_ambiguous, "fragment for a VIP with several services on its protocol")      \
    X(icmp_unsupported, "ICMP to a VIP that is neither echo nor a known error")            \
    X(icmp_no_flow, "ICMP error quoting a flow of no service")                             \
    X(ttl_exceeded, "VIP traffic with TTL or hop limit 0")                                 \
    /* forwarding: edge filters on VIP traffic (docs/architecture.md, "Edge filtering") */ \
    X(martian_source, "VIP traffic from 0/8, 127/8, 224/3, ::, ::1 or ff00::/8")           \
    X(vip_source, "VIP traffic whose source address is a VIP")                             \
    X(tcp_bad_flags, "TCP flags no stack sends: none, SYN+FIN or SYN+RST")                 \
    X(icmp_bad_mtu, "fragmentation needed / packet too big below 68 / 1280 bytes")         \
    X(l2_broadcast_no_reply,                                                               \
      "echo or too-big reply withheld: frame came as link-layer broadcast or multicast")   \
    X(too_big, "packet too big for the MTU, ICMP reply sent instead")                      \
    X(no_headroom, "buffer has no room to encapsulate")                                    \
    X(multi_segment, "multi-segment buffer not supported")                                 \
    X(inactive, "balancer is standby: VIP traffic not forwarded")                          \
    X(tx_full, "transmit queue full")                                                      \
    X(kernel_full, "exception path to the kernel full")                                    \
    X(no_exception_port, "frame for the kernel, but no exception port is configured")      \
    X(alloc_failed, "no buffer for a reply or fragment")

enum class Drop : uint8_t {
    none = 0,
#define FULCRUM_X(name, text) name,
    FULCRUM_DROP_REASONS(FULCRUM_X)
#undef FULCRUM_X
        count_
};

inline constexpr unsigned kDropReasons = static_cast<unsigned>(Drop::count_);

std::string_view drop_name(Drop d);
std::string_view drop_description(Drop d);

}  // namespace fulcrum
