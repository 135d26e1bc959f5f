"""The dataplane's control socket: snapshot loads (accepted, or rejected with the reason while
the running one stays), counters, health, and clear errors for bad requests."""
import json
import os
import socket
import stat
import struct
import subprocess

import pytest

import fulcrumlab
from pcaputil import write_pcap


def spec(gen, servers=("198.18.2.1", "198.18.2.2")):
    return {"generation": gen, "services": [
        {"id": 1, "name": "web", "vip": "198.18.1.1", "port": 80, "table_size": 251,
         "servers": [{"slot": i, "address": a, "mac": f"02:00:00:00:02:{i:02x}"} for i, a in enumerate(servers)]}]}


def test_socket_is_private(dp):
    mode = stat.S_IMODE(os.stat(dp.socket).st_mode)
    assert mode == 0o600


def test_load_get_and_generations(dp, tmp_path):
    with dp.client() as c:
        h = c.health()
        assert h["snapshot_loaded"] is False and h["generation"] == 0
        with pytest.raises(fulcrumlab.ControlError, match="no snapshot loaded"):
            c.get_snapshot()
        s5 = fulcrumlab.snapshot_bytes(spec(5), tmp_path)
        assert c.load_snapshot(s5) == 5
        assert c.get_snapshot() == s5
        assert c.health()["generation"] == 5
        # Same generation again is fine (a re-publish); an older one is refused.
        assert c.load_snapshot(s5) == 5
        with pytest.raises(fulcrumlab.ControlError, match="generation 4 is older than the running generation 5"):
            c.load_snapshot(fulcrumlab.snapshot_bytes(spec(4), tmp_path))
        s6 = fulcrumlab.snapshot_bytes(spec(6, ("198.18.2.1",)), tmp_path)
        assert c.load_snapshot(s6) == 6
        assert [s["address"] for s in c.counters()["servers"]] == ["198.18.2.1"]


def test_corrupt_snapshots_are_refused_and_the_running_one_stays(dp, tmp_path):
    with dp.client() as c:
        good = fulcrumlab.snapshot_bytes(spec(7), tmp_path)
        c.load_snapshot(good)
        bad = bytearray(good)
        bad[200] ^= 0xFF
        with pytest.raises(fulcrumlab.ControlError, match="checksum mismatch"):
            c.load_snapshot(bytes(bad))
        with pytest.raises(fulcrumlab.ControlError, match="truncated"):
            c.load_snapshot(good[:100])
        with pytest.raises(fulcrumlab.ControlError, match="bad magic"):
            c.load_snapshot(b"\0" * 4096)
        with pytest.raises(fulcrumlab.ControlError, match="truncated"):
            c.load_snapshot(b"")
        assert c.get_snapshot() == good
        assert c.health()["generation"] == 7


def test_bad_requests_get_errors_and_the_connection_survives(dp):
    with dp.client() as c:
        status, body = c.raw(99)
        assert status == 1 and "unknown request op 99" in json.loads(body)["error"]
        assert c.health()["status"] == "running"  # same connection still works
    # A frame longer than the protocol allows: an error, then the connection is closed.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(str(dp.socket))
    s.sendall(struct.pack("<IB", 0x7FFFFFFF, 2))
    hdr = s.recv(5)
    length, status = struct.unpack("<IB", hdr)
    body = b""
    while len(body) < length - 1:
        body += s.recv(length - 1 - len(body))
    assert status == 1 and "outside" in json.loads(body)["error"]
    assert s.recv(1) == b""
    s.close()
    # A client that disconnects mid-request does not disturb the server.
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(dp.socket))
    s.sendall(struct.pack("<IB", 1000, 1) + b"partial")
    s.close()
    with dp.client() as c:
        assert c.health()["status"] == "running"


def test_counters_shape(dp):
    c = dp.counters()
    for k in ("rx", "forwarded", "replied", "to_kernel", "dropped", "drops", "queues", "conntables", "ports",
              "services", "servers", "generation"):
        assert k in c
    assert c["ports"][0]["role"] == "uplink"
    assert "too_big" in c["drops"] and "no_service" in c["drops"]


def test_second_dataplane_on_the_same_socket_is_refused(dp, tmp_path):
    write_pcap(tmp_path / "e2.pcap", [])
    with pytest.raises(RuntimeError, match="another process is serving the control socket"):
        d2 = fulcrumlab.Dataplane.__new__(fulcrumlab.Dataplane)
        d2.workdir = tmp_path
        d2.prefix = fulcrumlab.unique("fl")
        d2.socket = dp.socket
        fulcrumlab.Process.__init__(
            d2, [str(fulcrumlab.DATAPLANE), "--no-huge", "-m", "128", "--no-pci", "--file-prefix", d2.prefix,
                 "-l", "0-1", "--vdev", f"net_pcap0,rx_pcap={tmp_path}/e2.pcap,tx_pcap={tmp_path}/o2.pcap",
                 "--", "--uplink", "net_pcap0", "--control-socket", str(dp.socket)],
            log=tmp_path / "d2.log")
        try:
            d2.proc.wait(30)
        finally:
            d2.stop()
        raise RuntimeError(d2.log())
    assert dp.alive()


@pytest.mark.parametrize("args, message", [
    (["--exception", "a,b=c"], "'a,b=c' is not an interface name"),
    (["--exception", "x" * 16], "is not an interface name: 1 to 15"),
    (["--mbufs", "300"], "--mbufs 300 is fewer packet buffers than the"),
], ids=["exception-devargs", "exception-length", "mbufs"])
def test_bad_startup_options_are_refused_naming_the_option(tmp_path, args, message):
    """An exception interface name that is not one (it went into the TAP driver's device
    arguments as given) and a pool too small for the queues are refused at start, naming the
    option and what it takes, instead of a misleading error from the driver or the EAL."""
    prefix = fulcrumlab.unique("flo")
    try:
        r = subprocess.run([str(fulcrumlab.DATAPLANE), "--no-huge", "-m", "256", "--no-pci", "--file-prefix", prefix,
                            "-l", "0-1", "--log-level", "*:warning", "--vdev", "net_null0", "--",
                            "--uplink", "net_null0", "--no-state-file"] + args,
                           capture_output=True, text=True, timeout=60)
    finally:
        fulcrumlab.remove_dpdk_runtime_dir(prefix)
    assert r.returncode != 0 and message in r.stdout + r.stderr, (r.returncode, r.stdout + r.stderr)
