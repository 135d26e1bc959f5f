#!/usr/bin/python3
"""A test backend server for Fulcrum's end-to-end tests and demo.

  testserver.py NAME [--tcp PORT] [--udp PORT] [--http PORT] [--health-file PATH] [--ipv6]

TCP: on connect sends "NAME\\n", then echoes every line back until the client closes
(long-lived connections). UDP: answers every datagram with "NAME <datagram>". HTTP: GET /
answers "NAME\\n"; GET /health answers 200, or 503 while --health-file exists. Every listener
binds the wildcard address so traffic to a VIP held on the loopback (DSR) is served; with
--ipv6 each one has an IPv6 twin on "::" (IPv6 only, so the IPv4 listener stays as it was).
Stops on SIGTERM.
"""
import argparse
import http.server
import os
import signal
import socket
import socketserver
import sys
import threading


class EchoHandler(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            self.wfile.write(NAME + b"\n")
            for line in self.rfile:
                self.wfile.write(line)
        except OSError:
            pass


class ThreadingTCP(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


class UDPHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        sock.sendto(NAME + b" " + data, self.client_address)


class HTTPHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/health") and HEALTH_FILE and os.path.exists(HEALTH_FILE):
            body, code = b"unhealthy\n", 503
        else:
            body, code = NAME + b"\n", 200
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ThreadingHTTP(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = True


def ipv6_twin(cls):
    """`cls` listening on an IPv6 address only (IPV6_V6ONLY: next to the IPv4 listener)."""
    class V6(cls):
        address_family = socket.AF_INET6

        def server_bind(self):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            super().server_bind()
    return V6


def main():
    global NAME, HEALTH_FILE
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--tcp", type=int)
    ap.add_argument("--udp", type=int)
    ap.add_argument("--http", type=int)
    ap.add_argument("--health-file")
    ap.add_argument("--ipv6", action="store_true", help="listen on :: too (IPv6 VIPs and addresses)")
    a = ap.parse_args()
    NAME = a.name.encode()
    HEALTH_FILE = a.health_file
    servers = []
    for wildcard, wrap in [("0.0.0.0", lambda c: c)] + ([("::", ipv6_twin)] if a.ipv6 else []):
        if a.tcp:
            servers.append(wrap(ThreadingTCP)((wildcard, a.tcp), EchoHandler))
        if a.udp:
            servers.append(wrap(socketserver.ThreadingUDPServer)((wildcard, a.udp), UDPHandler))
        if a.http:
            servers.append(wrap(ThreadingHTTP)((wildcard, a.http), HTTPHandler))
    if not servers:
        sys.exit("testserver.py: give at least one of --tcp, --udp, --http")
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    for s in servers:
        s.shutdown()


if __name__ == "__main__":
    main()
