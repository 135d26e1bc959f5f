// Seed inputs shared by the fuzz targets and the seed-corpus generator.
#pragma once

#include <cstdint>
#include <vector>

namespace fuzzseeds {
std::vector<uint8_t> sample_snapshot();
std::vector<std::vector<uint8_t>> sample_packets();
}  // namespace fuzzseeds
