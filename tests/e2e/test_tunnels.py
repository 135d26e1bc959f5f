"""End to end through tunnels: `ipip` (IPv4-in-IPv4 and IPv6-in-IPv6) and `gue` services with
real servers. This kernel has no ipip / ip6_tunnel / fou modules, so the servers receive only
through fulcrum-decap (ebpf/decap.bpf.c) attached to their interface, in XDP or tc mode."""
import json

import pytest

import fulcrumlab

DECAP = fulcrumlab.BUILD / "ebpf" / "tools" / "fulcrum-decap"

pytestmark = pytest.mark.skipif(not DECAP.exists(), reason=f"{DECAP} is not built (eBPF disabled?)")

SERVERS = {"s1": "198.18.0.11", "s2": "198.18.0.12"}
SERVERS6 = {"s1": "2001:db8::11", "s2": "2001:db8::12"}
VIP = "198.18.0.100"
VIP6 = "2001:db8::100"
CLIENT6 = "2001:db8::1"
LB6 = "2001:db8::2"
PORT = 8000  # the lab's testserver.py holds 80, 53 and 8080 (IPv4 only)
GUE_PORT = 6081  # not the default, so the configuration really reaches both ends


def enable_ipv6(ns, ifname, addrs):
    fulcrumlab.sh(f"echo 0 > /proc/sys/net/ipv6/conf/{ifname}/accept_dad; "
                  f"echo 0 > /proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", netns=ns)
    for a in addrs:
        fulcrumlab.run("ip", "addr", "add", a, "dev", ifname, "nodad", netns=ns)


@pytest.fixture
def tlab(tmp_path):
    """The usual lab (client, balancer, servers on one segment, VIP on the servers' loopback)
    plus IPv6 on the client, the balancer's fl0 and the servers, and on each server an HTTP
    server on both families answering GET /name with the server's name."""
    with fulcrumlab.Lab(tmp_path, SERVERS, vips=[VIP], tag="tun") as lab:
        enable_ipv6(lab.client, "eth0", [f"{CLIENT6}/64"])
        enable_ipv6(lab.lb, "fl0", [f"{LB6}/64"])
        # Deprecated at once, so the balancer's own traffic (health checks) never takes the
        # VIP as its source: the servers hold the VIP too and would answer themselves.
        fulcrumlab.run("ip", "addr", "add", f"{VIP6}/128", "dev", "fl0", "nodad", "preferred_lft", "0",
                       netns=lab.lb)
        for name, addr6 in SERVERS6.items():
            ns = lab.topo.ns(name)
            enable_ipv6(ns, "eth0", [f"{addr6}/64"])
            fulcrumlab.run("ip", "addr", "add", f"{VIP6}/128", "dev", "lo", netns=ns)
            root = tmp_path / f"www-{name}"
            root.mkdir()
            (root / "name").write_text(name)
            p = fulcrumlab.Process(["/usr/bin/python3", "-u", "-m", "http.server", str(PORT), "--bind", "::",
                                    "--directory", str(root)], netns=ns, log=tmp_path / f"http-{name}.log")
            fulcrumlab.wait_for(lambda: "Serving HTTP" in p.log(), 10, what=f"http.server on {name}")
            lab.backends[f"http-{name}"] = p  # stopped by lab.close()
        yield lab


def decap(lab, server, *args, check=True):
    return fulcrumlab.run(str(DECAP), "eth0", *args, netns=lab.topo.ns(server), check=check)


def decap_counters(lab, server):
    return json.loads(decap(lab, server, "--stats").stdout)["counters"]


def http_get(lab, vip, timeout=3):
    host = f"[{vip}]" if ":" in vip else vip
    r = fulcrumlab.run("curl", "-s", "-g", "--max-time", str(timeout), f"http://{host}:{PORT}/name",
                       netns=lab.client, check=False, timeout=timeout + 5)
    return r.stdout.strip() if r.returncode == 0 else None


def start(lab, vip, servers, forwarding):
    cfg = lab.config([{"name": "web", "vip": vip, "port": PORT, "protocol": "tcp", "forwarding": forwarding,
                       "table_size": 251, "servers": [{"address": a} for a in servers.values()]}],
                     health={"type": "tcp", "interval": "300ms", "timeout": "200ms", "rise": 1, "fall": 2})
    cfg["dataplane"]["encapsulation"] = {"source_v4": "198.18.255.0/24", "source_v6": "2001:db8:ffff::/64",
                                         "gue_port": GUE_PORT}
    lab.start_fulcrumd(lab.write_config(cfg))
    fulcrumlab.wait_for(lambda: all(s["state"] == "up" for s in lab.servers_state("web").values()), 15,
                        what=f"both servers up; fulcrumd log:\n{lab.fulcrumd.log()}")
    lab.wait_published(5)


def through_tunnel(lab, vip, servers, mode, counter, extra=()):
    """Attaches fulcrum-decap in `mode` on every server, checks 20 HTTP requests to `vip` are
    answered (by both servers) and the servers' `counter` moved; detaches in any case."""
    before = {}
    try:
        for name in servers:
            out = decap(lab, name, "--mode", mode, *extra).stdout
            assert "attached" in out, out
            before[name] = decap_counters(lab, name)
        answers = [http_get(lab, vip) for _ in range(20)]
        assert all(a in servers for a in answers), answers
        assert set(answers) == set(servers), f"one server took every flow: {answers}"
        for name in servers:
            c = decap_counters(lab, name)
            served = answers.count(name)
            # Each served request is at least SYN, ACK + request, ACK of the reply, FIN, ACK.
            assert c[counter] - before[name][counter] >= 3 * served, (name, served, c)
            assert c["drop_malformed"] == 0 and c["drop_adjust"] == 0, c
    finally:
        for name in servers:
            decap(lab, name, "--detach", check=False)
    for name in servers:
        r = decap(lab, name, "--stats", check=False)
        assert r.returncode != 0 and "no fulcrum-decap program" in r.stderr, r


def test_ipip_reaches_servers_only_with_decap(tlab):
    start(tlab, VIP, SERVERS, "ipip")
    # Without the program the kernel has nothing to take IP protocol 4 apart: no answer.
    assert http_get(tlab, VIP, timeout=2) is None
    through_tunnel(tlab, VIP, SERVERS, "xdp", "decap_ipip4")


def test_ipip_in_tc_mode(tlab):
    start(tlab, VIP, SERVERS, "ipip")
    through_tunnel(tlab, VIP, SERVERS, "tc", "decap_ipip4")


def test_ip6ip6(tlab):
    start(tlab, VIP6, SERVERS6, "ipip")
    through_tunnel(tlab, VIP6, SERVERS6, "xdp", "decap_ipip6")


def test_gue(tlab):
    start(tlab, VIP, SERVERS, "gue")
    assert http_get(tlab, VIP, timeout=2) is None
    through_tunnel(tlab, VIP, SERVERS, "tc", "decap_gue4", ["--gue-port", str(GUE_PORT)])


def test_gue_ipv6(tlab):
    start(tlab, VIP6, SERVERS6, "gue")
    through_tunnel(tlab, VIP6, SERVERS6, "xdp", "decap_gue6", ["--gue-port", str(GUE_PORT)])


def test_gue_on_another_port_is_not_decapsulated(tlab):
    start(tlab, VIP, SERVERS, "gue")
    try:
        for name in SERVERS:
            decap(tlab, name, "--mode", "tc")  # the default port 6080, not the service's 6081
        assert http_get(tlab, VIP, timeout=2) is None
        assert sum(decap_counters(tlab, n)["pass_not_tunnel"] for n in SERVERS) > 0
        assert all(decap_counters(tlab, n)["decap_gue4"] == 0 for n in SERVERS)
    finally:
        for name in SERVERS:
            decap(tlab, name, "--detach", check=False)
