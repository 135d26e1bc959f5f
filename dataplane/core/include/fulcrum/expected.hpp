// A small value-or-error type (std::expected is C++23).
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace fulcrum {

struct Error {
    std::string message;
};

template <class T>
class Expected {
public:
    Expected(T v) : v_(std::move(v)) {}              // NOLINT(google-explicit-constructor)
    Expected(Error e) : v_(std::move(e)) {}          // NOLINT(google-explicit-constructor)
    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() { return std::get<0>(v_); }
    const T& value() const { return std::get<0>(v_); }
    T& operator*() { return value(); }
    T* operator->() { return &value(); }
    const std::string& error() const { return std::get<1>(v_).message; }

private:
    std::variant<T, Error> v_;
};

}  // namespace fulcrum
