#include "fulcrum/framing.hpp"

#include <algorithm>
#include <cstring>

namespace fulcrum {

void MessageDecoder::feed(std::span<const uint8_t> bytes) {
    if (failed() || bytes.empty()) return;  // after an error nothing more is decoded
    // Drop what was handed out before growing, so the buffer holds one message's worth.
    if (off_ > 0 && (off_ == buf_.size() || off_ >= buf_.size() / 2)) {
        buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(off_));
        off_ = 0;
    }
    buf_.insert(buf_.end(), bytes.begin(), bytes.end());
}

Decoded FrameDecoder::next(std::span<const uint8_t>& msg) {
    if (failed()) return Decoded::too_long;
    if (buffered() < 5) {
        if (buffered() >= 4) {  // the length alone already tells a bad frame
            uint32_t len;
            std::memcpy(&len, buf_.data() + off_, 4);
            if (len < 1 || len > max_frame_) {
                error_ = "request frame length " + std::to_string(len) + " outside 1.." +
                         std::to_string(max_frame_);
                return Decoded::too_long;
            }
        }
        return Decoded::need_more;
    }
    uint32_t len;
    std::memcpy(&len, buf_.data() + off_, 4);  // little-endian host (asserted in flow.hpp)
    if (len < 1 || len > max_frame_) {
        error_ = "request frame length " + std::to_string(len) + " outside 1.." +
                 std::to_string(max_frame_);
        return Decoded::too_long;
    }
    const uint8_t kind = buf_[off_ + 4];
    if (const uint32_t limit = limit_ ? std::min(limit_(kind, max_frame_), max_frame_) : max_frame_; len > limit) {
        error_ = "request frame of " + std::to_string(len) + " bytes for " +
                 (name_ ? std::string(name_(kind)) : "kind") + " (" + std::to_string(kind) +
                 ") is longer than the " + std::to_string(limit) + " bytes it may have";
        return Decoded::too_long;
    }
    if (buffered() - 4 < len) return Decoded::need_more;
    msg = {buf_.data() + off_ + 4, len};
    off_ += 4 + size_t{len};
    return Decoded::message;
}

size_t FrameDecoder::expected() const {
    if (failed() || buffered() < 4) return buffered();
    uint32_t len;
    std::memcpy(&len, buf_.data() + off_, 4);
    return 4 + size_t{std::min(len, max_frame_)};
}

Decoded LineDecoder::next(std::span<const uint8_t>& msg) {
    if (failed()) return Decoded::too_long;
    const uint8_t* start = buf_.data() + off_;
    const size_t avail = buffered();
    const size_t from = std::min(scanned_, avail);
    const auto* nl = static_cast<const uint8_t*>(std::memchr(start + from, '\n', avail - from));
    if (!nl) {
        scanned_ = avail;
        if (avail > max_line_) {
            error_ =
                "request longer than " + std::to_string(max_line_) + " bytes without a newline";
            return Decoded::too_long;
        }
        return Decoded::need_more;
    }
    const auto len = static_cast<size_t>(nl - start);
    if (len > max_line_) {
        error_ = "request line of " + std::to_string(len) + " bytes is longer than the limit of " +
                 std::to_string(max_line_) + " bytes";
        return Decoded::too_long;
    }
    msg = {start, len};
    off_ += len + 1;
    scanned_ = 0;
    return Decoded::message;
}

}  // namespace fulcrum
