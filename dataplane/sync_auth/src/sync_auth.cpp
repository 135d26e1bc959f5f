#include "fulcrum/sync_auth.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace fulcrum {

void hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data, uint8_t out[32]) {
    unsigned int len = 0;
    static const uint8_t kEmpty = 0;
    // HMAC() with a null output buffer would return a static one; ours is always given.
    if (!HMAC(EVP_sha256(), key.empty() ? &kEmpty : key.data(), static_cast<int>(key.size()),
              data.empty() ? &kEmpty : data.data(), data.size(), out, &len) ||
        len != 32)
        throw std::runtime_error("HMAC-SHA256 failed in libcrypto (OpenSSL installation broken?)");
}

HmacSha256Auth::HmacSha256Auth(std::span<const uint8_t> key) : key_(key.begin(), key.end()) {
    if (key.size() < kSyncKeyMinBytes || key.size() > kSyncKeyMaxBytes)
        throw std::invalid_argument("sync key of " + std::to_string(key.size()) +
                                    " bytes: must be " + std::to_string(kSyncKeyMinBytes) + " to " +
                                    std::to_string(kSyncKeyMaxBytes) + " bytes");
}

HmacSha256Auth::~HmacSha256Auth() { OPENSSL_cleanse(key_.data(), key_.size()); }

void HmacSha256Auth::sign(std::span<const uint8_t> data, uint8_t* out) const {
    hmac_sha256(key_, data, out);
}

Expected<std::vector<uint8_t>> load_sync_key_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return Error{"sync key file " + path + ": cannot open: " + std::strerror(errno) +
                     " (check the path in the configuration and that fulcrumd may read it)"};
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return Error{"sync key file " + path +
                     ": not a regular file (point the configuration at the key file itself)"};
    }
    if (st.st_mode & 077) {
        ::close(fd);
        return Error{"sync key file " + path + ": accessible by group or others (run chmod 600 " +
                     path + ")"};
    }
    if (st.st_size > static_cast<off_t>(kSyncKeyMaxBytes + 64)) {
        ::close(fd);
        return Error{"sync key file " + path + ": " + std::to_string(st.st_size) +
                     " bytes, more than a key (at most " + std::to_string(kSyncKeyMaxBytes) +
                     " key bytes)"};
    }
    std::vector<uint8_t> key(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < key.size()) {
        const ssize_t n = ::read(fd, key.data() + got, key.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int err = errno;
            ::close(fd);
            OPENSSL_cleanse(key.data(), key.size());
            return Error{"sync key file " + path +
                         ": read failed: " + (n < 0 ? std::strerror(err) : "file shrank")};
        }
        got += static_cast<size_t>(n);
    }
    ::close(fd);
    while (!key.empty() &&
           (key.back() == '\n' || key.back() == '\r' || key.back() == ' ' || key.back() == '\t'))
        key.pop_back();
    if (key.size() < kSyncKeyMinBytes || key.size() > kSyncKeyMaxBytes) {
        const size_t n = key.size();
        OPENSSL_cleanse(key.data(), key.size());
        return Error{"sync key file " + path + ": " + std::to_string(n) + " key bytes, need " +
                     std::to_string(kSyncKeyMinBytes) + " to " + std::to_string(kSyncKeyMaxBytes) +
                     " (generate one with: head -c 32 /dev/urandom | base64 > " + path + ")"};
    }
    return key;
}

}  // namespace fulcrum
