/*
 * Fulcrum connection sync: the UDP datagram format two balancers of an active-passive pair
 * exchange so that established connections survive a failover. Plain C so any language and
 * tool (a capture dissector, a test in C) can share one definition. docs/sync-protocol.md
 * describes the protocol; this header is the normative layout.
 *
 *   [fl_sync_header, 48 bytes][records: fl_sync_record x count, 64 bytes each][HMAC, 32 bytes]
 *
 * Every integer field is little-endian, ports included (the same convention as the forwarding
 * snapshot); addresses are in network byte order, IPv4 in the first 4 bytes and the other 12
 * bytes zero (a receiver refuses anything else). Unknown flag bits and a non-zero aux where
 * it has no meaning are refused, so they can be given a meaning in a later version. The HMAC
 * trailer is present exactly when FL_SYNC_F_HMAC is set: HMAC-SHA256 (full 32 bytes, not
 * truncated) over every byte before it.
 *
 * Servers travel by identity (family, address, port), never by the sender's slot number: the
 * two balancers number their servers independently.
 */
#ifndef FULCRUM_SYNC_ABI_H
#define FULCRUM_SYNC_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define FL_SYNC_STATIC_ASSERT(c, m) static_assert(c, m)
extern "C" {
#else
#define FL_SYNC_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

#define FL_SYNC_MAGIC 0x43595346u /* "FSYC" read as little-endian bytes */
#define FL_SYNC_VERSION 1u
#define FL_SYNC_HMAC_LEN 32u
/* Largest datagram: total_len is 16 bits, and a UDP payload over IPv4 holds at most 65507. */
#define FL_SYNC_MAX_DATAGRAM 65507u
#define FL_SYNC_DEFAULT_PAYLOAD 1400u

enum fl_sync_type {
    FL_SYNC_T_RECORDS = 1,      /* count >= 1 records: entries that changed, or refreshes */
    FL_SYNC_T_BULK_REQUEST = 2, /* "send me your whole table"; count 0 */
    FL_SYNC_T_BULK_END = 3,     /* last datagram of a bulk answer; count 0, aux = records sent */
};

enum fl_sync_flags {
    FL_SYNC_F_HMAC = 1u << 0, /* an HMAC-SHA256 trailer follows the records */
    FL_SYNC_F_BULK = 1u << 1, /* records answer a bulk request (type RECORDS only) */
};
#define FL_SYNC_F_KNOWN (FL_SYNC_F_HMAC | FL_SYNC_F_BULK)

struct fl_sync_header {
    uint32_t magic;         /* FL_SYNC_MAGIC */
    uint8_t version;        /* FL_SYNC_VERSION */
    uint8_t type;           /* enum fl_sync_type */
    uint16_t header_len;    /* sizeof(struct fl_sync_header) */
    uint16_t total_len;     /* the whole datagram: header, records, trailer */
    uint16_t record_len;    /* sizeof(struct fl_sync_record) */
    uint16_t count;         /* records that follow */
    uint16_t flags;         /* enum fl_sync_flags */
    uint64_t boot_id;       /* random, chosen when the sender's process starts */
    uint64_t sequence;      /* per boot id, +1 for every datagram sent, from 1 */
    uint64_t config_digest; /* digest of the sender's service configuration */
    uint64_t aux;           /* BULK_END: records sent in the bulk answer; otherwise 0 */
};
FL_SYNC_STATIC_ASSERT(sizeof(struct fl_sync_header) == 48, "sync header size");

enum fl_sync_state {
    FL_SYNC_S_ESTABLISHED = 1, /* TCP established, or a live UDP flow */
    FL_SYNC_S_CLOSING = 2,     /* TCP FIN or RST seen */
    FL_SYNC_S_REMOVED = 3,     /* the entry left the sender's table: remove it */
};

struct fl_sync_record {
    uint8_t family;         /* flow: 4 or 6 */
    uint8_t proto;          /* 6 (TCP) or 17 (UDP): also the service's protocol */
    uint8_t state;          /* enum fl_sync_state; CLOSING only for TCP */
    uint8_t server_family;  /* 4 or 6: part of the server identity, sent as is */
    uint16_t src_port;      /* flow key ports: 0 for fragment-keyed entries */
    uint16_t dst_port;
    uint16_t service_port;  /* service identity: (flow dst address = VIP, service_port, proto) */
    uint16_t server_port;   /* server identity: (server_family, server_addr, server_port) */
    uint32_t idle_ms;       /* time since the entry's last packet, at sending */
    uint8_t src[16];        /* client address */
    uint8_t dst[16];        /* VIP */
    uint8_t server_addr[16];
};
FL_SYNC_STATIC_ASSERT(sizeof(struct fl_sync_record) == 64, "sync record size");
FL_SYNC_STATIC_ASSERT(offsetof(struct fl_sync_record, idle_ms) == 12 &&
                          offsetof(struct fl_sync_record, src) == 16 &&
                          offsetof(struct fl_sync_record, server_addr) == 48,
                      "sync record layout");
FL_SYNC_STATIC_ASSERT(offsetof(struct fl_sync_header, boot_id) == 16 &&
                          offsetof(struct fl_sync_header, aux) == 40,
                      "sync header layout");

#ifdef __cplusplus
}
#endif

#endif /* FULCRUM_SYNC_ABI_H */
