// A directory a test makes under the system's temporary directory and removes, with its
// contents, whatever happens (files, sockets, state it writes).
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

class TempDir {
public:
    // `prefix`: the directory's name before six random characters, e.g. "fulcrum-state-".
    explicit TempDir(const std::string& prefix) {
        std::string t = (std::filesystem::temp_directory_path() / (prefix + "XXXXXX")).string();
        if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp " + t + " failed");
        path_ = t;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};
