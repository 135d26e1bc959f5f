"""End to end: the dataplane on an AF_XDP uplink with Fulcrum's XDP front (DPDK's net_af_xdp
loads ebpf/xdp_front.bpf.o with `xdp_prog=`), fulcrumd filling the front's maps from its `xdp:`
section, real clients and DSR servers in network namespaces.

    client   198.18.0.1   (allowed)   --+
    denied   198.18.0.70  (198.18.0.64/27 denied)
    flooder  198.18.0.99  (allowed, SYN-limited)
    lb       198.18.0.2 on eth0 itself (the kernel keeps the host's traffic), VIP 198.18.0.100
    s1, s2   DSR servers

No TAP: the front passes everything that is not VIP traffic to the balancer's kernel, which
holds the host address and the VIP (for ARP) on eth0."""
import contextlib
import socket
import subprocess
import time

import pytest
from scapy.all import IP, TCP, Ether, raw

import fulcrumlab
from fulcrumlab import Dataplane, Process, Topology, run, wait_for

XDP_PROG = fulcrumlab.BUILD / "ebpf" / "xdp_front.bpf.o"
LB, VIP = "198.18.0.2", "198.18.0.100"
CLIENTS = {"client": "198.18.0.1", "denied": "198.18.0.70", "flooder": "198.18.0.99"}
SERVERS = {"s1": "198.18.0.11", "s2": "198.18.0.12"}
SYN_RATE, SYN_BURST = 2, 5

SEND_MANY = ("import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
             "s.bind((sys.argv[1], 0)); [s.send(bytes.fromhex(h)) for h in sys.argv[2:]]")

pytestmark = pytest.mark.skipif(not XDP_PROG.exists(), reason=f"{XDP_PROG} was not built (clang, bpftool, libbpf)")


class XdpLab:
    def __init__(self, workdir):
        self.workdir = workdir
        self.dp_socket = workdir / "dataplane.sock"
        self.admin_socket = workdir / "admin.sock"
        self.topo = Topology("xf")
        self.procs = []
        self.dataplane = self.fulcrumd = None
        try:
            self.ns = {n: self.topo.add_host(n, [f"{a}/24"], ipv6=False) for n, a in CLIENTS.items()}
            self.lb = self.topo.add_host("lb", [], ipv6=False)
            for name, addr in SERVERS.items():
                ns = fulcrumlab.add_dsr_server(self.topo, name, addr, [VIP])
                p = Process(["/usr/bin/python3", str(fulcrumlab.TESTSERVER), name, "--tcp", "80"], netns=ns,
                            log=workdir / f"{name}.log")
                wait_for(lambda: "ready" in p.log(), 10, what=f"test server {name}")
                self.procs.append(p)
            self.client_mac = {n: self.topo.mac(n) for n in CLIENTS}
            self.lb_mac = self.topo.mac("lb")
            self.dataplane = Dataplane(
                workdir, [f"net_af_xdp0,iface=eth0,start_queue=0,queue_count=1,xdp_prog={XDP_PROG}"], "net_af_xdp0",
                netns=self.lb, memory=512)
            self.dp_socket.symlink_to(self.dataplane.socket)
            cfg = {"dataplane": {"control_socket": str(self.dp_socket), "hash_seed": 7},
                   "admin": {"socket": str(self.admin_socket)},
                   "metrics": {"enabled": False},
                   "health_check": {"type": "tcp", "interval": "500ms", "timeout": "300ms", "rise": 1, "fall": 2},
                   "interface": {"name": "eth0", "addresses": [f"{LB}/24"]},
                   "xdp": {"interface": "eth0", "acl": {"default": "allow", "deny": ["198.18.0.64/27"]},
                           "syn_limit": {"rate": SYN_RATE, "burst": SYN_BURST}},
                   "services": [{"name": "web", "vip": VIP, "port": 80, "table_size": 251,
                                 "servers": [{"address": a} for a in SERVERS.values()]}]}
            path = workdir / "fulcrum.yaml"
            path.write_text(__import__("json").dumps(cfg, indent=2))
            self.fulcrumd = Process([str(fulcrumlab.FULCRUMD), "--config", str(path)], netns=self.lb,
                                    log=workdir / "fulcrumd.log")
            wait_for(lambda: self.admin_socket.exists() or not self.fulcrumd.alive(), 20, what="fulcrumd admin socket")
            assert self.fulcrumd.alive(), self.fulcrumd.log()
            wait_for(lambda: (self.acl() or {}).get("applied") and (self.acl() or {}).get("installed", {}).get("vips_v4") == 1,
                     20, what=f"fulcrumd to fill the XDP front's maps; log:\n{self.fulcrumd.log()}")
            wait_for(lambda: self.servers_up() == len(SERVERS), 20, what="both servers up")
            wait_for(lambda: (self.admin({"command": "status"}) or {}).get("published_generation", 0) > 0, 20,
                     what="fulcrumd's first publish")
        except BaseException:
            self.close()
            raise

    def admin(self, req):
        try:
            return fulcrumlab.admin_request(self.admin_socket, req)
        except OSError:
            return None

    def acl(self):
        return self.admin({"command": "acl"})

    def packets(self):
        return {p["reason"]: p["packets"] or 0 for p in self.acl()["packets"]}

    def servers_up(self):
        r = self.admin({"command": "servers", "service": "web"}) or {}
        return sum(1 for s in r.get("servers", []) if s.get("state") == "up")

    def forwarded(self):
        return self.dataplane.counters()["forwarded"]

    def close(self):
        for p in [self.fulcrumd] + self.procs:
            if p:
                p.stop()
        if self.dataplane:
            self.dataplane.stop()
        self.topo.close()


@pytest.fixture
def xlab(tmp_path):
    lab = XdpLab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def connect(ns, host, port, timeout):
    """True when a TCP connection to host:port from namespace `ns` is accepted in time."""
    s = fulcrumlab.ns_socket(ns, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def test_allowed_client_reaches_the_servers_denied_prefix_gets_nothing(xlab):
    acl = xlab.acl()
    assert acl["attached"] and acl["program_name"] == "fl_xdp_front" and acl["deny"] == ["198.18.0.64/27"], acl
    before = xlab.packets()
    names = {fulcrumlab.connect_once(xlab.ns["client"], VIP, 80) for _ in range(10)}
    assert names <= set(SERVERS) and names, names
    assert xlab.packets()["admitted"] - before["admitted"] >= 10 * 2  # SYN and ACK of each, at least
    # The counts are read where they are made: the front's in XDP, `forwarded` in the
    # dataplane. A frame the front admitted (the allowed client's last FIN or ACK) may still be
    # on its way through the AF_XDP ring: compare only once the dataplane has received every
    # admitted frame (its rx is exactly what the front redirected to it).
    def caught_up():
        wait_for(lambda: xlab.dataplane.counters()["rx"] == xlab.packets()["admitted"], 10,
                 what="the dataplane to receive every frame the front admitted")
    caught_up()
    mid, fwd = xlab.packets(), xlab.forwarded()
    assert not connect(xlab.ns["denied"], VIP, 80, timeout=2)
    # Dropped in XDP: counted there, never seen by the dataplane, which forwarded only what
    # the front admitted meanwhile (the allowed client's last FINs, if late).
    wait_for(lambda: xlab.packets()["acl_deny"] > mid["acl_deny"], 10, what="acl_deny to count the SYNs")
    caught_up()
    assert xlab.forwarded() - fwd == xlab.packets()["admitted"] - mid["admitted"]
    r = fulcrumlab.run(str(fulcrumlab.FULCRUMCTL), "--socket", str(xlab.admin_socket), "acl", netns=xlab.lb)
    assert "198.18.0.64/27" in r.stdout and "acl_deny" in r.stdout, r.stdout


def test_the_host_keeps_its_own_traffic(xlab):
    """Ping and a TCP service on the host's own address are answered by its kernel (the front
    passes them), as SSH would be."""
    r = run("ping", "-c", "2", "-W", "2", LB, netns=xlab.ns["client"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    listener = Process(["/usr/bin/python3", "-c",
                        "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                        f"s.bind(('{LB}', 2222)); s.listen(); print('ready', flush=True); c, _ = s.accept(); "
                        "c.sendall(b'SSH-2.0-test\\r\\n'); c.close()"], netns=xlab.lb, log=xlab.workdir / "listener.log")
    try:
        wait_for(lambda: "ready" in listener.log(), 10, what="the host's listener")
        s = fulcrumlab.ns_socket(xlab.ns["client"], socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect((LB, 2222))
        assert s.recv(64).startswith(b"SSH-2.0-")
        s.close()
    finally:
        listener.stop()
    assert xlab.packets()["non_vip"] > 0


def test_syn_flood_from_one_source_is_cut_to_its_rate(xlab):
    """200 SYNs from one source in a burst: at most burst + rate x elapsed reach the dataplane;
    another client keeps connecting meanwhile."""
    before, fwd0 = xlab.packets(), xlab.forwarded()
    frames = [Ether(src=xlab.client_mac["flooder"], dst=xlab.lb_mac) / IP(src=CLIENTS["flooder"], dst=VIP) /
              TCP(sport=20000 + i, dport=80, flags="S", seq=i) for i in range(200)]
    start = time.monotonic()
    fulcrumlab.run("/usr/bin/python3", "-c", SEND_MANY, "eth0", *[raw(f).hex() for f in frames],
                   netns=xlab.ns["flooder"])
    elapsed = time.monotonic() - start
    wait_for(lambda: xlab.packets()["syn_rate"] - before["syn_rate"] +
             xlab.packets()["admitted"] - before["admitted"] >= 200, 10, what="every flood SYN to be counted")
    limited = xlab.packets()["syn_rate"] - before["syn_rate"]
    syns = 200 - limited  # admitted; the servers' SYN-ACKs then draw RSTs from the flooder's kernel
    assert SYN_BURST <= syns <= SYN_BURST + SYN_RATE * (elapsed + 1), (syns, limited, elapsed)
    # The dataplane forwarded exactly what the front admitted (the SYNs and those RSTs).
    wait_for(lambda: xlab.forwarded() - fwd0 == xlab.packets()["admitted"] - before["admitted"], 10,
             what="the dataplane to forward exactly what the front admitted")
    # Another source has a bucket of its own.
    assert fulcrumlab.connect_once(xlab.ns["client"], VIP, 80) in SERVERS
