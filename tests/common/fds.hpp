// File descriptors a test opens and must close whatever happens (idle clients and the like).
#pragma once

#include <unistd.h>

#include <vector>

struct Fds {
    std::vector<int> fds;
    Fds() = default;
    Fds(const Fds&) = delete;
    Fds& operator=(const Fds&) = delete;
    ~Fds() {
        for (int fd : fds)
            if (fd >= 0) ::close(fd);
    }
};
