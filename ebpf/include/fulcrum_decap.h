/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The C ABI between Fulcrum's server-side decapsulation program (ebpf/decap.bpf.c) and its
 * loader (fulcrum-decap, ebpf/tools/), which fills the maps and reads the counters.
 *
 * A server behind an `ipip` or `gue` service receives what the balancer's dataplane emits
 * (dataplane/core/src/rewrite.cpp, encapsulate()):
 *   IPIP     IPv4 | IPv4 header (protocol 4, no options) | inner IPv4 packet
 *   IP6IP6   IPv6 | IPv6 header (next header 41, no extension headers) | inner IPv6 packet
 *   GUE      outer IPv4 or IPv6 header, protocol UDP | UDP to the GUE port | inner IP packet
 *            (GUE variant 1, draft-ietf-intarea-gue: no GUE header, the inner IP version
 *            nibble follows the UDP header directly)
 * The dataplane encapsulates in the inner packet's family; the program also accepts the mixed
 * forms (IPv6 in IPv4 = protocol 41, IPv4 in IPv6 = next header 4, and either family in GUE).
 *
 * Plain C with <linux/types.h> only: included by the BPF program and by C++ user space.
 *
 * Maps (names are at most 15 characters; the loader finds the maps of an attached program by
 * name):
 *   fl_dc_addr4  HASH,          key __u32 IPv4 address (network order),  value __u32 (1)
 *   fl_dc_addr6  HASH,          key struct fl_dc_in6 (network order),      value __u32 (1)
 *   fl_dc_ports  HASH,          key __u16 UDP port (network order),        value __u32 (1)
 *   fl_dc_stats  PERCPU_ARRAY,  key __u32 enum fl_decap_reason,            value __u64 packets
 * Only packets whose outer destination is in fl_dc_addr4/fl_dc_addr6 are decapsulated; UDP is
 * GUE only to a port in fl_dc_ports. Empty maps decapsulate nothing.
 */
#ifndef FULCRUM_DECAP_H
#define FULCRUM_DECAP_H

#include <linux/types.h>

#define FULCRUM_DECAP_ABI_VERSION 1

#define FL_DECAP_MAX_ADDRS 256         /* fl_dc_addr4 and fl_dc_addr6 entries, each */
#define FL_DECAP_MAX_PORTS 16          /* fl_dc_ports entries */
#define FL_DECAP_DEFAULT_GUE_PORT 6080 /* dataplane.encapsulation.gue_port's default */

/* The program names (bpf_prog_info.name), by which the loader recognises its own attachment. */
#define FL_DECAP_PROG_XDP "fl_decap_xdp"
#define FL_DECAP_PROG_TC "fl_decap_tc"

/* What the program did with a frame, and why: one per-CPU packet counter each (fl_dc_stats). */
enum fl_decap_reason {
    FL_DECAP_PASS_NOT_TUNNEL = 0, /* not IP, not a tunnel protocol, UDP not to a GUE port, or a
                                     non-first fragment (its protocol is unknown): untouched */
    FL_DECAP_PASS_NOT_LOCAL,      /* tunnel protocol, outer destination not ours: untouched */
    FL_DECAP_PASS_VLAN,           /* tc only: tunnel packet behind an in-band (stacked) VLAN
                                     tag, which tc cannot strip: untouched */
    FL_DECAP_IPIP4,               /* decapsulated: IPv4 outer, protocol 4 or 41 */
    FL_DECAP_IPIP6,               /* decapsulated: IPv6 outer, next header 41 or 4 */
    FL_DECAP_GUE4,                /* decapsulated: IPv4 outer, UDP to a GUE port */
    FL_DECAP_GUE6,                /* decapsulated: IPv6 outer, UDP to a GUE port */
    FL_DECAP_DROP_FRAGMENT,       /* ours, tunnel protocol, outer fragment (the balancer
                                     never fragments the outer packet) */
    FL_DECAP_DROP_OPTIONS,        /* ours, tunnel protocol, IPv4 options or IPv6 extension
                                     headers (the balancer emits neither) */
    FL_DECAP_DROP_MALFORMED,      /* truncated or inconsistent Ethernet/IP/UDP headers, outer
                                     or inner */
    FL_DECAP_DROP_GUE_VARIANT,    /* GUE variant 0 (a GUE header) or control message: not
                                     what the balancer emits */
    FL_DECAP_DROP_ADJUST,         /* the kernel refused to remove the outer headers */
    FL_DECAP_REASON_COUNT
};

struct fl_dc_in6 {
    __u8 addr[16];
};

#endif /* FULCRUM_DECAP_H */
