// Private Unix stream sockets for the dataplane's control socket and fulcrumd's admin API.
#pragma once

#include <string>

namespace fulcrum {

// Creates a non-blocking listening Unix stream socket at `path`, mode 0600 (root-only
// control), creating the socket's directory (one level) if missing. A stale socket file left
// by a dead process is replaced; a live one is an error. `what` names the socket in
// messages ("control socket"); `busy_hint` says what to do when another process serves it.
// Throws std::runtime_error.
int listen_private_unix(const std::string& path, const std::string& what, const std::string& busy_hint);

}  // namespace fulcrum
