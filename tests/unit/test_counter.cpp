// Counter: one writer's updates, read from other threads.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <thread>

#include "fulcrum/counter.hpp"

namespace fulcrum {
namespace {

TEST(Counter, AddsAndSubtractsAsUnsignedWithSignedGaugeReads) {
    Counter c;
    EXPECT_EQ(c.get(), 0u);
    c.add();
    c.add(41);
    EXPECT_EQ(c.get(), 42u);
    c.sub();
    c.sub(40);
    EXPECT_EQ(c.get(), 1u);
    c.sub(3);  // a worker's share of a gauge may go below zero
    EXPECT_EQ(c.get_signed(), -2);
    EXPECT_EQ(c.get(), UINT64_MAX - 1);
    c.add(uint64_t{1} << 40);  // beyond an instruction's 32-bit immediate
    EXPECT_EQ(c.get_signed(), (int64_t{1} << 40) - 2);
    c.set(7);
    EXPECT_EQ(c.get(), 7u);
    volatile uint64_t n = 5;  // from a register, not an immediate
    c.add(n);
    c.sub(n - 1);
    EXPECT_EQ(c.get(), 8u);
}

// A reader on another thread sees every value whole and in order: the writer adds a value
// with both 32-bit halves set, so a read torn between two updates would not be a multiple of it.
TEST(Counter, ReaderOnAnotherThreadSeesWholeValuesInOrder) {
    constexpr uint64_t kStep = 0x0000'0001'0000'0001ull;
    constexpr uint64_t kUpdates = 2'000'000;
    Counter c;
    std::atomic<bool> started{false}, done{false};
    uint64_t reads = 0, bad = 0, backwards = 0;
    std::thread reader([&] {
        uint64_t last = 0;
        started.store(true, std::memory_order_release);
        do {
            const uint64_t v = c.get();
            if (v % kStep != 0) ++bad;
            if (v < last) ++backwards;
            last = v;
            ++reads;
        } while (!done.load(std::memory_order_acquire));
    });
    while (!started.load(std::memory_order_acquire)) std::this_thread::yield();
    for (uint64_t i = 0; i < kUpdates; ++i) c.add(kStep);
    done.store(true, std::memory_order_release);
    reader.join();
    EXPECT_EQ(c.get(), kUpdates * kStep);
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(backwards, 0u);
    EXPECT_GT(reads, 0u);
}

}  // namespace
}  // namespace fulcrum
