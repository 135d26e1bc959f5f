// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Fulcrum's XDP front: the program DPDK's net_af_xdp attaches to a kernel uplink
 * (`xdp_prog=.../xdp_front.bpf.o`). It decides per frame, before any skb exists:
 *
 *   Ethernet too short                         -> drop  MALFORMED
 *   not IPv4/IPv6 (after up to two VLAN tags)  -> kernel PASS_NON_IP
 *   IPv4/IPv6 header truncated / inconsistent  -> drop  MALFORMED
 *   destination not a VIP                      -> kernel PASS_NON_VIP (host traffic)
 *   source denied by the ACL (longest prefix)  -> drop  ACL_DENY / ACL_DEFAULT
 *   TCP header truncated                       -> drop  MALFORMED
 *   SYN (no ACK) over its source's rate        -> drop  SYN_RATE
 *   otherwise                                  -> the RX queue's AF_XDP socket (REDIRECT),
 *                                                 or the kernel without one (PASS_NO_SOCKET)
 *
 * Maps and their layouts are the ABI in include/fulcrum_xdp.h. DPDK loads this object with
 * libbpf and attaches its first (and only) program, then puts each queue's socket into
 * xsks_map, so the object holds exactly one program.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "fulcrum_xdp.h"

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define IP_FRAG_OFFSET_MASK 0x1FFF
#define NSEC_PER_SEC 1000000000ULL
/* A contended bucket is retried this often; every failed compare-and-swap means another CPU
 * made progress on the same source, so the bound is only reached under a flood from it. */
#define SYN_CAS_RETRIES 16

struct vlan_tag {
    __be16 tci;
    __be16 proto;
};

/* fl_syn value: a token bucket kept as GCRA ("virtual scheduling") state, one word, so it
 * can be updated with a compare-and-swap from any CPU (LRU hash maps take no bpf_spin_lock).
 * tat is the theoretical arrival time in bpf_ktime_get_ns() nanoseconds: a SYN at `now` is
 * admitted while tat - now <= (burst - 1) * interval, and admitting it adds one interval.
 * That is exactly a bucket of `burst` tokens refilled at `rate` per second. */
struct fl_syn_bucket {
    __u64 tat;
};

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, FL_XDP_MAX_QUEUES);
    __type(key, __u32);
    __type(value, __u32);
} xsks_map SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct fl_front_config);
} fl_cfg SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FL_XDP_MAX_VIPS);
    __type(key, __u32);
    __type(value, __u32);
} fl_vip4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, FL_XDP_MAX_VIPS);
    __type(key, struct fl_in6);
    __type(value, __u32);
} fl_vip6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, FL_XDP_MAX_ACL);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct fl_lpm4);
    __type(value, struct fl_acl_rule);
} fl_acl4 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LPM_TRIE);
    __uint(max_entries, FL_XDP_MAX_ACL);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, struct fl_lpm6);
    __type(value, struct fl_acl_rule);
} fl_acl6 SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, FL_XDP_MAX_SYN_SOURCES);
    __type(key, struct fl_src_key);
    __type(value, struct fl_syn_bucket);
} fl_syn SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, FL_XDP_REASON_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} fl_stats SEC(".maps");

static __always_inline int verdict(enum fl_xdp_reason reason, int action) {
    __u32 key = reason;
    __u64* n = bpf_map_lookup_elem(&fl_stats, &key);
    if (n) *n += 1; /* per-CPU slot: no atomic needed */
    return action;
}

/* ACL verdict for a matched rule (NULL: none matched). Only an explicit allow admits a
 * matched source, so a rule with an unknown action fails closed; an unconfigured default
 * (0) allows, so VIP traffic flows before fulcrumd has written anything. */
static __always_inline int acl_reason(const struct fl_acl_rule* rule,
                                      const struct fl_front_config* cfg) {
    if (rule) return rule->action == FL_ACL_ALLOW ? -1 : FL_XDP_DROP_ACL_DENY;
    if (cfg && cfg->acl_default == FL_ACL_DENY) return FL_XDP_DROP_ACL_DEFAULT;
    return -1;
}

/* Admits (1) or refuses (0) one SYN from `key` under the configured rate. */
static __always_inline int syn_admit(const struct fl_src_key* key,
                                     const struct fl_front_config* cfg) {
    __u64 rate = cfg->syn_rate;
    __u64 burst = cfg->syn_burst ? cfg->syn_burst : 1;
    if (burst > 0xFFFFFFFFULL) burst = 0xFFFFFFFFULL; /* 2^32 SYNs: practically no limit */
    __u64 interval = NSEC_PER_SEC / rate;
    if (interval == 0) return 1; /* more than 1e9 SYNs/s per source: no limit to apply */
    /* < 2^32 * 1e9 < 2^62: no overflow. */
    __u64 tolerance = (burst - 1) * interval;
    __u64 now = bpf_ktime_get_ns();

    struct fl_syn_bucket* b = bpf_map_lookup_elem(&fl_syn, key);
    if (!b) {
        /* A new source starts with a full bucket, this SYN takes one token. */
        struct fl_syn_bucket fresh = {.tat = now + interval};
        if (bpf_map_update_elem(&fl_syn, key, &fresh, BPF_NOEXIST) == 0) return 1;
        /* Another CPU created it first (or the LRU could not make room): use theirs. */
        b = bpf_map_lookup_elem(&fl_syn, key);
        if (!b) return 1; /* evicted again at once: admit rather than guess */
    }
    for (int i = 0; i < SYN_CAS_RETRIES; i++) {
        __u64 tat = b->tat;
        __u64 start = tat > now ? tat : now;
        if (start - now > tolerance) return 0;
        if (__sync_val_compare_and_swap(&b->tat, tat, start + interval) == tat) return 1;
    }
    return 0; /* lost every race against SYNs of the same source: it is flooding */
}

SEC("xdp")
int fl_xdp_front(struct xdp_md* ctx) {
    void* data = (void*)(long)ctx->data;
    void* data_end = (void*)(long)ctx->data_end;
    __u64 frame_len = data_end - data;

    struct ethhdr* eth = data;
    if ((void*)(eth + 1) > data_end) return verdict(FL_XDP_DROP_MALFORMED, XDP_DROP);
    __u16 proto = eth->h_proto;
    void* l3 = eth + 1;

#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_)) break;
        struct vlan_tag* tag = l3;
        if ((void*)(tag + 1) > data_end) return verdict(FL_XDP_DROP_MALFORMED, XDP_DROP);
        proto = tag->proto;
        l3 = tag + 1;
    }

    __u32 zero = 0;
    const struct fl_front_config* cfg = bpf_map_lookup_elem(&fl_cfg, &zero);
    struct fl_src_key src = {};
    int tcp_check = 0; /* the L4 header starts at l4 and the IP packet ends at l3_end */
    void* l4 = l3;
    __u64 l3_end = 0; /* offset from data */
    __u64 l3_off = l3 - data;
    int reason;

    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr* ip = l3;
        if ((void*)(ip + 1) > data_end) return verdict(FL_XDP_DROP_MALFORMED, XDP_DROP);
        if (ip->version != 4 || ip->ihl < 5) return verdict(FL_XDP_DROP_MALFORMED, XDP_DROP);
        __u32 hlen = ip->ihl * 4;
        __u32 tot = bpf_ntohs(ip->tot_len);
        if (l3 + hlen > data_end || tot < hlen || l3_off + tot > frame_len)
            return verdict(FL_XDP_DROP_MALFORMED, XDP_DROP);

        __u32 daddr = ip->daddr;
        if (!bpf_map_lookup_elem(&fl_vip4, &daddr)) return verdict(FL_XDP_PASS_NON_VIP, XDP_PASS);

        struct fl_lpm4 lk = {.prefixlen = 32};
        __builtin_memcpy(lk.addr, &ip->saddr, 4);
        reason = acl_reason(bpf_map_lookup_elem(&fl_acl4, &lk), cfg);
        if (reason >= 0) return verdict(reason, XDP_DROP);

        src.family = 4;
        __builtin_memcpy(src.addr, &ip->saddr, 4);
        /* Non-first fragments carry no TCP header; the first one must carry all of it. */
        tcp_check =
            ip->protocol == IPPROTO_TCP && (bpf_ntohs(ip->frag_off) & IP_FRAG_OFFSET_MASK) == 0;
        l4 = l3 + hlen;
        l3_end = l3_off + tot;
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr* ip6 = l3;
        if ((void*)(ip6 + 1) > data_end) return verdict(FL_XDP_DROP_MALFORMED, XDP_DROP);
        if (ip6->version != 6) return verdict(FL_XDP_DROP_MALFORMED, XDP_DROP);
        __u32 plen = bpf_ntohs(ip6->payload_len);
        if (l3_off + sizeof(*ip6) + plen > frame_len)
            return verdict(FL_XDP_DROP_MALFORMED, XDP_DROP);

        struct fl_in6 dst;
        __builtin_memcpy(dst.addr, &ip6->daddr, 16);
        if (!bpf_map_lookup_elem(&fl_vip6, &dst)) return verdict(FL_XDP_PASS_NON_VIP, XDP_PASS);

        struct fl_lpm6 lk = {.prefixlen = 128};
        __builtin_memcpy(lk.addr, &ip6->saddr, 16);
        reason = acl_reason(bpf_map_lookup_elem(&fl_acl6, &lk), cfg);
        if (reason >= 0) return verdict(reason, XDP_DROP);

        /* SYNs are counted per source prefix (/64 by default): one host owns a whole /64. */
        __u32 keep = cfg && cfg->v6_source_prefix ? cfg->v6_source_prefix : 64;
        if (keep > 128) keep = 128;
        src.family = 6;
#pragma unroll
        for (int i = 0; i < 16; i++) {
            __u32 bits = keep > (__u32)i * 8 ? keep - (__u32)i * 8 : 0;
            __u8 mask = bits >= 8 ? 0xFF : (__u8)(0xFF00 >> bits);
            src.addr[i] = lk.addr[i] & mask;
        }
        /* Only a TCP header right after the fixed header is checked; behind extension
         * headers the dataplane parses (and refuses) what it finds. */
        tcp_check = ip6->nexthdr == IPPROTO_TCP;
        l4 = ip6 + 1;
        l3_end = l3_off + sizeof(*ip6) + plen;
    } else {
        return verdict(FL_XDP_PASS_NON_IP, XDP_PASS);
    }

    if (tcp_check) {
        struct tcphdr* tcp = l4;
        __u64 l4_off = l4 - data;
        if ((void*)(tcp + 1) > data_end || l4_off + sizeof(*tcp) > l3_end)
            return verdict(FL_XDP_DROP_MALFORMED, XDP_DROP);
        if (tcp->doff < 5 || l4_off + tcp->doff * 4 > l3_end)
            return verdict(FL_XDP_DROP_MALFORMED, XDP_DROP);
        if (tcp->syn && !tcp->ack && cfg && cfg->syn_rate && !syn_admit(&src, cfg))
            return verdict(FL_XDP_DROP_SYN_RATE, XDP_DROP);
    }

    int action = bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
    if (action == XDP_REDIRECT) return verdict(FL_XDP_REDIRECT, XDP_REDIRECT);
    return verdict(FL_XDP_PASS_NO_SOCKET, action);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
