#include "fulcrum/unix_socket.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace fulcrum {

int listen_private_unix(const std::string& path, const std::string& what, const std::string& busy_hint) {
    sockaddr_un addr{};
    if (path.empty() || path.size() >= sizeof addr.sun_path)
        throw std::runtime_error(what + " path '" + path + "' is empty or longer than " +
                                 std::to_string(sizeof addr.sun_path - 1) + " bytes");
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (const auto slash = path.rfind('/'); slash != std::string::npos && slash > 0)
        ::mkdir(path.substr(0, slash).c_str(), 0755);
    struct stat st{};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            throw std::runtime_error(what + " path " + path + " exists and is not a socket; remove it or choose another path");
        const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const bool live = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
        if (probe >= 0) ::close(probe);
        if (live) throw std::runtime_error("another process is serving the " + what + " " + path + "; " + busy_hint);
        ::unlink(path.c_str());  // stale, left by a process that died
    }
    // A deep backlog: a burst of connections waits to be accepted (and refused with a clear
    // reply if the slots are full) instead of failing with EAGAIN in connect().
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) throw std::runtime_error("cannot create the " + what + ": " + std::strerror(errno));
    const mode_t old = ::umask(0177);  // the socket file is created 0600
    const int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::umask(old);
    if (rc != 0 || ::listen(fd, SOMAXCONN) != 0) {
        const std::string e = std::strerror(errno);
        ::close(fd);
        if (rc == 0) ::unlink(path.c_str());
        throw std::runtime_error("cannot listen on the " + what + " " + path + ": " + e +
                                 " (is its directory writable?)");
    }
    ::chmod(path.c_str(), 0600);
    return fd;
}

}  // namespace fulcrum
