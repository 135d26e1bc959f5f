#!/usr/bin/python3
"""A test backend server for Fulcrum's end-to-end tests and demo.

  testserver.py NAME [--tcp PORT] [--udp PORT] [--http PORT] [--health-file PATH]

TCP: on connect sends "NAME\\n", then echoes every line back until the client closes
(long-lived connections). UDP: answers every datagram with "NAME <datagram>". HTTP: GET /
answers "NAME\\n"; GET /health answers 200, or 503 while --health-file exists. Every listener
binds the wildcard address so traffic to a VIP held on the loopback (DSR) is served.
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


def main():
    global NAME, HEALTH_FILE
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--tcp", type=int)
    ap.add_argument("--udp", type=int)
    ap.add_argument("--http", type=int)
    ap.add_argument("--health-file")
    a = ap.parse_args()
    NAME = a.name.encode()
    HEALTH_FILE = a.health_file
    servers = []
    if a.tcp:
        servers.append(ThreadingTCP(("0.0.0.0", a.tcp), EchoHandler))
    if a.udp:
        servers.append(socketserver.ThreadingUDPServer(("0.0.0.0", a.udp), UDPHandler))
    if a.http:
        servers.append(ThreadingHTTP(("0.0.0.0", a.http), HTTPHandler))
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
