/*
 * Fulcrum forwarding snapshot: the binary format the control plane writes and the
 * dataplane reads in place. Plain C so C++, the DPDK dataplane and eBPF programs share one
 * definition. All integers are little-endian; sections start at 64-byte aligned offsets.
 *
 *   [fl_snap_header][services: fl_snap_service x n][servers: fl_snap_server x n]
 *   [members: fl_snap_member x n][table entries: uint32_t x n]
 *
 * Servers are indexed by a stable slot number that the control plane keeps for a server
 * across snapshots; connection entries remember the slot and the server's tag. A slot with
 * FL_SERVER_PRESENT clear is unused. A service's members are the servers in rotation for new
 * connections (the usable primaries, or the usable backups when no primary is usable) with
 * their weights; its table is its Maglev lookup table of server slots.
 */
#ifndef FULCRUM_SNAPSHOT_ABI_H
#define FULCRUM_SNAPSHOT_ABI_H

#if defined(__bpf__)
#include <linux/types.h>
typedef __u8 fl_u8;
typedef __u16 fl_u16;
typedef __u32 fl_u32;
typedef __u64 fl_u64;
#else
#include <stdint.h>
typedef uint8_t fl_u8;
typedef uint16_t fl_u16;
typedef uint32_t fl_u32;
typedef uint64_t fl_u64;
#endif

#ifdef __cplusplus
#define FL_STATIC_ASSERT(c, m) static_assert(c, m)
extern "C" {
#else
#define FL_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

#define FL_SNAP_MAGIC 0x50414e53434c5546ULL /* "FULCSNAP" read as little-endian bytes */
#define FL_SNAP_VERSION 1u
#define FL_SNAP_ALIGN 64u

#define FL_MAX_SERVICES 4096u
#define FL_MAX_SERVERS 65536u
#define FL_MAX_TABLE_ENTRIES (64u << 20) /* sum of all Maglev table sizes */
#define FL_NAME_LEN 48u
#define FL_NO_SERVER 0xFFFFFFFFu

enum fl_family { FL_AF_INET = 4, FL_AF_INET6 = 6 };
enum fl_proto { FL_PROTO_TCP = 6, FL_PROTO_UDP = 17 };
enum fl_scheduler { FL_SCHED_MAGLEV = 1, FL_SCHED_WRR = 2 };
enum fl_forwarding { FL_FWD_DSR = 1, FL_FWD_IPIP = 2, FL_FWD_GUE = 3 };

enum fl_server_flags {
    FL_SERVER_PRESENT = 1u << 0,     /* slot in use */
    FL_SERVER_BACKUP = 1u << 1,      /* takes new connections only when no primary can */
    FL_SERVER_HEALTHY = 1u << 2,     /* passing its health check */
    FL_SERVER_ENABLED = 1u << 3,     /* not disabled by the operator */
    FL_SERVER_IN_ROTATION = 1u << 4, /* receives new connections (member of its service) */
    FL_SERVER_RETIRED = 1u << 5,     /* removed from the configuration: existing connections only */
    FL_SERVER_FLAGS_ALL = (1u << 6) - 1
};

struct fl_snap_header {
    fl_u64 magic;
    fl_u32 version;
    fl_u32 header_size;       /* sizeof(struct fl_snap_header) */
    fl_u64 generation;        /* increases with every snapshot the control plane publishes */
    fl_u64 total_size;        /* bytes in the whole snapshot */
    fl_u32 checksum;          /* CRC32C of all total_size bytes with this field zero */
    fl_u32 flags;             /* reserved, 0 */
    fl_u64 hash_seed;         /* flow hash seed: identical on both balancers of a pair */
    fl_u32 n_services, services_off;
    fl_u32 n_servers, servers_off;
    fl_u32 n_members, members_off;
    fl_u32 n_table_entries, tables_off;
    /* encapsulation (ipip / gue services) */
    fl_u8 encap_src4[4];      /* outer IPv4 source prefix; host bits come from the flow hash */
    fl_u8 encap_src4_len;     /* prefix length, 0 = not configured */
    fl_u8 encap_src6_len;
    fl_u16 gue_port;          /* UDP destination port of GUE packets */
    fl_u8 encap_src6[16];
    fl_u16 mtu;               /* largest IP packet sent to servers; 0 = the port's MTU */
    fl_u8 outer_ttl;          /* TTL / hop limit of outer headers */
    fl_u8 pad0;
    fl_u32 pad1;
    fl_u8 reserved[48];
};
FL_STATIC_ASSERT(sizeof(struct fl_snap_header) == 160, "snapshot header size");

struct fl_snap_service {
    fl_u8 vip[16];            /* IPv4 in the first 4 bytes */
    fl_u16 port;              /* host order */
    fl_u8 proto;              /* enum fl_proto */
    fl_u8 family;             /* enum fl_family */
    fl_u8 scheduler;          /* enum fl_scheduler */
    fl_u8 forwarding;         /* enum fl_forwarding */
    fl_u16 flags;             /* reserved, 0 */
    fl_u32 id;                /* stable id (< FL_MAX_SERVICES) for counters */
    fl_u32 members_off;       /* first member (index into the members array) */
    fl_u32 n_members;
    fl_u32 table_off;         /* first entry (index into the table entries) */
    fl_u32 table_size;        /* Maglev table size M (prime) */
    fl_u32 pad;
    char name[FL_NAME_LEN];   /* NUL-terminated */
};
FL_STATIC_ASSERT(sizeof(struct fl_snap_service) == 96, "service record size");

struct fl_snap_server {
    fl_u8 addr[16];
    fl_u8 mac[6];             /* L2 destination: the server (dsr) or its next hop (ipip, gue) */
    fl_u8 family;
    fl_u8 flags;              /* enum fl_server_flags */
    fl_u32 weight;            /* configured weight (0 = draining) */
    fl_u32 service;           /* index of its service in this snapshot */
    fl_u32 tag;               /* identity tag, stable across snapshots */
    fl_u16 port;              /* server port (informational; dsr keeps the VIP port) */
    fl_u8 reserved[26];
};
FL_STATIC_ASSERT(sizeof(struct fl_snap_server) == 64, "server record size");

struct fl_snap_member {
    fl_u32 server;            /* slot */
    fl_u32 weight;            /* > 0 */
};
FL_STATIC_ASSERT(sizeof(struct fl_snap_member) == 8, "member record size");

#ifdef __cplusplus
}
#endif
#endif /* FULCRUM_SNAPSHOT_ABI_H */
