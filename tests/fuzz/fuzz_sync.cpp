// libFuzzer target: the connection sync datagram decoder (sync.hpp, sync_abi.h).
// Input layout (tests/fuzz/corpus/sync/ holds seeds in it):
//   byte 0     bit 0: a sync key is configured (HMAC-SHA256 under kKey); bit 1: check the
//              configuration digest
//   bytes 1-8  the expected configuration digest (little-endian)
//   then       the datagram
// Checks: decoding never reads outside the datagram (exact-size copy under ASan); a refusal has
// a named error and a message, and hands out no record; an accepted datagram is consistent with
// its bytes (lengths, type rules, digest, HMAC), every record converts to a flow key and server
// identity and back to the same bytes, and the encoder rebuilds the datagram byte for byte.
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "fulcrum/sync.hpp"
#include "fulcrum/sync_auth.hpp"

using namespace fulcrum;

namespace {
constexpr char kKey[] = "fulcrum-fuzz-sync-key-0123456789";
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 9) return 0;
    static const HmacSha256Auth auth({reinterpret_cast<const uint8_t*>(kKey), sizeof kKey - 1});
    SyncDecodeOptions opt;
    if (data[0] & 1) opt.auth = &auth;
    opt.check_digest = data[0] & 2;
    std::memcpy(&opt.config_digest, data + 1, 8);

    const size_t n = size - 9;
    // Exactly sized copy: any read past the end is caught by ASan.
    std::unique_ptr<uint8_t[]> exact(new uint8_t[n ? n : 1]);
    if (n) std::memcpy(exact.get(), data + 9, n);
    const std::span<const uint8_t> bytes(exact.get(), n);

    SyncDatagram d;
    const SyncError e = decode_sync_datagram(bytes, opt, d);
    if (e != SyncError::ok) {
        if (static_cast<size_t>(e) >= kSyncErrorCount ||
            std::strcmp(sync_error_name(e), "unknown") == 0 || sync_error_message(e, d).empty() ||
            d.count() != 0)
            __builtin_trap();
        return 0;
    }

    const fl_sync_header& h = d.header;
    const bool hmac = h.flags & FL_SYNC_F_HMAC;
    if (h.total_len != n || h.header_len != kSyncHeaderLen || h.record_len != kSyncRecordLen ||
        n != kSyncHeaderLen + d.count() * kSyncRecordLen + (hmac ? FL_SYNC_HMAC_LEN : 0) ||
        d.count() != h.count || hmac != (opt.auth != nullptr) ||
        (opt.check_digest && h.config_digest != opt.config_digest) || h.boot_id == 0 ||
        h.sequence == 0)
        __builtin_trap();
    if ((h.type == FL_SYNC_T_RECORDS) != (d.count() > 0)) __builtin_trap();

    std::vector<fl_sync_record> recs;
    for (size_t i = 0; i < d.count(); ++i) {
        const fl_sync_record r = d.record(i);
        if (validate_sync_record(r) != SyncError::ok) __builtin_trap();
        const FlowKey k = sync_record_key(r);
        const IpAddr srv = sync_record_server(r);
        const fl_sync_record back =
            make_sync_record(k, r.state, r.service_port, srv, r.server_port, r.idle_ms);
        if (std::memcmp(&back, &r, sizeof r) != 0) __builtin_trap();
        const ConnState st = conn_state_of(r);
        if ((r.state == FL_SYNC_S_REMOVED) != (st == ConnState::empty)) __builtin_trap();
        if (st != ConnState::empty && sync_state_of(st) != r.state) __builtin_trap();
        recs.push_back(r);
    }

    // Rebuild with the encoder: same boot id, digest and key; the sequence is the encoder's own
    // (it counts from 1), so it is patched in and the HMAC recomputed before comparing.
    SyncSenderConfig cfg;
    cfg.boot_id = h.boot_id;
    cfg.config_digest = h.config_digest;
    cfg.max_datagram = FL_SYNC_MAX_DATAGRAM;
    cfg.auth = opt.auth;
    SyncEncoder enc(cfg);
    std::vector<uint8_t> again;
    if (h.type == FL_SYNC_T_RECORDS) {
        std::vector<std::vector<uint8_t>> out;
        if (enc.encode_records(recs, h.flags & FL_SYNC_F_BULK, out) != 1) __builtin_trap();
        again = std::move(out[0]);
    } else if (h.type == FL_SYNC_T_BULK_REQUEST) {
        again = enc.bulk_request();
    } else {
        again = enc.bulk_end(h.aux);
    }
    if (again.size() != n) __builtin_trap();
    std::memcpy(again.data() + offsetof(fl_sync_header, sequence), &h.sequence, 8);
    if (opt.auth)
        opt.auth->sign(std::span(again).first(n - FL_SYNC_HMAC_LEN),
                       again.data() + n - FL_SYNC_HMAC_LEN);
    if (std::memcmp(again.data(), bytes.data(), n) != 0) __builtin_trap();

    // The tracker accepts the first datagram of a peer and refuses its replay.
    SyncSeqTracker t;
    if (!t.observe(h.boot_id, h.sequence).accept || t.observe(h.boot_id, h.sequence).accept)
        __builtin_trap();
    return 0;
}
