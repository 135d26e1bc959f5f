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


def remove_dpdk_runtime_dir(prefix):
    """Removes the EAL runtime directory of a stopped DPDK process (EAL leaves it behind)."""
    d = pathlib.Path("/var/run/dpdk") / prefix
    if d.is_dir():
        for f in d.iterdir():
            with contextlib.suppress(OSError):
                f.unlink()
        with contextlib.suppress(OSError):
            d.rmdir()


def write_pcap(path, frames):
    """Writes raw Ethernet frames as a pcap file, without scapy (fast for large inputs)."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", i // 1000000, i % 1000000, len(fr), len(fr)))
            f.write(fr)


def read_pcap(path):
    """The raw frames of a pcap file (either byte order), without scapy."""
    frames = []
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return frames
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        frames.append(data[off:off + incl])
        off += incl
    return frames


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

    def stop(self, timeout=15):
        rc = super().stop(timeout)
        remove_dpdk_runtime_dir(self.prefix)
        return rc

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
        # veth leaves checksums to "hardware" by default; a frame captured by the balancer's
        # packet socket would then carry an unfinished checksum, as no real wire does.
        run("ethtool", "-K", ifname, "tx", "off", netns=ns)
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


@contextlib.contextmanager
def own_namespace(prefix):
    """A network namespace of the test's own, deleted (with what runs in it) afterwards."""
    ns = unique(prefix)
    run("ip", "netns", "add", ns)
    _live_namespaces.append(ns)
    try:
        yield ns
    finally:
        delete_namespace(ns)


@contextlib.contextmanager
def veth_namespace(prefix):
    """A namespace of the test's own holding the veth pair up0 (the dataplane's side) and
    wire0 (where a test sends and captures frames), both up, IPv6 off."""
    with own_namespace(prefix) as ns:
        run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "wire0", netns=ns)
        for i in ("up0", "wire0"):
            sh(f"echo 1 > /proc/sys/net/ipv6/conf/{i}/disable_ipv6", netns=ns)
            run("ip", "link", "set", i, "up", netns=ns)
        yield ns


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


def _exit_on_signal(signum, _frame):
    # A run stopped by SIGTERM or SIGHUP (a suite's timeout, an operator's kill) unwinds as an
    # exception does: every own_namespace and process context closes, then _cleanup runs.
    raise SystemExit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_sig) is signal.SIG_DFL:
        with contextlib.suppress(ValueError):  # imported outside the main thread: left as is
            signal.signal(_sig, _exit_on_signal)


def workdir():
    return tempfile.mkdtemp(prefix="fulcrum-test-")


# ---- sockets inside a namespace ----------------------------------------------------------

import ctypes  # noqa: E402
import threading  # noqa: E402

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def in_netns(ns):
    """Runs the block in namespace `ns` (this thread only). Sockets created inside stay there."""
    own = os.open(f"/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {ns} failed")
        yield
    finally:
        _libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)


def ns_socket(ns, family=socket.AF_INET, type=socket.SOCK_STREAM):
    with in_netns(ns):
        return socket.socket(family, type)


class HeldConnection:
    """A long-lived TCP connection to a test server through the balancer: learns which server
    answered, then checks it still echoes."""

    def __init__(self, ns, host, port, timeout=5.0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = ns_socket(ns, family)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.file = self.sock.makefile("rb")
        self.server = self.file.readline().decode().strip()
        if not self.server:
            raise OSError("connection closed before the server said its name")

    def alive(self, payload=b"ping"):
        try:
            self.sock.sendall(payload + b"\n")
            return self.file.readline() == payload + b"\n"
        except OSError:
            return False

    def close(self):
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


def connect_once(ns, host, port, timeout=5.0):
    """One short connection: returns the name of the server that answered."""
    c = HeldConnection(ns, host, port, timeout)
    name = c.server
    c.close()
    return name


def udp_once(ns, host, port, payload=b"hi", timeout=3.0, sport=None):
    """One query and its echo; `sport` fixes the source port (a distinct flow per port: random
    ephemeral ports can repeat within the dataplane's UDP timeout)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = ns_socket(ns, family, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        if sport is not None:
            s.bind(("", sport))
        s.sendto(payload, (host, port))
        data, _ = s.recvfrom(2048)
        name, _, echoed = data.partition(b" ")
        if echoed != payload:
            raise AssertionError(f"UDP echo mismatch: {data!r}")
        return name.decode()
    finally:
        s.close()


def admin_request(path, request, timeout=10):
    """One request on fulcrumd's admin socket at `path`; its JSON reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def add_dsr_server(topo, name, addr, vips):
    """A server namespace for direct server return: the VIPs on its loopback, and ARP for them
    neither answered nor used as a source on its segment."""
    ns = topo.add_host(name, [f"{addr}/24"], ipv6=False)
    for vip in vips:
        run("ip", "addr", "add", f"{vip}/32", "dev", "lo", netns=ns)
    for k, v in (("arp_ignore", 1), ("arp_announce", 2)):
        for dev in ("all", "eth0"):
            sh(f"echo {v} > /proc/sys/net/ipv4/conf/{dev}/{k}", netns=ns)
    return ns


# ---- a whole balancer lab ----------------------------------------------------------------

FULCRUMD = BUILD / "control" / "fulcrumd"
FULCRUMCTL = BUILD / "control" / "fulcrumctl"
TESTSERVER = pathlib.Path(__file__).resolve().parent / "testserver.py"


class Lab:
    """client -- segment -- balancer (dataplane + fulcrumd) -- servers, all in namespaces.

    Servers run testserver.py (TCP echo on 80, UDP on 53, HTTP on 8080) and hold every VIP on
    their loopback for direct server return. The balancer's kernel owns the TAP exception
    interface fl0 with 198.18.0.2/24 and the VIPs, so it answers ARP for them."""

    CLIENT = "198.18.0.1"
    LB = "198.18.0.2"

    def __init__(self, workdir, servers, vips=("198.18.0.100",), tag="lab", conn_capacity=65536):
        self.workdir = pathlib.Path(workdir)
        self.servers = dict(servers)           # name -> address
        self.vips = list(vips)
        self.backends = {}
        self.dataplane = None
        self.fulcrumd = None
        self.conn_capacity = conn_capacity
        self.dp_socket = self.workdir / "dataplane.sock"
        self.admin_socket = self.workdir / "admin.sock"
        self.state_file = self.workdir / "overrides.json"  # operator overrides: never outside the lab
        self.metrics_port = 9300 + os.getpid() % 500
        self.topo = Topology(tag)
        try:
            self.client = self.topo.add_host("client", [f"{self.CLIENT}/24"], ipv6=False)
            self.lb = self.topo.add_host("lb", [], ipv6=False)
            prepare_dataplane_uplink(self.lb, "eth0")
            for name, addr in self.servers.items():
                add_dsr_server(self.topo, name, addr, self.vips)
                self.start_backend(name)
            self.start_dataplane()
        except BaseException:
            self.close()
            raise

    # servers
    def start_backend(self, name):
        ns = self.topo.ns(name)
        health = self.workdir / f"{name}.unhealthy"
        p = Process(["/usr/bin/python3", str(TESTSERVER), name, "--tcp", "80", "--udp", "53", "--http", "8080",
                     "--health-file", str(health)], netns=ns, log=self.workdir / f"{name}.log")
        wait_for(lambda: "ready" in p.log(), 10, what=f"test server {name}")
        self.backends[name] = p

    def stop_backend(self, name):
        p = self.backends.pop(name, None)
        if p:
            p.stop()

    def set_unhealthy(self, name, unhealthy=True):
        f = self.workdir / f"{name}.unhealthy"
        if unhealthy:
            f.write_text("x")
        elif f.exists():
            f.unlink()

    # balancer
    def start_dataplane(self, extra=()):
        self.dataplane = Dataplane(self.workdir, ["net_af_packet0,iface=eth0,qpairs=1"], "net_af_packet0",
                                   netns=self.lb, exception="fl0", conn_capacity=self.conn_capacity,
                                   extra=extra)
        # The dataplane's control socket lives where fulcrumd's configuration says.
        if self.dp_socket.exists() or self.dp_socket.is_symlink():
            self.dp_socket.unlink()
        self.dp_socket.symlink_to(self.dataplane.socket)
        sh("echo 1 > /proc/sys/net/ipv6/conf/fl0/disable_ipv6", netns=self.lb)
        run("ip", "addr", "add", f"{self.LB}/24", "dev", "fl0", netns=self.lb)
        for vip in self.vips:
            run("ip", "addr", "add", f"{vip}/32", "dev", "fl0", netns=self.lb)

    def stop_dataplane(self):
        if self.dataplane:
            rc = self.dataplane.stop()
            self.dataplane = None
            return rc
        return 0

    def config(self, services, health=None, extra=None):
        """fulcrumd's configuration (JSON is valid YAML)."""
        cfg = {"dataplane": {"control_socket": str(self.dp_socket), "hash_seed": 7},
               "admin": {"socket": str(self.admin_socket), "state_file": str(self.state_file)},
               "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
               "health_check": health or {"type": "tcp", "interval": "500ms", "timeout": "300ms", "rise": 2, "fall": 2},
               "services": services}
        if extra:
            cfg.update(extra)
        return cfg

    def write_config(self, cfg, name="fulcrum.yaml"):
        path = self.workdir / name
        path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2))
        return path

    def start_fulcrumd(self, config_path, wait_published=True):
        self.config_path = config_path
        self.fulcrumd = Process([str(FULCRUMD), "--config", str(config_path)], netns=self.lb,
                                log=self.workdir / f"fulcrumd-{unique('')}.log")
        wait_for(lambda: self.admin_socket.exists() or not self.fulcrumd.alive(), 15, what="fulcrumd admin socket")
        if not self.fulcrumd.alive():
            raise RuntimeError(f"fulcrumd exited:\n{self.fulcrumd.log()}")
        if wait_published:
            wait_for(lambda: self.status().get("published_generation", 0) > 0, 20,
                     what=f"fulcrumd's first publish; log:\n{self.fulcrumd.log()}")

    def stop_fulcrumd(self):
        if self.fulcrumd:
            rc = self.fulcrumd.stop()
            self.fulcrumd = None
            return rc
        return 0

    def admin(self, request):
        return admin_request(self.admin_socket, request)

    def status(self):
        try:
            return self.admin({"command": "status"})
        except OSError:
            return {}

    def wait_published(self, timeout=5):
        """Waits until fulcrumd has nothing left to publish and the dataplane runs its latest."""
        def done():
            st = self.status()
            return (st and not st["publish_pending"] and
                    self.dataplane.counters()["generation"] == st["published_generation"])
        wait_for(done, timeout, 0.05, what="fulcrumd to publish its state")

    def servers_state(self, service):
        r = self.admin({"command": "servers", "service": service})
        return {s["address"]: s for s in r["servers"]}

    def ctl(self, *args, check=False):
        return run(str(FULCRUMCTL), "--socket", str(self.admin_socket), *args, netns=self.lb, check=check)

    def metrics(self):
        return run("curl", "-s", "--max-time", "5", f"http://127.0.0.1:{self.metrics_port}/metrics",
                   netns=self.lb).stdout

    def close(self):
        self.stop_fulcrumd()
        self.stop_dataplane()
        for name in list(self.backends):
            self.stop_backend(name)
        self.topo.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- planned dataplane restart -----------------------------------------------------------

def restart_dataplane(lab, handover=True, between=None):
    """Restarts only the lab's dataplane as a planned restart or upgrade does: SIGTERM, then a
    new process. With `handover` the new process restores the state file the old one wrote at
    SIGTERM (its connection tables and snapshot; docs/deployment.md), else it starts empty.
    `between()`, if given, runs while no dataplane runs. fulcrumd keeps running and reconnects
    by itself. Returns the new Dataplane."""
    old = lab.dataplane
    state = old.socket.with_suffix(".state")  # the default: next to the control socket
    rc = lab.stop_dataplane()
    if rc != 0:
        raise RuntimeError(f"fulcrum-dataplane exited with {rc} on SIGTERM:\n{old.log()}")
    if not handover:
        with contextlib.suppress(FileNotFoundError):
            state.unlink()
    elif not state.is_file():
        raise RuntimeError(f"the stopped dataplane wrote no state file {state}:\n{old.log()}")
    if between:
        between()
    lab.start_dataplane(["--state-file", str(state)] if handover else ["--no-state-file"])
    return lab.dataplane
