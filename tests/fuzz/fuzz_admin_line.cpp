// libFuzzer target: the admin API's line decoder (fulcrum::LineDecoder) on arbitrary bytes in
// arbitrary pieces. Checks it against a whole-stream split: same lines in order; an over-long
// line is an error reported before any byte after it is handed out (the tail of a long line
// is never a request); buffers stay within one line's limit.
#include <algorithm>
#include <cstring>
#include <vector>

#include "fulcrum/framing.hpp"

using namespace fulcrum;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    const size_t max_line = data[0] % 128;
    uint32_t seed = data[1];
    data += 2;
    size -= 2;

    std::vector<std::vector<uint8_t>> ref;
    bool ref_error = false;
    for (size_t at = 0; at < size;) {
        const auto* nl = static_cast<const uint8_t*>(std::memchr(data + at, '\n', size - at));
        const size_t len = nl ? static_cast<size_t>(nl - (data + at)) : size - at;
        if (len > max_line) {
            ref_error = true;
            break;
        }
        if (!nl) break;
        ref.emplace_back(data + at, data + at + len);
        at += len + 1;
    }

    LineDecoder dec(max_line);
    size_t got = 0, at = 0;
    bool error = false;
    while (at < size && !error) {
        seed = seed * 1103515245u + 12345u;
        const size_t piece = std::min<size_t>(size - at, 1 + (seed >> 16) % 61);
        std::vector<uint8_t> chunk(data + at, data + at + piece);
        dec.feed(chunk);
        chunk.assign(chunk.size(), '\n');  // the decoder must not look at the caller's buffer later
        at += piece;
        for (;;) {
            std::span<const uint8_t> msg;
            const Decoded d = dec.next(msg);
            if (d == Decoded::need_more) break;
            if (d == Decoded::too_long) {
                if (!ref_error || got != ref.size() || dec.error().empty()) __builtin_trap();
                error = true;
                break;
            }
            if (got >= ref.size() || msg.size() > max_line ||
                std::find(msg.begin(), msg.end(), uint8_t{'\n'}) != msg.end() ||
                !std::equal(msg.begin(), msg.end(), ref[got].begin(), ref[got].end()))
                __builtin_trap();
            ++got;
        }
        if (!error && dec.buffered() > max_line + 61) __builtin_trap();
    }
    if (error) {
        std::span<const uint8_t> msg;
        dec.feed(std::vector<uint8_t>{'x', '\n'});
        if (dec.next(msg) != Decoded::too_long)
            __builtin_trap();  // sticky: the tail is never a request
    }
    if (got != ref.size()) __builtin_trap();
    // The reference error is only reachable once enough bytes arrived; a stream that ended
    // inside a too-long line is seen as an error by both.
    if (error != ref_error) __builtin_trap();
    return 0;
}
