#include "fulcrum/control/state_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace fulcrum::control {

using nlohmann::json;

namespace {

constexpr const char* kFormat = "fulcrum-overrides";
constexpr int kVersion = 1;

std::string errno_text() {
    return std::strerror(errno);
}

// Writes all of `data` to `fd`, retrying short writes and EINTR.
bool write_all(int fd, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
        const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        off += static_cast<size_t>(n);
    }
    return true;
}

void fsync_dir(const std::string& dir, const std::string& path) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        throw std::runtime_error("state file " + path + ": cannot open its directory " + dir +
                                 ": " + errno_text());
    const int rc = ::fsync(fd);
    const std::string err = errno_text();
    ::close(fd);
    if (rc != 0)
        throw std::runtime_error("state file " + path + ": fsync of directory " + dir +
                                 " failed: " + err);
}

}  // namespace

std::string format_overrides(const Overrides& o) {
    json servers = json::object();
    for (const auto& [key, ov] : o) {
        if (ov.empty()) continue;
        json e = json::object();
        if (ov.weight) e["weight"] = *ov.weight;
        if (ov.disabled) e["disabled"] = true;
        servers[key] = e;
    }
    json doc = {{"format", kFormat}, {"version", kVersion}, {"servers", servers}};
    return doc.dump(2) + "\n";
}

Expected<Overrides> parse_overrides(std::string_view text) {
    json doc;
    try {
        doc = json::parse(text.begin(), text.end());
    } catch (const json::exception& e) {
        return Error{std::string("not valid JSON (") + e.what() + ")"};
    }
    if (!doc.is_object())
        return Error{"expected a JSON object with \"format\", \"version\" and \"servers\""};
    const auto f = doc.find("format");
    if (f == doc.end() || *f != kFormat)
        return Error{std::string("\"format\" must be \"") + kFormat +
                     "\": not a fulcrumd state file"};
    const auto v = doc.find("version");
    if (v == doc.end() || !v->is_number_integer() || v->get<int64_t>() != kVersion)
        return Error{"\"version\" must be " + std::to_string(kVersion) +
                     " (written by another fulcrumd version? compare with docs/configuration.md)"};
    const auto s = doc.find("servers");
    if (s == doc.end() || !s->is_object())
        return Error{"\"servers\" must be an object keyed by server"};
    for (const auto& [k, _] : doc.items())
        if (k != "format" && k != "version" && k != "servers")
            return Error{"unknown key \"" + k + "\""};
    Overrides out;
    for (const auto& [key, e] : s->items()) {
        const std::string where = "servers[\"" + key + "\"]";
        if (key.empty() || key.find('/') == std::string::npos)
            return Error{where + ": not a server key (service/address:port)"};
        if (!e.is_object())
            return Error{where + ": expected an object with \"weight\" and/or \"disabled\""};
        ServerOverride ov;
        for (const auto& [field, val] : e.items()) {
            if (field == "weight") {
                if (!val.is_number_unsigned() || val.get<uint64_t>() > 65535)
                    return Error{where + ".weight: expected an integer from 0 to 65535"};
                ov.weight = val.get<uint32_t>();
            } else if (field == "disabled") {
                if (!val.is_boolean()) return Error{where + ".disabled: expected true or false"};
                ov.disabled = val.get<bool>();
            } else {
                return Error{where + ": unknown key \"" + field + "\""};
            }
        }
        if (!ov.empty()) out[key] = ov;
    }
    return out;
}

Expected<Overrides> StateFile::load() {
    bad_ = false;
    not_a_file_ = false;
    // O_NONBLOCK: a FIFO at the path must not hang the start (fstat below refuses it).
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) return Overrides{};
        bad_ = true;
        return Error{"state file " + path_ + " cannot be read: " + errno_text()};
    }
    std::string text;
    struct stat st {};
    bool ok = ::fstat(fd, &st) == 0;
    std::string err = ok ? "" : errno_text();
    if (ok && !S_ISREG(st.st_mode)) {
        ok = false;
        not_a_file_ = true;
        err = std::string("not a regular file (") + (S_ISDIR(st.st_mode) ? "a directory" : "a special file") +
              "; it is left alone: set admin.state_file to a file's path)";
    }
    if (ok && static_cast<uint64_t>(st.st_size) > kMaxStateFileBytes) {
        ok = false;
        err = std::to_string(st.st_size) + " bytes, more than the " +
              std::to_string(kMaxStateFileBytes) + " a state file may hold";
    }
    char buf[65536];
    while (ok) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            ok = false;
            err = errno_text();
        }
        if (n <= 0) break;
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > kMaxStateFileBytes) {
            ok = false;
            err = "more than " + std::to_string(kMaxStateFileBytes) + " bytes";
        }
    }
    ::close(fd);
    if (!ok) {
        bad_ = true;
        return Error{"state file " + path_ + " cannot be read: " + err};
    }
    auto parsed = parse_overrides(text);
    if (!parsed) {
        bad_ = true;
        return Error{"state file " + path_ + " is corrupt: " + parsed.error()};
    }
    return parsed;
}

bool StateFile::save(const Overrides& o) {
    namespace fs = std::filesystem;
    const fs::path p(path_);
    const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
        throw std::runtime_error("state file " + path_ + ": cannot create directory " + dir + ": " +
                                 ec.message());
    bool moved = false;
    if (not_a_file_)
        // Moving a directory aside would take whatever it holds with it.
        throw std::runtime_error("state file " + path_ +
                                 " is not a regular file; it is left alone and the overrides are not saved: set "
                                 "admin.state_file to a file's path and restart fulcrumd");
    if (bad_) {
        // Keep the file that could not be read for inspection rather than write over it.
        const std::string bad = path_ + ".bad";
        if (::rename(path_.c_str(), bad.c_str()) == 0) {
            kept_bad_ = bad;
            moved = true;
        } else if (errno != ENOENT) {  // gone meanwhile: nothing to keep
            throw std::runtime_error("state file " + path_ +
                                     " could not be read at start and cannot be moved to " + bad +
                                     ": " + errno_text() + "; move it away by hand");
        }
        bad_ = false;
    }
    const std::string tmp = path_ + ".tmp";
    const std::string text = format_overrides(o);
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        throw std::runtime_error("state file " + path_ + ": cannot create " + tmp + ": " +
                                 errno_text());
    if (!write_all(fd, text)) {
        const std::string err = errno_text();
        ::close(fd);
        ::unlink(tmp.c_str());
        throw std::runtime_error("state file " + path_ + ": writing " + tmp + " failed: " + err);
    }
    if (::fsync(fd) != 0) {
        const std::string err = errno_text();
        ::close(fd);
        ::unlink(tmp.c_str());
        throw std::runtime_error("state file " + path_ + ": fsync of " + tmp + " failed: " + err);
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path_.c_str()) != 0) {
        const std::string err = errno_text();
        ::unlink(tmp.c_str());
        throw std::runtime_error("state file " + path_ + ": rename from " + tmp +
                                 " failed: " + err);
    }
    fsync_dir(dir, path_);
    return moved;
}

}  // namespace fulcrum::control
