"""Smoke test on a real L2 segment: a client, the balancer (net_af_packet on a veth, TAP
exception port holding the host address and the VIP) and three servers running real HTTP
servers with the VIP on their loopback (DSR). Repeated curl to the VIP succeeds and reaches
every server."""
import collections

import pytest

import fulcrumlab

VIP = "198.18.0.100"
SERVERS = {"s1": "198.18.0.11", "s2": "198.18.0.12", "s3": "198.18.0.13"}


def start_web_server(topo, host, workdir):
    ns = topo.ns(host)
    root = workdir / f"www-{host}"
    root.mkdir()
    (root / "index.html").write_text(host)
    return fulcrumlab.Process(["/usr/bin/python3", "-m", "http.server", "80", "--bind", "0.0.0.0",
                               "--directory", str(root)], netns=ns, log=workdir / f"{host}-http.log")


def make_dsr_server(topo, host):
    ns = topo.ns(host)
    fulcrumlab.run("ip", "addr", "add", f"{VIP}/32", "dev", "lo", netns=ns)
    for k, v in (("arp_ignore", 1), ("arp_announce", 2)):
        for dev in ("all", "eth0"):
            fulcrumlab.sh(f"echo {v} > /proc/sys/net/ipv4/conf/{dev}/{k}", netns=ns)


@pytest.fixture
def lab(tmp_path):
    with fulcrumlab.Topology("sm") as topo:
        topo.add_host("client", ["198.18.0.1/24"], ipv6=False)
        lb = topo.add_host("lb", [], ipv6=False)
        fulcrumlab.prepare_dataplane_uplink(lb, "eth0")
        procs = []
        for h, a in SERVERS.items():
            topo.add_host(h, [f"{a}/24"], ipv6=False)
            make_dsr_server(topo, h)
            procs.append(start_web_server(topo, h, tmp_path))
        spec = {"generation": 1, "hash_seed": 11, "services": [
            {"id": 1, "name": "web", "vip": VIP, "port": 80, "table_size": 4099,
             "servers": [{"slot": i, "address": a, "mac": topo.mac(h)} for i, (h, a) in enumerate(SERVERS.items())]}]}
        snap = fulcrumlab.build_snapshot(spec, tmp_path / "web.snap")
        dp = fulcrumlab.Dataplane(tmp_path, ["net_af_packet0,iface=eth0,qpairs=1"], "net_af_packet0",
                                  netns=lb, exception="fl0", snapshot=snap)
        try:
            fulcrumlab.sh("echo 1 > /proc/sys/net/ipv6/conf/fl0/disable_ipv6", netns=lb)
            fulcrumlab.run("ip", "addr", "add", "198.18.0.2/24", "dev", "fl0", netns=lb)
            fulcrumlab.run("ip", "addr", "add", f"{VIP}/32", "dev", "fl0", netns=lb)
            for h in SERVERS:
                fulcrumlab.wait_for(lambda h=h: fulcrumlab.run("ss", "-ltn", netns=topo.ns(h)).stdout.count(":80 ") > 0,
                                    10, what=f"web server on {h}")
            yield topo, dp
        finally:
            rc = dp.stop()
            for p in procs:
                p.stop()
        assert rc == 0, dp.log()


def test_curl_through_the_balancer_reaches_every_server(lab):
    topo, dp = lab
    client = topo.ns("client")
    # The balancer's host address answers through the exception path (ARP + ICMP via the TAP).
    fulcrumlab.run("ping", "-c", "1", "-W", "2", "198.18.0.2", netns=client)
    seen = collections.Counter()
    for _ in range(30):
        r = fulcrumlab.run("curl", "-s", "--max-time", "5", f"http://{VIP}/", netns=client, check=False)
        assert r.returncode == 0, f"curl failed ({r.returncode}); dataplane counters: {dp.counters()}"
        seen[r.stdout.strip()] += 1
    assert set(seen) == set(SERVERS), f"responses per server: {dict(seen)}"
    c = dp.counters()
    assert c["forwarded"] > 0
    assert sum(s["new_connections"] for s in c["servers"]) >= 30
    assert c["dropped"] == 0, c["drops"]
