// SPDX-License-Identifier: Apache-2.0
/*
 * Server-side decapsulation of what Fulcrum's dataplane sends to servers of `ipip` and `gue`
 * services (ABI and packet formats: include/fulcrum_decap.h). Kernels without the ipip,
 * ip6_tunnel and fou modules cannot receive those packets; this program strips the outer
 * headers on the server's interface so the kernel sees the client's packet to the VIP.
 *
 * Two entry points share one parser: fl_decap_xdp (XDP) and fl_decap_tc (tc ingress,
 * direct action). Only tunnel packets to one of the server's own addresses are touched;
 * everything else passes unchanged.
 */
/* The kernel's types first: libbpf's helper declarations use them. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "fulcrum_decap.h"

/* The uapi header of the build machine may predate these (Linux 6.3); the running kernel
 * needs them only when the inner family differs from the outer one. */
#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FL_DECAP_MAX_ADDRS);
    __type(key, __u32);
    __type(value, __u32);
} fl_dc_addr4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FL_DECAP_MAX_ADDRS);
    __type(key, struct fl_dc_in6);
    __type(value, __u32);
} fl_dc_addr6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FL_DECAP_MAX_PORTS);
    __type(key, __u16);
    __type(value, __u32);
} fl_dc_ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, FL_DECAP_REASON_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} fl_dc_stats SEC(".maps");

#define ETH_HLEN_ 14
#define VLAN_HLEN_ 4
#define IPV4_HLEN 20
#define IPV6_HLEN 40
#define UDP_HLEN 8
#define IPPROTO_IPIP_ 4
#define IPPROTO_IPV6_ 41
#define IPPROTO_UDP_ 17
#define IPV6_MAX_EXT 4 /* extension headers walked before giving up (then: not a tunnel) */
/* Bytes tc makes linear before parsing: L2 with two tags, IPv6 with extension headers as far
 * as they are walked for the common cases, UDP, and the inner IPv6 header. */
#define TC_PULL 256

/* The parser's verdict. */
enum verdict { V_PASS, V_DROP, V_DECAP };

struct plan {
    __u32 reason;      /* enum fl_decap_reason to count */
    __u32 l2_len;      /* Ethernet header with in-band VLAN tags: 14, 18 or 22 */
    __u32 outer_len;   /* bytes to remove after the L2 header: outer IP (+ UDP) */
    __u32 packet_len;  /* L2 + outer IP total length: anything after it is padding */
    __u16 inner_proto; /* ethertype of the inner packet, network order */
    __u16 outer_proto; /* ethertype of the outer packet, network order */
    __u32 frame_len;   /* the whole frame; in tc more than the linear part data_end bounds */
};

static __always_inline void count(__u32 reason) {
    __u64* c = bpf_map_lookup_elem(&fl_dc_stats, &reason);
    if (c) *c += 1;
}

static __always_inline __u16 load_be16(const __u8* p) {
    return (__u16)((p[0] << 8) | p[1]);
}

static __always_inline int is_gue_port(const __u8* udp) {
    __u16 port;
    __builtin_memcpy(&port, udp + 2, 2); /* network order, as the map's keys */
    return bpf_map_lookup_elem(&fl_dc_ports, &port) != 0;
}

/* Checks the inner packet at `p` (the `len` bytes up to the outer packet's end) against the
 * family `version` the outer headers announce; 0 if it is a whole, consistent IP header. */
static __always_inline int inner_ok(const __u8* p, const void* data_end, __u32 len, __u32 version) {
    if (version == 4) {
        if (len < IPV4_HLEN || (const void*)(p + IPV4_HLEN) > data_end) return -1;
        if ((p[0] >> 4) != 4 || (p[0] & 0x0F) < 5) return -1;
        const __u32 tot = load_be16(p + 2);
        return tot == len && tot >= (__u32)(p[0] & 0x0F) * 4 ? 0 : -1;
    }
    if (len < IPV6_HLEN || (const void*)(p + IPV6_HLEN) > data_end) return -1;
    if ((p[0] >> 4) != 6) return -1;
    return IPV6_HLEN + (__u32)load_be16(p + 4) == len ? 0 : -1;
}

static __always_inline enum verdict drop(struct plan* pl, __u32 reason) {
    pl->reason = reason;
    return V_DROP;
}

static __always_inline enum verdict pass(struct plan* pl, __u32 reason) {
    pl->reason = reason;
    return V_PASS;
}

/* The common tail of both families once the outer headers are known to be a tunnel packet to
 * one of our addresses without fragments or options: `inner` is the first byte after the
 * outer IP (and UDP) header, `inner_len` the bytes from there to the outer packet's end. */
static __always_inline enum verdict finish(struct plan* pl, const __u8* inner, const void* data_end,
                                           __u32 inner_len, __u32 version, int gue,
                                           __u32 ok_reason) {
    if (gue) {
        if ((const void*)(inner + 1) > data_end || inner_len < 1)
            return drop(pl, FL_DECAP_DROP_MALFORMED);
        /* Variant 1 starts with the IP version nibble (binary 0100 or 0110); 00 is variant 0
         * with a GUE header (control messages included), which the balancer never sends. */
        const __u8 top = inner[0] >> 6;
        if (top == 0) return drop(pl, FL_DECAP_DROP_GUE_VARIANT);
        version = inner[0] >> 4;
        if (version != 4 && version != 6) return drop(pl, FL_DECAP_DROP_MALFORMED);
    }
    if (inner_ok(inner, data_end, inner_len, version)) return drop(pl, FL_DECAP_DROP_MALFORMED);
    pl->inner_proto = version == 4 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
    pl->reason = ok_reason;
    return V_DECAP;
}

static __always_inline enum verdict parse_v4(struct plan* pl, const __u8* ip,
                                             const void* data_end) {
    if ((const void*)(ip + IPV4_HLEN) > data_end) return drop(pl, FL_DECAP_DROP_MALFORMED);
    const __u32 ihl = (__u32)(ip[0] & 0x0F) * 4;
    const __u32 tot = load_be16(ip + 2);
    if ((ip[0] >> 4) != 4 || ihl < IPV4_HLEN || tot < ihl || pl->l2_len + tot > pl->frame_len)
        return drop(pl, FL_DECAP_DROP_MALFORMED);
    const __u16 frag = load_be16(ip + 6);
    const int fragment = (frag & 0x3FFF) != 0; /* MF or an offset */
    const __u8 proto = ip[9];
    int gue = 0;
    if (proto == IPPROTO_UDP_) {
        if (frag & 0x1FFF) return pass(pl, FL_DECAP_PASS_NOT_TUNNEL); /* no UDP header here */
        const __u8* udp = ip + ihl;
        if ((const void*)(udp + UDP_HLEN) > data_end || tot < ihl + UDP_HLEN)
            return drop(pl, FL_DECAP_DROP_MALFORMED);
        if (!is_gue_port(udp)) return pass(pl, FL_DECAP_PASS_NOT_TUNNEL);
        gue = 1;
    } else if (proto != IPPROTO_IPIP_ && proto != IPPROTO_IPV6_) {
        return pass(pl, FL_DECAP_PASS_NOT_TUNNEL);
    }
    __u32 daddr;
    __builtin_memcpy(&daddr, ip + 16, 4);
    if (!bpf_map_lookup_elem(&fl_dc_addr4, &daddr)) return pass(pl, FL_DECAP_PASS_NOT_LOCAL);
    if (fragment) return drop(pl, FL_DECAP_DROP_FRAGMENT);
    if (ihl != IPV4_HLEN) return drop(pl, FL_DECAP_DROP_OPTIONS);
    pl->outer_proto = bpf_htons(ETH_P_IP);
    pl->packet_len = pl->l2_len + tot;
    if (gue) {
        const __u8* udp = ip + IPV4_HLEN;
        if ((const void*)(udp + UDP_HLEN) > data_end) return drop(pl, FL_DECAP_DROP_MALFORMED);
        if (load_be16(udp + 4) != tot - IPV4_HLEN) return drop(pl, FL_DECAP_DROP_MALFORMED);
        pl->outer_len = IPV4_HLEN + UDP_HLEN;
        return finish(pl, udp + UDP_HLEN, data_end, tot - IPV4_HLEN - UDP_HLEN, 0, 1,
                      FL_DECAP_GUE4);
    }
    pl->outer_len = IPV4_HLEN;
    return finish(pl, ip + IPV4_HLEN, data_end, tot - IPV4_HLEN, proto == IPPROTO_IPIP_ ? 4 : 6, 0,
                  FL_DECAP_IPIP4);
}

static __always_inline enum verdict parse_v6(struct plan* pl, const __u8* ip,
                                             const void* data_end) {
    if ((const void*)(ip + IPV6_HLEN) > data_end) return drop(pl, FL_DECAP_DROP_MALFORMED);
    const __u32 tot = IPV6_HLEN + (__u32)load_be16(ip + 4);
    if ((ip[0] >> 4) != 6 || pl->l2_len + tot > pl->frame_len)
        return drop(pl, FL_DECAP_DROP_MALFORMED);
    /* Walk the extension headers only to learn whether a tunnel protocol follows: a tunnel
     * packet with any of them is dropped, everything else passes. */
    __u8 nh = ip[6];
    const __u8* p = ip + IPV6_HLEN;
    int ext = 0, fragment = 0;
#pragma unroll
    for (int i = 0; i < IPV6_MAX_EXT; i++) {
        if (nh == 0 || nh == 43 || nh == 60) { /* hop-by-hop, routing, destination options */
            if ((const void*)(p + 8) > data_end) return drop(pl, FL_DECAP_DROP_MALFORMED);
            nh = p[0];
            p += ((__u32)p[1] + 1) * 8;
            ext = 1;
        } else if (nh == 44) { /* fragment */
            if ((const void*)(p + 8) > data_end) return drop(pl, FL_DECAP_DROP_MALFORMED);
            if (load_be16(p + 2) & 0xFFF8)
                return pass(pl, FL_DECAP_PASS_NOT_TUNNEL); /* not first */
            nh = p[0];
            p += 8;
            ext = 1;
            fragment = 1;
        } else {
            break;
        }
    }
    if (nh == 0 || nh == 43 || nh == 60 || nh == 44)
        return pass(pl, FL_DECAP_PASS_NOT_TUNNEL); /* too deep */
    int gue = 0;
    if (nh == IPPROTO_UDP_) {
        if ((const void*)(p + UDP_HLEN) > data_end) return drop(pl, FL_DECAP_DROP_MALFORMED);
        if (!is_gue_port(p)) return pass(pl, FL_DECAP_PASS_NOT_TUNNEL);
        gue = 1;
    } else if (nh != IPPROTO_IPV6_ && nh != IPPROTO_IPIP_) {
        return pass(pl, FL_DECAP_PASS_NOT_TUNNEL);
    }
    struct fl_dc_in6 daddr;
    __builtin_memcpy(&daddr, ip + 24, 16);
    if (!bpf_map_lookup_elem(&fl_dc_addr6, &daddr)) return pass(pl, FL_DECAP_PASS_NOT_LOCAL);
    if (fragment) return drop(pl, FL_DECAP_DROP_FRAGMENT);
    if (ext) return drop(pl, FL_DECAP_DROP_OPTIONS);
    pl->outer_proto = bpf_htons(ETH_P_IPV6);
    pl->packet_len = pl->l2_len + tot;
    if (gue) {
        const __u8* udp = ip + IPV6_HLEN;
        if ((const void*)(udp + UDP_HLEN) > data_end) return drop(pl, FL_DECAP_DROP_MALFORMED);
        if (tot < IPV6_HLEN + UDP_HLEN || load_be16(udp + 4) != tot - IPV6_HLEN)
            return drop(pl, FL_DECAP_DROP_MALFORMED);
        pl->outer_len = IPV6_HLEN + UDP_HLEN;
        return finish(pl, udp + UDP_HLEN, data_end, tot - IPV6_HLEN - UDP_HLEN, 0, 1,
                      FL_DECAP_GUE6);
    }
    pl->outer_len = IPV6_HLEN;
    return finish(pl, ip + IPV6_HLEN, data_end, tot - IPV6_HLEN, nh == IPPROTO_IPIP_ ? 4 : 6, 0,
                  FL_DECAP_IPIP6);
}

/* `data`..`data_end` holds at least the headers (tc pulls them into the linear part first);
 * `frame_len` is the whole frame's length, which lengths in the headers are checked against. */
static __always_inline enum verdict classify(struct plan* pl, const __u8* data,
                                             const void* data_end, __u32 frame_len) {
    __builtin_memset(pl, 0, sizeof *pl);
    pl->frame_len = frame_len;
    if ((const void*)(data + ETH_HLEN_) > data_end) return drop(pl, FL_DECAP_DROP_MALFORMED);
    __u16 type = load_be16(data + 12);
    __u32 l2 = ETH_HLEN_;
    /* Up to two in-band VLAN tags (802.1Q / 802.1ad), as the dataplane keeps them. */
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (type != ETH_P_8021Q && type != ETH_P_8021AD) break;
        if ((const void*)(data + l2 + VLAN_HLEN_) > data_end)
            return drop(pl, FL_DECAP_DROP_MALFORMED);
        type = load_be16(data + l2 + 2);
        l2 += VLAN_HLEN_;
    }
    pl->l2_len = l2;
    if (type == ETH_P_IP) return parse_v4(pl, data + l2, data_end);
    if (type == ETH_P_IPV6) return parse_v6(pl, data + l2, data_end);
    return pass(pl, FL_DECAP_PASS_NOT_TUNNEL);
}

/* Moves the L2 header (l2 bytes: 14, 18 or 22) forward by `by` bytes and sets its ethertype
 * to `proto`. Through a stack copy: the two ranges overlap when `by` < l2. */
static __always_inline int move_l2(__u8* data, const void* data_end, __u32 l2, __u32 by,
                                   __u16 proto) {
    __u8 hdr[ETH_HLEN_ + 2 * VLAN_HLEN_];
    if (by > 64 || (const void*)(data + by + ETH_HLEN_ + 2 * VLAN_HLEN_) > data_end ||
        (const void*)(data + ETH_HLEN_ + 2 * VLAN_HLEN_) > data_end)
        return -1;
    __builtin_memcpy(hdr, data, sizeof hdr);
    __u8* dst = data + by;
    if (l2 == ETH_HLEN_) {
        __builtin_memcpy(dst, hdr, ETH_HLEN_);
        __builtin_memcpy(dst + ETH_HLEN_ - 2, &proto, 2);
    } else if (l2 == ETH_HLEN_ + VLAN_HLEN_) {
        __builtin_memcpy(dst, hdr, ETH_HLEN_ + VLAN_HLEN_);
        __builtin_memcpy(dst + ETH_HLEN_ + VLAN_HLEN_ - 2, &proto, 2);
    } else {
        __builtin_memcpy(dst, hdr, ETH_HLEN_ + 2 * VLAN_HLEN_);
        __builtin_memcpy(dst + ETH_HLEN_ + 2 * VLAN_HLEN_ - 2, &proto, 2);
    }
    return 0;
}

SEC("xdp")
int fl_decap_xdp(struct xdp_md* ctx) {
    struct plan pl;
    const enum verdict v =
        classify(&pl, (const __u8*)(long)ctx->data, (const void*)(long)ctx->data_end,
                 (__u32)(ctx->data_end - ctx->data));
    if (v != V_DECAP) {
        count(pl.reason);
        return v == V_DROP ? XDP_DROP : XDP_PASS;
    }
    /* Ethernet padding after the outer packet would follow the inner one: cut it first. */
    const long excess = (long)(ctx->data_end - ctx->data) - (long)pl.packet_len;
    if (excess > 0 && bpf_xdp_adjust_tail(ctx, (int)-excess)) {
        count(FL_DECAP_DROP_ADJUST);
        return XDP_DROP;
    }
    __u8* data = (__u8*)(long)ctx->data;
    const void* data_end = (const void*)(long)ctx->data_end;
    if (move_l2(data, data_end, pl.l2_len, pl.outer_len, pl.inner_proto) ||
        bpf_xdp_adjust_head(ctx, (int)pl.outer_len)) {
        count(FL_DECAP_DROP_ADJUST);
        return XDP_DROP;
    }
    count(pl.reason);
    return XDP_PASS;
}

SEC("tc")
int fl_decap_tc(struct __sk_buff* skb) {
    struct plan pl;
    /* Direct access reaches only the skb's linear part, which may end right after the
     * Ethernet header (frames from a packet socket or a GRO'd skb): pull the headers in. If
     * that fails the parser sees a short frame and counts it as malformed. */
    const __u32 want = skb->len < TC_PULL ? skb->len : TC_PULL;
    if ((long)skb->data_end - (long)skb->data < (long)want) bpf_skb_pull_data(skb, want);
    const enum verdict v =
        classify(&pl, (const __u8*)(long)skb->data, (const void*)(long)skb->data_end, skb->len);
    if (v != V_DECAP) {
        count(pl.reason);
        return v == V_DROP ? TC_ACT_SHOT : TC_ACT_OK;
    }
    /* The kernel takes the first VLAN tag out of the frame before tc ingress; a second one
     * stays in-band, and bpf_skb_adjust_room cannot remove headers behind it. */
    if (pl.l2_len != ETH_HLEN_) {
        count(FL_DECAP_PASS_VLAN);
        return TC_ACT_OK;
    }
    if (skb->len > pl.packet_len && bpf_skb_change_tail(skb, pl.packet_len, 0)) {
        count(FL_DECAP_DROP_ADJUST);
        return TC_ACT_SHOT;
    }
    /* The inner MSS is what the outer packet carried per segment: keep gso_size. */
    __u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
    if (pl.inner_proto != pl.outer_proto)
        flags |= pl.inner_proto == bpf_htons(ETH_P_IP) ? BPF_F_ADJ_ROOM_DECAP_L3_IPV4
                                                       : BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
    if (bpf_skb_adjust_room(skb, -(__s32)pl.outer_len, BPF_ADJ_ROOM_MAC, flags)) {
        count(FL_DECAP_DROP_ADJUST);
        return TC_ACT_SHOT;
    }
    if (pl.inner_proto != pl.outer_proto &&
        bpf_skb_store_bytes(skb, ETH_HLEN_ - 2, &pl.inner_proto, 2, 0)) {
        count(FL_DECAP_DROP_ADJUST);
        return TC_ACT_SHOT;
    }
    count(pl.reason);
    return TC_ACT_OK;
}
