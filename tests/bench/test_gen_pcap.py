"""bench/gen_pcap.py: the frames of the throughput cases, read back from the pcaps it writes."""
import struct
import subprocess
import sys

import gen_pcap
from conftest import ROOT
from fulcrumlab import read_pcap


def test_the_padded_dsr_frames_are_as_long_as_their_ipip_encapsulation(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_pcap.py"), str(tmp_path), "--flows", "300",
                    "--syns", "8"], check=True)
    assert (tmp_path / "established_dsr_74b.pcap").read_bytes()[:4] == struct.pack("<I", 0xA1B2C3D4)
    dsr = read_pcap(tmp_path / "established_dsr.pcap")
    padded = read_pcap(tmp_path / "established_dsr_74b.pcap")
    ipip = read_pcap(tmp_path / "established_ipip.pcap")
    assert len(dsr) == len(padded) == len(ipip) == 300
    for d, p, i in zip(dsr, padded, ipip):
        # What Fulcrum's IPIP forward makes of the frame (detail::encapsulate_v4, tested in
        # tests/unit and tests/dp): the Ethernet header, a 20-byte outer IPv4 header, then the
        # inner IP packet (its total length; the Ethernet padding after it is trimmed).
        inner_len = struct.unpack_from("!H", i, 14 + 2)[0]
        assert len(p) == 14 + 20 + inner_len == 74
        # The same flows in the same order: the DSR frame, then zeros past its IP packet.
        assert len(d) == 60 and p[:60] == d and p[60:] == bytes(14)
        assert struct.unpack_from("!H", p, 14 + 2)[0] == struct.unpack_from("!H", d, 14 + 2)[0]


def test_inputs_pads_every_dsr_frame_and_only_those():
    out = gen_pcap.inputs(gen_pcap.mac_bytes("02:00:00:00:00:01"), 17, 5)
    assert sorted(out) == ["established_dsr", "established_dsr_74b", "established_dsr_ts", "established_ipip",
                           "established_ipip_ts", "unique_syn"]
    assert [len(f) for f in out["established_dsr_74b"]] == [gen_pcap.IPIP_OUT_LEN] * 17
    assert {len(f) for name in ("established_dsr", "established_ipip", "unique_syn") for f in out[name]} == {60}
    assert {len(f) for name in ("established_dsr_ts", "established_ipip_ts") for f in out[name]} == {66}
    assert len(out["unique_syn"]) == 5


def test_the_timestamp_frames_are_the_same_flows_acks_with_linux_s_option_layout(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_pcap.py"), str(tmp_path), "--flows", "40",
                    "--syns", "8"], check=True)
    for plain, ts in (("established_dsr", "established_dsr_ts"), ("established_ipip", "established_ipip_ts")):
        base = read_pcap(tmp_path / f"{plain}.pcap")
        frames = read_pcap(tmp_path / f"{ts}.pcap")
        assert len(frames) == len(base) == 40
        for b, f in zip(base, frames):
            assert len(f) == 66  # no padding: 14 + 20 + 32
            ip, tcp = f[14:34], f[34:66]
            # Same Ethernet header, addresses and ports (the same flow, in the same order).
            assert f[:14] == b[:14] and ip[12:20] == b[26:34] and tcp[:4] == b[34:38]
            assert struct.unpack_from("!H", ip, 2)[0] == 52
            assert tcp[12] >> 4 == 8 and tcp[13] == 0x10  # 32-byte header; ACK only
            # NOP, NOP, timestamps (kind 8, length 10): what Linux puts in every segment.
            assert tcp[20:24] == bytes([1, 1, 8, 10])
            assert gen_pcap.fold(gen_pcap.sum16(ip)) == 0xFFFF
            pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, 32)
            assert gen_pcap.fold(gen_pcap.sum16(pseudo + tcp)) == 0xFFFF
