// libFuzzer target: the control socket's frame decoder (fulcrum::FrameDecoder) on arbitrary
// bytes delivered in arbitrary pieces. Checks it against a straightforward decode of the
// whole stream: same frames in the same order, the same error at the same place, nothing
// handed out after an error, and buffers that stay within one frame.
#include <algorithm>
#include <cstring>
#include <vector>

#include "fulcrum/framing.hpp"

using namespace fulcrum;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    // First byte: the frame limit (small, so limits are reached); second: the piece size seed.
    const uint32_t max_frame = 1 + data[0] % 64 * 16;
    uint32_t seed = data[1];
    data += 2;
    size -= 2;

    // Reference: whole-stream decode.
    struct Ref {
        std::vector<std::vector<uint8_t>> frames;
        bool error = false;
    } ref;
    for (size_t at = 0;;) {
        if (size - at < 4) break;
        uint32_t len;
        std::memcpy(&len, data + at, 4);
        if (len < 1 || len > max_frame) {
            ref.error = true;
            break;
        }
        if (size - at - 4 < len) break;
        ref.frames.emplace_back(data + at + 4, data + at + 4 + len);
        at += 4 + size_t{len};
    }

    FrameDecoder dec(max_frame);
    size_t got = 0, at = 0;
    bool error = false;
    while (at < size) {
        seed = seed * 1103515245u + 12345u;
        const size_t piece = std::min<size_t>(size - at, 1 + (seed >> 16) % 97);
        // An exactly sized copy, freed after feed(): the decoder must keep its own bytes.
        std::vector<uint8_t> chunk(data + at, data + at + piece);
        dec.feed(chunk);
        chunk.assign(chunk.size(), 0xAA);
        at += piece;
        for (;;) {
            std::span<const uint8_t> msg;
            const Decoded d = dec.next(msg);
            if (d == Decoded::need_more) break;
            if (d == Decoded::too_long) {
                if (!ref.error || got != ref.frames.size() || dec.error().empty()) __builtin_trap();
                error = true;
                break;
            }
            if (error || got >= ref.frames.size() || msg.empty() ||
                !std::equal(msg.begin(), msg.end(), ref.frames[got].begin(), ref.frames[got].end()))
                __builtin_trap();
            ++got;
        }
        if (error) {
            std::span<const uint8_t> msg;
            if (dec.next(msg) != Decoded::too_long) __builtin_trap();  // sticky
            break;
        }
        // What is buffered is at most one incomplete frame plus the piece just fed.
        if (dec.buffered() > 4 + size_t{max_frame} + 97) __builtin_trap();
        if (dec.expected() < dec.buffered() && dec.buffered() >= 4 &&
            dec.expected() > 4 + size_t{max_frame})
            __builtin_trap();
    }
    if (got != ref.frames.size()) __builtin_trap();
    if (error != ref.error) __builtin_trap();
    return 0;
}
