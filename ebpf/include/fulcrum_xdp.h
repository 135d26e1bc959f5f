/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The C ABI between Fulcrum's XDP front program (ebpf/xdp_front.bpf.c) and user space
 * (fulcrumd fills the maps, fulcrumctl and the metrics read the counters).
 *
 * Plain C, no libbpf and no kernel-only types beyond <linux/types.h>: it is included by
 * the BPF program (clang -target bpf) and by C++ in control/. Every struct is fixed-size and
 * padded explicitly; changing a layout or a meaning bumps FULCRUM_XDP_ABI_VERSION, which
 * user space checks against fl_cfg before writing anything.
 *
 * Map names (user space finds the maps of the program attached to the uplink by name; BPF
 * object names are at most 15 characters):
 *   xsks_map  XSKMAP,          key __u32 RX queue index, value AF_XDP socket (DPDK fills it)
 *   fl_cfg    ARRAY[1],        key __u32 0, value struct fl_front_config
 *   fl_vip4   HASH,            key __u32 IPv4 address (network order), value __u32 (1)
 *   fl_vip6   HASH,            key struct fl_in6 (network order),      value __u32 (1)
 *   fl_acl4   LPM_TRIE,        key struct fl_lpm4, value struct fl_acl_rule
 *   fl_acl6   LPM_TRIE,        key struct fl_lpm6, value struct fl_acl_rule
 *   fl_syn    LRU_HASH,        key struct fl_src_key, value private to the program
 *   fl_stats  PERCPU_ARRAY,    key __u32 enum fl_xdp_reason, value __u64 packets
 */
#ifndef FULCRUM_XDP_H
#define FULCRUM_XDP_H

#include <linux/types.h>

#define FULCRUM_XDP_ABI_VERSION 1

#define FL_XDP_MAX_QUEUES 64      /* xsks_map entries */
#define FL_XDP_MAX_VIPS 1024      /* fl_vip4 and fl_vip6 entries, each */
#define FL_XDP_MAX_ACL 16384      /* fl_acl4 and fl_acl6 entries, each */
#define FL_XDP_MAX_SYN_SOURCES 65536 /* fl_syn entries (LRU: the least recent source goes) */

/* What the front does with a frame, and why: one per-CPU packet counter each (fl_stats). */
enum fl_xdp_reason {
    FL_XDP_PASS_NON_IP = 0,    /* not IPv4/IPv6 (ARP, LLDP, ...): to the kernel */
    FL_XDP_PASS_NON_VIP,       /* IP, destination not a VIP: to the kernel */
    FL_XDP_PASS_NO_SOCKET,     /* VIP, but no AF_XDP socket on this queue: to the kernel */
    FL_XDP_REDIRECT,           /* VIP, admitted: to the AF_XDP socket of its RX queue */
    FL_XDP_DROP_ACL_DENY,      /* VIP, source matched a deny rule (longest prefix) */
    FL_XDP_DROP_ACL_DEFAULT,   /* VIP, source matched no rule and the default is deny */
    FL_XDP_DROP_SYN_RATE,      /* VIP, TCP SYN over its source's rate */
    FL_XDP_DROP_MALFORMED,     /* truncated or inconsistent Ethernet/IP/TCP headers */
    FL_XDP_REASON_COUNT
};

enum fl_acl_action {
    FL_ACL_ALLOW = 1,
    FL_ACL_DENY = 2,
};

/* fl_cfg[0]. The program treats a zeroed entry (abi_version 0: nobody configured it) as
 * "allow everything, no SYN limit", so VIP traffic flows before fulcrumd starts. */
struct fl_front_config {
    __u32 abi_version;     /* FULCRUM_XDP_ABI_VERSION when written by user space */
    __u32 acl_default;     /* enum fl_acl_action for sources no rule matches */
    __u64 syn_rate;        /* SYNs per second per source (/32 or /64); 0 = no limit */
    __u64 syn_burst;       /* bucket depth in SYNs (>= 1 when syn_rate > 0) */
    __u32 v6_source_prefix; /* prefix length a SYN source is counted by; 64 */
    __u32 reserved;
};

struct fl_in6 {
    __u8 addr[16];
};

/* LPM trie keys: prefix length in bits, then the address in network order. */
struct fl_lpm4 {
    __u32 prefixlen;
    __u8 addr[4];
};

struct fl_lpm6 {
    __u32 prefixlen;
    __u8 addr[16];
};

struct fl_acl_rule {
    __u32 action;          /* enum fl_acl_action */
    __u32 rule_id;         /* user space's index of the rule (for listing); opaque here */
};

/* fl_syn key: the source an SYN is counted against, IPv4 /32 or IPv6 masked to
 * v6_source_prefix (family 4 or 6; addr holds 4 or 16 bytes, the rest zero). */
struct fl_src_key {
    __u32 family;
    __u8 addr[16];
};

#endif /* FULCRUM_XDP_H */
