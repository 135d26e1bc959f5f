"""Test and demo harness for Fulcrum: build paths, the dataplane's control socket,
processes that clean up after themselves, and network-namespace topologies.

Run with Debian's /usr/bin/python3 (scapy and pytest come from Debian packages).
Every namespace, link and process made here is removed on exit, including on failure
(context managers, plus an atexit hook as a last resort). Test hosts use 198.18.0.0/15
and 2001:db8::/32 and are never routed to the host's real interfaces.
"""
import atexit
import contextlib
import itertools
import json
import os
import pathlib
import signal
import socket
import struct
import subprocess
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("FULCRUM_BUILD_DIR", ROOT / "build"))
DATAPLANE = BUILD / "dataplane" / "app" / "fulcrum-dataplane"
SNAPSHOT_TOOL = BUILD / "dataplane" / "fulcrum-snapshot"

_counter = itertools.count()
_live_processes = []
_live_namespaces = []


def unique(prefix):
    """A name unique to this process and call (for namespaces, file prefixes, sockets)."""
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"


# ---- control socket ----------------------------------------------------------------------

OP_LOAD_SNAPSHOT, OP_COUNTERS, OP_HEALTH, OP_GET_SNAPSHOT = 1, 2, 3, 4


class ControlError(Exception):
    pass


class DpClient:
    """Client of fulcrum-dataplane's control socket (docs/control-protocol.md)."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ControlError("control socket closed")
            buf += chunk
        return buf

    def raw(self, op, body=b""):
        """Sends one request; returns (status, body bytes)."""
        self.sock.sendall(struct.pack("<IB", len(body) + 1, op) + body)
        length, status = struct.unpack("<IB", self._read(5))
        return status, self._read(length - 1)

    def request(self, op, body=b""):
        status, data = self.raw(op, body)
        if status != 0:
            raise ControlError(json.loads(data)["error"])
        return data

    def counters(self):
        return json.loads(self.request(OP_COUNTERS))

    def health(self):
        return json.loads(self.request(OP_HEALTH))

    def load_snapshot(self, data):
        return json.loads(self.request(OP_LOAD_SNAPSHOT, data))["generation"]

    def get_snapshot(self):
        return self.request(OP_GET_SNAPSHOT)


def build_snapshot(spec, path):
    """Writes the snapshot described by `spec` (the JSON of fulcrum-snapshot build)."""
    path = pathlib.Path(path)
    spec_path = path.with_suffix(".json")
    spec_path.write_text(json.dumps(spec))
    subprocess.run([str(SNAPSHOT_TOOL), "build", str(spec_path), "-o", str(path)], check=True,
                   capture_output=True, text=True)
    return path


def snapshot_bytes(spec, workdir):
    return build_snapshot(spec, pathlib.Path(workdir) / f"{unique('snap')}.snap").read_bytes()


# ---- processes ---------------------------------------------------------------------------

class Process:
    """A child process (optionally in a namespace) stopped by PID when done."""

    def __init__(self, argv, netns=None, log=None, env=None):
        if netns:
            argv = ["ip", "netns", "exec", netns] + list(argv)
        self.argv = argv
        self.log_path = log
        out = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        if log:
            out.close()
        _live_processes.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self in _live_processes:
            _live_processes.remove(self)
        return self.proc.returncode

    def log(self):
        try:
            return pathlib.Path(self.log_path).read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""


class Dataplane(Process):
    """fulcrum-dataplane on virtual devices with its own file prefix and control socket."""

    def __init__(self, workdir, vdevs, uplink, extra=(), netns=None, lcores="0-1", memory=256,
                 snapshot=None, exception=None, conn_capacity=65536, idle_sleep_us=100):
        self.workdir = pathlib.Path(workdir)
        self.prefix = unique("fl")
        self.socket = self.workdir / f"{self.prefix}.sock"
        eal = ["--no-huge", "-m", str(memory), "--no-pci", "--file-prefix", self.prefix, "-l", lcores,
               "--log-level", "*:warning"]
        for v in vdevs:
            eal += ["--vdev", v]
        args = ["--uplink", uplink, "--control-socket", str(self.socket),
                "--conn-capacity", str(conn_capacity), "--idle-sleep-us", str(idle_sleep_us)]
        if snapshot:
            args += ["--snapshot", str(snapshot)]
        if exception:
            args += ["--exception", exception]
        super().__init__([str(DATAPLANE)] + eal + ["--"] + args + list(extra), netns=netns,
                         log=self.workdir / f"{self.prefix}.log")
        self.wait_ready()

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.alive():
                raise RuntimeError(f"fulcrum-dataplane exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                try:
                    with DpClient(self.socket) as c:
                        if c.health()["status"] == "running":
                            return
                except (OSError, ControlError):
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"fulcrum-dataplane not ready after {timeout}s:\n{self.log()}")

    def client(self):
        return DpClient(self.socket)

    def counters(self):
        with self.client() as c:
            return c.counters()

    def wait_rx(self, n, timeout=60):
        """Waits until the dataplane has received n frames on the uplink; returns counters."""
        deadline = time.time() + timeout
        c = {}
        while time.time() < deadline:
            c = self.counters()
            if c["rx"] >= n:
                time.sleep(0.3)  # let the transmit buffers drain (flushed every 100 us)
                return self.counters()
            time.sleep(0.05)
        raise AssertionError(f"dataplane received {c.get('rx')} of {n} frames in {timeout}s")


# ---- namespaces --------------------------------------------------------------------------

def run(*argv, netns=None, check=True, capture=True, timeout=60):
    cmd = (["ip", "netns", "exec", netns] if netns else []) + [str(a) for a in argv]
    return subprocess.run(cmd, check=check, capture_output=capture, text=True, timeout=timeout)


def sh(script, netns=None, check=True, timeout=60):
    return run("sh", "-c", script, netns=netns, check=check, timeout=timeout)


class Topology:
    """Hosts in network namespaces on one L2 segment (a bridge in its own namespace).

    Every host gets eth0 attached to the bridge. Nothing is routed to the outside world.
    """

    def __init__(self, tag="t"):
        self.tag = unique(f"fl{tag}")[:10]
        self.switch = f"{self.tag}-sw"
        self.hosts = []
        self._add_ns(self.switch)
        run("ip", "link", "add", "br0", "type", "bridge", netns=self.switch)
        run("ip", "link", "set", "br0", "up", netns=self.switch)
        # No STP delays, no IPv6 chatter on the bridge itself.
        sh("echo 1 > /proc/sys/net/ipv6/conf/br0/disable_ipv6 || true", netns=self.switch)

    def _add_ns(self, name):
        run("ip", "netns", "add", name)
        _live_namespaces.append(name)
        run("ip", "link", "set", "lo", "up", netns=name)

    def ns(self, host):
        return f"{self.tag}-{host}"

    def add_host(self, host, addrs=(), ifname="eth0", ipv6=True):
        """Adds a namespace with `ifname` on the segment; returns the namespace name."""
        ns = self.ns(host)
        self._add_ns(ns)
        peer = f"p{len(self.hosts)}"
        run("ip", "link", "add", ifname, "type", "veth", "peer", "name", peer, netns=ns)
        run("ip", "link", "set", peer, "netns", self.switch, netns=ns)
        run("ip", "link", "set", peer, "master", "br0", netns=self.switch)
        run("ip", "link", "set", peer, "up", netns=self.switch)
        if not ipv6:
            sh(f"echo 1 > /proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", netns=ns)
        else:
            # No duplicate address detection delay for test addresses.
            sh(f"echo 0 > /proc/sys/net/ipv6/conf/{ifname}/accept_dad", netns=ns)
        for a in addrs:
            run("ip", "addr", "add", a, "dev", ifname, *(["nodad"] if ":" in a else []), netns=ns)
        run("ip", "link", "set", ifname, "up", netns=ns)
        self.hosts.append(host)
        return ns

    def mac(self, host, ifname="eth0"):
        out = run("cat", f"/sys/class/net/{ifname}/address", netns=self.ns(host)).stdout
        return out.strip()

    def close(self):
        for name in [self.ns(h) for h in self.hosts] + [self.switch]:
            delete_namespace(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def delete_namespace(name):
    # Kill what still runs inside (only processes we started live there), then delete.
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for p in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(p), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    if name in _live_namespaces:
        _live_namespaces.remove(name)


def prepare_dataplane_uplink(ns, ifname):
    """Makes a kernel interface fit to be a dataplane uplink through net_af_packet: up, no
    addresses, and hidden from the kernel's own stack by an nftables netdev ingress drop
    (af_packet still sees every frame: packet taps run before the ingress hook), so the
    kernel neither answers ARP nor resets TCP for VIP traffic it sees there."""
    sh(f"echo 1 > /proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", netns=ns)
    run("ip", "link", "set", ifname, "up", netns=ns)
    run("ip", "link", "set", ifname, "promisc", "on", netns=ns)
    run("nft", "add", "table", "netdev", "fulcrum", netns=ns)
    run("nft", "add", "chain", "netdev", "fulcrum", "uplink",
        f"{{ type filter hook ingress device {ifname} priority 0; policy drop; }}", netns=ns)


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@atexit.register
def _cleanup():
    for p in list(_live_processes):
        with contextlib.suppress(Exception):
            p.stop(timeout=5)
    for n in list(_live_namespaces):
        with contextlib.suppress(Exception):
            delete_namespace(n)


def workdir():
    return tempfile.mkdtemp(prefix="fulcrum-test-")
