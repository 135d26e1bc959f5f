"""Restart handover through the real dataplane on a pcap uplink: flows opened before a
snapshot with changed weights keep their servers across a SIGTERM and restart (the state file
carries the connection tables), new flows follow the new weights, and a damaged state file is
refused with a log line while the dataplane starts empty."""
import struct
import subprocess

import pytest

import fulcrumlab
from pcaputil import read_pcap, write_pcap

OWN = bytes.fromhex("027063617000")
FLOWS = 1000


def ip_checksum(h):
    s = sum(struct.unpack("!10H", h))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(i, flags):
    """A TCP frame of client flow i (distinct source address and port per flow) to the VIP."""
    src = (198 << 24) | (19 << 16) | (i >> 8)
    sport = 1024 + (i & 255)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0x4000, 64, 6, 0,
                               src.to_bytes(4, "big"), bytes([198, 18, 1, 1])))
    struct.pack_into("!H", ip, 10, ip_checksum(bytes(ip)))
    tcp = struct.pack("!HHIIBBHHH", sport, 80, 1, 0, 0x50, flags, 65535, 0, 0)
    return OWN + bytes.fromhex("0200000000c1") + b"\x08\x00" + bytes(ip) + tcp


SYN, ACK = 0x02, 0x10


def spec(gen, weights):
    return {"generation": gen, "hash_seed": 77, "services": [
        {"id": 1, "name": "web", "vip": "198.18.1.1", "port": 80, "table_size": 4099,
         "servers": [{"slot": i, "address": f"198.18.2.{i + 1}", "mac": f"02:00:00:00:02:{i:02x}",
                      "weight": w} for i, w in enumerate(weights)]}]}


OLD_WEIGHTS = [1, 1, 1, 1]
NEW_WEIGHTS = [0, 1, 1, 4]  # server 0 drained, server 3 takes most new connections


def key(f):
    return f[26:30] + f[34:36]  # client address and port


def run(workdir, name, frames, snapshot=None, state=None, during=None):
    """One dataplane run over `frames`; `during(dp)` runs once every frame was received.
    Returns (output frames, what `during` returned, log)."""
    inp = workdir / f"{name}-in.pcap"
    out = workdir / f"{name}-out.pcap"
    write_pcap(inp, frames)
    extra = ["--state-file", str(state)] if state else ["--no-state-file"]
    dp = fulcrumlab.Dataplane(workdir, [f"net_pcap0,rx_pcap={inp},tx_pcap={out}"], "net_pcap0",
                              snapshot=snapshot, extra=extra)
    try:
        dp.wait_rx(len(frames))
        result = during(dp) if during else None
    finally:
        rc = dp.stop()
    log = dp.log()
    assert rc == 0, f"dataplane exited with {rc}:\n{log}"
    return read_pcap(out), result, log


def active_by_slot(counters):
    return {s["slot"]: s["active_connections"] for s in counters["servers"]}


def test_restart_keeps_existing_flows_on_their_servers(tmp_path):
    state = tmp_path / "dataplane.state"
    snap1 = fulcrumlab.build_snapshot(spec(1, OLD_WEIGHTS), tmp_path / "s1.snap")
    snap2 = fulcrumlab.build_snapshot(spec(2, NEW_WEIGHTS), tmp_path / "s2.snap")

    # Before: FLOWS connections open under equal weights, then the weights change.
    def change_weights(dp):
        with dp.client() as c:
            assert c.load_snapshot(snap2.read_bytes()) == 2
            return c.counters()
    out, counters, log = run(tmp_path, "before", [frame(i, SYN) for i in range(FLOWS)], snapshot=snap1,
                             state=state, during=change_weights)
    assert len(out) == FLOWS
    server = {key(f): f[5] for f in out}
    assert len(server) == FLOWS and set(server.values()) == {0, 1, 2, 3}
    assert sum(active_by_slot(counters).values()) == FLOWS
    assert state.is_file(), f"no state file after SIGTERM:\n{log}"
    assert f"{FLOWS} connection(s)" in log

    # After the restart (no --snapshot: the handed-over one runs): the same flows continue,
    # and as many new ones arrive.
    frames = [frame(i, ACK) for i in range(FLOWS)] + [frame(FLOWS + i, SYN) for i in range(FLOWS)]

    def look(dp):
        with dp.client() as c:
            return c.health(), c.counters()
    out, (health, counters), log = run(tmp_path, "after", frames, state=state, during=look)
    assert health["generation"] == 2, log
    assert f"restored: {FLOWS} of {FLOWS} connection(s)" in log, log
    assert not state.with_name(state.name + ".rejected").exists()
    assert len(out) == 2 * FLOWS
    moved = [k for k, f in ((key(f), f) for f in out[:FLOWS]) if server[k] != f[5]]
    assert not moved, f"{len(moved)} of {FLOWS} restored flows reached another server"
    new = [f[5] for f in out[FLOWS:]]
    assert all(key(f) not in server for f in out[FLOWS:])
    assert new.count(0) == 0, "a drained server (weight 0) got new connections"
    assert new.count(3) > FLOWS // 2, f"weight 4 of 6 got {new.count(3)} of {FLOWS} new flows"
    # The restored entries count in their servers' active-connection gauges.
    active = active_by_slot(counters)
    assert sum(active.values()) == 2 * FLOWS
    assert active[0] == sum(1 for s in server.values() if s == 0)
    # Consumed: the file is gone, so a crash-restart cannot restore it again; this clean stop
    # wrote a fresh one.
    assert f"connection state {state} restored" in log
    assert state.is_file()

    # Control: the same flows after a restart without the handover (what used to happen).
    out, _, _ = run(tmp_path, "control", [frame(i, ACK) for i in range(FLOWS)], snapshot=snap2)
    moved = sum(1 for f in out if server[key(f)] != f[5])
    assert moved > FLOWS // 5, f"only {moved} flows moved without the handover: the test proves nothing"


def test_consumed_state_is_not_restored_twice(tmp_path):
    """A state file is removed when it is loaded: a restart after a crash (which writes
    nothing) starts empty rather than from stale tables."""
    state = tmp_path / "dp.state"
    snap1 = fulcrumlab.build_snapshot(spec(1, OLD_WEIGHTS), tmp_path / "s1.snap")
    run(tmp_path, "a", [frame(i, SYN) for i in range(50)], snapshot=snap1, state=state)
    assert state.is_file()
    inp = tmp_path / "b-in.pcap"
    write_pcap(inp, [])
    dp = fulcrumlab.Dataplane(tmp_path, [f"net_pcap0,rx_pcap={inp},tx_pcap={tmp_path}/b-out.pcap"], "net_pcap0",
                              extra=["--state-file", str(state)])
    try:
        assert not state.exists(), "the loaded state file is still there"
        assert dp.counters()["conntables"][0]["entries"] == 50
    finally:
        # A crash: no state written.
        dp.proc.kill()
        dp.stop()
    assert not state.exists()
    def health(d):
        with d.client() as c:
            return c.health()
    _, h, log = run(tmp_path, "c", [], state=state, during=health)
    assert h["generation"] == 0
    assert "no connection state at" in log


def test_a_start_that_fails_after_the_restore_puts_the_state_back(tmp_path, good_state):
    """The state is loaded before the control socket is bound: a start that fails there (the
    socket path is taken by a regular file) leaves the state file where it was, for the start
    after the fix, instead of losing every handed-over connection."""
    state = tmp_path / "dp.state"
    state.write_bytes(good_state)
    taken = tmp_path / "taken.sock"
    taken.write_text("not a socket")
    inp = tmp_path / "in.pcap"
    write_pcap(inp, [])
    prefix = fulcrumlab.unique("flf")
    try:
        r = subprocess.run([str(fulcrumlab.DATAPLANE), "--no-huge", "-m", "256", "--no-pci", "--file-prefix", prefix,
                            "-l", "0-1", "--log-level", "*:warning",
                            "--vdev", f"net_pcap0,rx_pcap={inp},tx_pcap={tmp_path}/out.pcap", "--",
                            "--uplink", "net_pcap0", "--control-socket", str(taken), "--state-file", str(state)],
                           capture_output=True, text=True, timeout=60)
    finally:
        fulcrumlab.remove_dpdk_runtime_dir(prefix)
    log = r.stdout + r.stderr
    assert r.returncode == 1 and "not a socket" in log, log
    assert "restored" in log and "connection state put back at" in log, log
    assert state.read_bytes() == good_state
    assert not state.with_name(state.name + ".consumed").exists()

    # The next start restores it, and removes it once up.
    def look(dp):
        return state.exists(), state.with_name(state.name + ".consumed").exists(), dp.counters()
    _, (present, consumed, counters), log = run(tmp_path, "again", [], state=state, during=look)
    assert not present and not consumed, log
    assert counters["conntables"][0]["entries"] == 100, log


def test_state_whose_snapshot_does_not_load_is_kept_as_rejected(tmp_path, good_state):
    """A handed-over snapshot this dataplane refuses (here: four servers, with --max-servers 2)
    makes a refused state file like a damaged one: kept as PATH.rejected, not deleted."""
    state = tmp_path / "dp.state"
    state.write_bytes(good_state)
    inp = tmp_path / "in.pcap"
    write_pcap(inp, [])
    dp = fulcrumlab.Dataplane(tmp_path, [f"net_pcap0,rx_pcap={inp},tx_pcap={tmp_path}/out.pcap"], "net_pcap0",
                              extra=["--state-file", str(state), "--max-servers", "2"])
    try:
        with dp.client() as c:
            h = c.health()
    finally:
        dp.stop()
    log = dp.log()
    assert "its snapshot does not load" in log, log
    assert h["generation"] == 0
    assert state.with_name(state.name + ".rejected").read_bytes() == good_state, log
    assert not state.exists() and not state.with_name(state.name + ".consumed").exists()


def corrupt(kind, good):
    if kind == "empty":
        return b""
    if kind == "truncated":
        return good[:-9]
    if kind == "version":
        return good[:8] + struct.pack("<I", 99) + good[12:]
    if kind == "flipped":
        b = bytearray(good)
        b[len(b) // 2] ^= 0x40
        return bytes(b)
    if kind == "foreign":
        return b"this is not a connection state file" * 10
    raise ValueError(kind)


EXPECTED = {"empty": "truncated", "truncated": "truncated", "version": "format version 99",
            "flipped": "checksum mismatch", "foreign": "bad magic"}


@pytest.fixture(scope="module")
def good_state(tmp_path_factory):
    d = tmp_path_factory.mktemp("state")
    state = d / "good.state"
    snap1 = fulcrumlab.build_snapshot(spec(1, OLD_WEIGHTS), d / "s1.snap")
    # Established connections (SYN, then ACK): the 900 s timeout applies.
    run(d, "make", [frame(i, SYN) for i in range(100)] + [frame(i, ACK) for i in range(100)], snapshot=snap1,
        state=state)
    return state.read_bytes()


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_damaged_state_is_refused_and_the_dataplane_starts_empty(tmp_path, good_state, kind):
    state = tmp_path / "dp.state"
    state.write_bytes(corrupt(kind, good_state))

    def look(dp):
        with dp.client() as c:
            return c.health(), c.counters()
    _, (health, counters), log = run(tmp_path, kind, [], state=state, during=look)
    assert health["status"] == "running"
    assert health["generation"] == 0
    assert counters["conntables"][0]["entries"] == 0
    assert "connection state refused" in log and EXPECTED[kind] in log, log
    rejected = state.with_name(state.name + ".rejected")
    assert rejected.read_bytes() == corrupt(kind, good_state), "the refused file is kept for inspection"
    assert not state.exists()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC32C = _crc32c_table()
WRITTEN_AT = 48  # offsetof(ConnStateHeader, written_unix_ms)
CHECKSUM_AT = 56  # offsetof(ConnStateHeader, checksum)


def backdate(state_bytes, ms):
    """The state file as if it had been written `ms` milliseconds earlier (resealed)."""
    b = bytearray(state_bytes)
    written = struct.unpack_from("<Q", b, WRITTEN_AT)[0]
    struct.pack_into("<Q", b, WRITTEN_AT, written - ms)
    struct.pack_into("<I", b, CHECKSUM_AT, 0)
    struct.pack_into("<I", b, CHECKSUM_AT, crc32c(bytes(b)))
    return bytes(b)


def test_crc32c_matches_the_dataplane(good_state):
    b = bytearray(good_state)
    stored = struct.unpack_from("<I", b, CHECKSUM_AT)[0]
    struct.pack_into("<I", b, CHECKSUM_AT, 0)
    assert crc32c(bytes(b)) == stored
    assert crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("down_s,restored", [(60, 100), (900, 0)])
def test_downtime_counts_towards_the_idle_timeout(tmp_path, good_state, down_s, restored):
    """Entries of a file written down_s seconds ago: with the 900 s established timeout, a minute
    down keeps them, a quarter of an hour down expires every one."""
    state = tmp_path / "dp.state"
    state.write_bytes(backdate(good_state, down_s * 1000))

    def entries(dp):
        return dp.counters()["conntables"][0]["entries"]
    _, n, log = run(tmp_path, "late", [], state=state, during=entries)
    assert f"restored: {restored} of 100 connection(s) ({100 - restored} expired while down" in log, log
    assert n == restored
