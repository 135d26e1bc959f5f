// The dataplane's control socket server: a Unix stream socket (mode 0600) speaking the
// frames of fulcrum/ctl_protocol.hpp. Single-threaded, driven by poll_once() from the main
// lcore; several clients may be connected at once.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "fulcrum/ctl_protocol.hpp"

namespace fulcrum::dpdk {

class ControlServer {
public:
    // Fills `status` and `reply` for one request.
    using Handler = std::function<void(uint8_t op, std::span<const uint8_t> body, ctl::Status& status,
                                       std::vector<uint8_t>& reply)>;

    // Binds and listens at `path`. A stale socket file left by a dead process is replaced; a
    // live one (another dataplane answering there) is an error. Throws std::runtime_error.
    ControlServer(std::string path, Handler handler, uint32_t max_frame = ctl::kMaxFrame);
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    // Waits up to `timeout_ms` for activity, then accepts, reads, answers and writes.
    void poll_once(int timeout_ms);
    const std::string& path() const { return path_; }
    size_t clients() const { return conns_.size(); }

private:
    struct Conn {
        int fd;
        std::vector<uint8_t> in;
        std::vector<uint8_t> out;
        size_t out_off = 0;
        bool close_after_write = false;
    };
    void accept_all();
    bool read_from(Conn& c);   // false: close
    bool write_to(Conn& c);    // false: close
    void dispatch(Conn& c);

    std::string path_;
    Handler handler_;
    uint32_t max_frame_;
    int listen_fd_ = -1;
    std::vector<Conn> conns_;
};

}  // namespace fulcrum::dpdk
