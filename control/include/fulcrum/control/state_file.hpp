// fulcrumd's runtime state on disk: the operator's overrides (fulcrumctl drain, disable,
// set-weight) per server, so that a restart of fulcrumd does not put a drained server back
// into rotation. The file is rewritten atomically on every change and read once at start
// (docs/configuration.md, "admin.state_file").
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "fulcrum/expected.hpp"

namespace fulcrum::control {

struct ServerOverride {
    std::optional<uint32_t>
        weight;             // the operator's weight (0: drained); nullopt: configured weight
    bool disabled = false;  // fulcrumctl disable
    bool empty() const { return !weight && !disabled; }
    friend bool operator==(const ServerOverride&, const ServerOverride&) = default;
};

// By server key ("service/address:port", see server_key()).
using Overrides = std::map<std::string, ServerOverride>;

// A state file larger than this is refused as corrupt (real ones hold one line per server).
inline constexpr size_t kMaxStateFileBytes = 16u << 20;

// The file's text (JSON, one object per overridden server; empty overrides are left out).
std::string format_overrides(const Overrides& o);
// Decodes format_overrides() output. The error says what is wrong and where (which key).
Expected<Overrides> parse_overrides(std::string_view text);

class StateFile {
  public:
    explicit StateFile(std::string path) : path_(std::move(path)) {}
    const std::string& path() const { return path_; }

    // Reads the file. A missing file is no overrides (a first start). A file that cannot be
    // read or decoded is an error naming the file and the problem; it is then left in place
    // until the first save, which moves it to PATH.bad for inspection instead of losing it.
    // A path that is not a regular file (a directory, a FIFO) is an error too, and is never
    // moved or replaced: save() then throws (not_a_file()).
    Expected<Overrides> load();
    // Writes `o` atomically: PATH.tmp, fsync, rename over PATH, fsync of the directory (which
    // is created if missing). A crash leaves either the old or the new file, never a torn
    // one. Throws std::runtime_error naming the file and the step that failed. Returns true
    // when it first moved a file that load() could not read to PATH.bad (kept_bad()).
    bool save(const Overrides& o);
    // Where the last bad file went (after the first save following a failed load), else "".
    const std::string& kept_bad() const { return kept_bad_; }
    bool not_a_file() const { return not_a_file_; }  // the last load() found no regular file

  private:
    std::string path_;
    bool bad_ = false;
    bool not_a_file_ = false;
    std::string kept_bad_;
};

}  // namespace fulcrum::control
