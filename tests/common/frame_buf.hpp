// A heap buffer holding a frame with DPDK-like headroom, for tests and benchmarks.
#pragma once

#include <cstring>
#include <vector>

#include "fulcrum/rewrite.hpp"

namespace fulcrum::test {

struct FrameBuf {
    static constexpr uint32_t kHeadroom = 128;
    std::vector<uint8_t> mem;
    Frame f;

    explicit FrameBuf(const std::vector<uint8_t>& frame, uint32_t capacity = 2048) { load(frame, capacity); }
    FrameBuf() { load({}, 2048); }

    void load(const std::vector<uint8_t>& frame, uint32_t capacity = 2048) {
        if (capacity < kHeadroom + frame.size()) capacity = static_cast<uint32_t>(kHeadroom + frame.size());
        mem.assign(capacity, 0xEE);
        if (!frame.empty()) std::memcpy(mem.data() + kHeadroom, frame.data(), frame.size());
        f.data = mem.data() + kHeadroom;
        f.len = static_cast<uint32_t>(frame.size());
        f.headroom = kHeadroom;
        f.buf_len = capacity;
    }
    // As if the buffer began `room` bytes before the frame (room <= kHeadroom): less headroom,
    // the same tailroom.
    void limit_headroom(uint32_t room) {
        f.buf_len -= f.headroom - room;
        f.headroom = room;
    }
    std::vector<uint8_t> bytes() const { return {f.data, f.data + f.len}; }
};

}  // namespace fulcrum::test
