"""The dataplane's counters through DPDK telemetry, read with dpdk-telemetry.py."""
import json
import shutil
import subprocess

import pytest
from scapy.all import IP, TCP, Ether, raw

import fulcrumlab
from pcaputil import write_pcap


def telemetry(prefix, *commands):
    tool = shutil.which("dpdk-telemetry.py")
    if not tool:
        pytest.skip("dpdk-telemetry.py not installed (Debian package dpdk-dev)")
    out = subprocess.run(["/usr/bin/python3", tool, "-f", prefix], input="\n".join(commands) + "\n",
                         capture_output=True, text=True, timeout=30).stdout
    # One JSON reply per command, in order, keyed by the command without its parameter.
    replies = [json.loads(line) for line in (x.strip() for x in out.splitlines()) if line.startswith("{")]
    assert len(replies) == len(commands), out
    return {cmd: next(iter(rep.values())) for cmd, rep in zip(commands, replies)}


def test_counters_are_dpdk_telemetry_commands(tmp_path):
    spec = {"generation": 4, "services": [
        {"id": 1, "name": "web", "vip": "198.18.1.1", "port": 80, "table_size": 251,
         "servers": [{"slot": i, "address": f"198.18.2.{i + 1}", "mac": f"02:00:00:00:02:{i:02x}"} for i in range(3)]}]}
    frames = [raw(Ether(dst="02:70:63:61:70:00") / IP(src="198.18.0.7", dst="198.18.1.1") / TCP(sport=1000 + i, dport=80))
              for i in range(40)]
    write_pcap(tmp_path / "in.pcap", frames)
    snap = fulcrumlab.build_snapshot(spec, tmp_path / "s.snap")
    dp = fulcrumlab.Dataplane(tmp_path, [f"net_pcap0,rx_pcap={tmp_path}/in.pcap,tx_pcap={tmp_path}/out.pcap"],
                              "net_pcap0", snapshot=snap)
    try:
        counters = dp.wait_rx(40)
        r = telemetry(dp.prefix, "/fulcrum/stats", "/fulcrum/services", "/fulcrum/servers", "/fulcrum/servers,web",
                      "/fulcrum/ports", "/fulcrum/health")
    finally:
        assert dp.stop() == 0, dp.log()
    stats = r["/fulcrum/stats"]
    assert stats["rx"] == counters["rx"] == 40
    assert stats["forwarded"] == 40 and stats["generation"] == 4
    assert stats["drop_no_service"] == 0
    assert r["/fulcrum/services"]["web"]["new_connections"] == 40
    servers = r["/fulcrum/servers"]
    assert set(servers) == {"web_slot0", "web_slot1", "web_slot2"}
    assert sum(s["new_connections"] for s in servers.values()) == 40
    assert r["/fulcrum/servers,web"] == servers
    assert r["/fulcrum/ports"]["uplink"]["rx_packets"] == 40
    assert r["/fulcrum/health"]["status"] == "running"
