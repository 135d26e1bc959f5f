#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fulcrum/sync_auth.hpp"

using namespace fulcrum;

namespace {

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

std::string hex(const uint8_t* p, size_t n) {
    std::string s;
    char b[3];
    for (size_t i = 0; i < n; ++i) {
        std::snprintf(b, sizeof b, "%02x", p[i]);
        s += b;
    }
    return s;
}

std::string mac_hex(const std::vector<uint8_t>& key, const std::vector<uint8_t>& data) {
    uint8_t out[32];
    hmac_sha256(key, data, out);
    return hex(out, 32);
}

// A temporary directory removed at the end of the test, also when it fails.
struct TempDir {
    std::filesystem::path path;
    TempDir() {
        std::string tmpl =
            (std::filesystem::temp_directory_path() / "fulcrum-sync-key-XXXXXX").string();
        if (!mkdtemp(tmpl.data())) std::abort();
        path = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string write(const std::string& name, const std::string& content, mode_t mode) {
        const auto p = path / name;
        std::ofstream(p, std::ios::binary) << content;
        ::chmod(p.c_str(), mode);
        return p.string();
    }
};

}  // namespace

TEST(SyncAuth, HmacSha256MatchesRfc4231) {
    // RFC 4231 section 4, HMAC-SHA-256 results of test cases 1, 2, 3, 4, 6 and 7 (case 5 is
    // about truncated output, which the sync trailer does not use).
    EXPECT_EQ(mac_hex(std::vector<uint8_t>(20, 0x0b), bytes("Hi There")),
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    EXPECT_EQ(mac_hex(bytes("Jefe"), bytes("what do ya want for nothing?")),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    EXPECT_EQ(mac_hex(std::vector<uint8_t>(20, 0xaa), std::vector<uint8_t>(50, 0xdd)),
              "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    std::vector<uint8_t> k4;
    for (uint8_t i = 1; i <= 25; ++i) k4.push_back(i);
    EXPECT_EQ(mac_hex(k4, std::vector<uint8_t>(50, 0xcd)),
              "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
    EXPECT_EQ(mac_hex(std::vector<uint8_t>(131, 0xaa),
                      bytes("Test Using Larger Than Block-Size Key - Hash Key First")),
              "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    EXPECT_EQ(mac_hex(std::vector<uint8_t>(131, 0xaa),
                      bytes("This is a test using a larger than block-size key and a larger than "
                            "block-size data. "
                            "The key needs to be hashed before being used by the HMAC algorithm.")),
              "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

TEST(SyncAuth, SignedDatagramsVerifyOnlyUnderTheSameKey) {
    const HmacSha256Auth a(bytes("0123456789abcdef-key-one")), b(bytes("0123456789abcdef-key-two"));
    SyncSenderConfig cfg;
    cfg.boot_id = 42;
    cfg.auth = &a;
    SyncEncoder enc(cfg);
    EXPECT_EQ(enc.records_per_datagram(), (1400u - 48u - 32u) / 64u);  // 20
    fl_sync_record r{};
    r.family = 4;
    r.proto = 6;
    r.state = FL_SYNC_S_ESTABLISHED;
    r.server_family = 4;
    std::vector<std::vector<uint8_t>> out;
    enc.encode_records(std::vector<fl_sync_record>(45, r), false, out);
    ASSERT_EQ(out.size(), 3u);
    SyncDecodeOptions good, bad;
    good.auth = &a;
    bad.auth = &b;
    for (const auto& d : out) {
        EXPECT_LE(d.size(), 1400u);
        SyncDatagram dg;
        EXPECT_EQ(decode_sync_datagram(d, good, dg), SyncError::ok);
        EXPECT_EQ(decode_sync_datagram(d, bad, dg), SyncError::bad_hmac);
        // The trailer is HMAC-SHA256 over everything before it.
        uint8_t want[32];
        hmac_sha256(bytes("0123456789abcdef-key-one"), std::span(d).first(d.size() - 32), want);
        EXPECT_EQ(std::memcmp(want, d.data() + d.size() - 32, 32), 0);
    }
    const auto req = enc.bulk_request();
    SyncDatagram dg;
    EXPECT_EQ(decode_sync_datagram(req, good, dg), SyncError::ok);
    EXPECT_EQ(req.size(), 48u + 32u);

    EXPECT_THROW(HmacSha256Auth(bytes("short")), std::invalid_argument);
    EXPECT_THROW(HmacSha256Auth(std::vector<uint8_t>(kSyncKeyMaxBytes + 1, 1)),
                 std::invalid_argument);
}

TEST(SyncAuth, KeyFile) {
    TempDir dir;
    const std::string secret = "c2VjcmV0LWtleS1mb3ItdGVzdGluZy0xMjM0NTY3OA==";
    auto k = load_sync_key_file(dir.write("good", secret + "\n", 0600));
    ASSERT_TRUE(k) << k.error();
    EXPECT_EQ(*k, bytes(secret));  // trailing newline stripped

    auto expect_error = [&](const std::string& path, const std::string& part) {
        const auto r = load_sync_key_file(path);
        ASSERT_FALSE(r);
        EXPECT_NE(r.error().find(part), std::string::npos) << r.error();
        EXPECT_NE(r.error().find(path), std::string::npos) << r.error();
    };
    expect_error(dir.write("group", secret, 0640), "chmod 600");
    expect_error(dir.write("world", secret, 0604), "chmod 600");
    expect_error(dir.write("short", "tooshort\n", 0600), "head -c 32 /dev/urandom");
    expect_error(dir.write("blank", " \n\n", 0600), "0 key bytes");
    expect_error(dir.write("huge", std::string(kSyncKeyMaxBytes + 100, 'x'), 0600),
                 "more than a key");
    expect_error((dir.path / "missing").string(), "cannot open");
    std::filesystem::create_directory(dir.path / "adir");
    ::chmod((dir.path / "adir").c_str(), 0700);
    expect_error((dir.path / "adir").string(), "not a regular file");
}
