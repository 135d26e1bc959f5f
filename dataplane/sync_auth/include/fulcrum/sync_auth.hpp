// HMAC-SHA256 for connection sync datagrams (the SyncAuth of sync.hpp), and the key file it
// reads. A library apart from fulcrum_core because it links libcrypto (OpenSSL), which the core
// dataplane library must not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "fulcrum/expected.hpp"
#include "fulcrum/sync.hpp"

namespace fulcrum {

inline constexpr size_t kSyncKeyMinBytes = 16;
inline constexpr size_t kSyncKeyMaxBytes = 1024;

class HmacSha256Auth final : public SyncAuth {
public:
    // Throws std::invalid_argument for a key shorter than kSyncKeyMinBytes or longer than
    // kSyncKeyMaxBytes.
    explicit HmacSha256Auth(std::span<const uint8_t> key);
    ~HmacSha256Auth() override;
    void sign(std::span<const uint8_t> data, uint8_t* out) const override;

private:
    std::vector<uint8_t> key_;
};

// HMAC-SHA256 of `data` under `key` of any length (for tests against RFC 4231).
void hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data, uint8_t out[32]);

// Reads a sync key file: its bytes, without trailing newlines, spaces and tabs, are the key
// (e.g. written by `head -c 32 /dev/urandom | base64 > FILE`, then `chmod 600 FILE`). Refused,
// with a message saying what to do: a missing or unreadable file, not a regular file, a file
// readable or writable by group or others, fewer than kSyncKeyMinBytes or more than
// kSyncKeyMaxBytes key bytes.
Expected<std::vector<uint8_t>> load_sync_key_file(const std::string& path);

}  // namespace fulcrum
