// Message framing of the two control interfaces, on plain bytes (no sockets), so the rules
// live once and can be fuzzed:
//   FrameDecoder: the dataplane control socket's frames (u32 little-endian length | kind |
//                 body, docs/control-protocol.md);
//   LineDecoder:  fulcrumd's admin API, one JSON request per '\n'-terminated line.
// A decoder buffers what feed() gives it and hands out complete messages in order. A message
// over the limit is an error that sticks: the stream is out of step from there on, so the
// server answers once and closes; nothing after the bad message is ever handed out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fulcrum {

enum class Decoded : uint8_t {
    need_more,  // no complete message buffered
    message,    // `msg` holds one
    too_long,   // the message in progress exceeds the limit (sticky; see error())
};

class MessageDecoder {
  public:
    virtual ~MessageDecoder() = default;
    // Appends received bytes. Invalidates spans returned by next().
    void feed(std::span<const uint8_t> bytes);
    // The next complete message; `msg` stays valid until the next feed(). After too_long,
    // every call returns too_long.
    virtual Decoded next(std::span<const uint8_t>& msg) = 0;
    // Bytes buffered and not yet handed out.
    size_t buffered() const { return buf_.size() - off_; }
    // Bytes the message in progress will occupy once complete, as far as known (a frame
    // declares its length up front; a line is as long as what has arrived).
    virtual size_t expected() const = 0;
    // What was wrong, after too_long.
    const std::string& error() const { return error_; }
    bool failed() const { return !error_.empty(); }

  protected:
    std::vector<uint8_t> buf_;
    size_t off_ = 0;  // start of the first byte not handed out
    std::string error_;
};

class FrameDecoder final : public MessageDecoder {
  public:
    // The largest length field a frame of this kind may have, given `max_frame`; and the
    // kind's name for the error.
    using KindLimit = uint32_t (*)(uint8_t kind, uint32_t max_frame);
    using KindName = const char* (*)(uint8_t kind);
    // `max_frame`: the largest allowed length field (kind byte + body). With `limit`, each
    // kind's own (smaller) limit applies too, checked as soon as the kind byte arrives, so a
    // small request cannot make the server buffer `max_frame` bytes.
    explicit FrameDecoder(uint32_t max_frame, KindLimit limit = nullptr, KindName name = nullptr)
        : max_frame_(max_frame), limit_(limit), name_(name) {}
    // `msg` = kind byte followed by the body (never empty).
    Decoded next(std::span<const uint8_t>& msg) override;
    size_t expected() const override;

  private:
    uint32_t max_frame_;
    KindLimit limit_;
    KindName name_;
};

class LineDecoder final : public MessageDecoder {
  public:
    // `max_line`: the longest allowed line, without its '\n'.
    explicit LineDecoder(size_t max_line) : max_line_(max_line) {}
    // `msg` = the line without its '\n' (a trailing '\r' is kept).
    Decoded next(std::span<const uint8_t>& msg) override;
    size_t expected() const override { return buffered(); }

  private:
    size_t max_line_;
    size_t scanned_ = 0;  // bytes after off_ known to hold no '\n' (no rescans of a long line)
};

}  // namespace fulcrum
