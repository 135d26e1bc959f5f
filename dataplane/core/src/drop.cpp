#include "fulcrum/drop.hpp"

namespace fulcrum {

namespace {
constexpr std::string_view kNames[] = {
    "none",
#define FULCRUM_X(name, text) #name,
    FULCRUM_DROP_REASONS(FULCRUM_X)
#undef FULCRUM_X
};
constexpr std::string_view kTexts[] = {
    "not dropped",
#define FULCRUM_X(name, text) text,
    FULCRUM_DROP_REASONS(FULCRUM_X)
#undef FULCRUM_X
};
static_assert(sizeof(kNames) / sizeof(kNames[0]) == kDropReasons);
}  // namespace

std::string_view drop_name(Drop d) {
    const auto i = static_cast<unsigned>(d);
    return i < kDropReasons ? kNames[i] : "invalid";
}

std::string_view drop_description(Drop d) {
    const auto i = static_cast<unsigned>(d);
    return i < kDropReasons ? kTexts[i] : "invalid drop reason";
}

}  // namespace fulcrum
