"""bench/pktgen.py's own logic on output recorded from real Pktgen-DPDK 23.03.0 runs
(tests/bench/data/pktgen/, captured with bench/pktgen.sh --out against fulcrum-dataplane over
memif): arguments, the generated pktgen scripts, parsing, the RFC 2544 search, the JSON."""
import json
import math
import pathlib
import re

import pytest

import pktgen
import throughput

DATA = pathlib.Path(__file__).resolve().parent / "data" / "pktgen"

BASE = ["--pktgen", "/x/pktgen", "--dataplane", "/x/dp", "--snapshot", "/x/s.snap", "--workdir", "/tmp/w",
        "--json", "/tmp/w/results.json"]


# ---- arguments -------------------------------------------------------------------------------

def test_defaults_and_plot_next_to_json():
    a = pktgen.parse_args(BASE)
    assert a.kinds == ["tcp4", "syn4", "tcp6", "syn6"]
    assert a.sizes == [64, 128, 256, 512, 1024, 1280, 1518]
    assert a.duts == ["fulcrum", "macswap"]
    assert a.plot == "/tmp/w/results.png"
    assert a.loads == [] and a.loss_tolerance == 0.0


@pytest.mark.parametrize("extra, message", [
    (["--kinds", "udp4"], "--kinds"),
    (["--kinds", ""], "--kinds"),
    (["--sizes", "64,100"], "--sizes: [100] not allowed"),
    (["--sizes", "64,x"], "not a comma-separated list of integers"),
    (["--duts", "vpp"], "--duts"),
    (["--loads", "0,10"], "--loads: [0.0] outside"),
    (["--loads", "101"], "--loads"),
    (["--loss-tolerance", "1"], "--loss-tolerance"),
    (["--loss-tolerance", "-0.1"], "--loss-tolerance"),
    (["--rate-slack", "1.5"], "--rate-slack"),
    (["--max-iterations", "0"], "--max-iterations"),
    (["--resolution", "0"], "--resolution"),
    (["--max-rate", "120"], "--max-rate"),
    (["--flows", "0"], "--flows"),
    (["--flows", "70000"], "--flows"),
    (["--trial-seconds", "0.1"], "--trial-seconds"),
    (["--settle-ms", "500"], "--settle-ms"),
    (["--dut-mac", "02:00:00:00:01"], "--dut-mac"),
    (["--mode", "nic"], "--mode nic needs --gen-pci and --dut-pci"),
    (["--mode", "nic", "--gen-pci", "0000:01:00.0"], "--mode nic needs"),
    (["--gen-pci", "0000:01:00.0"], "for --mode nic only"),
    (["--gen-lcores", "0@1"], "--gen-lcores needs 'MAIN@CPU,RX@CPU,TX@CPU'"),
    (["--dut-lcores", "0@1,1@0,2@0"], "--dut-lcores needs two lcores"),
    (["--rsize", "16"], "--rsize must be in 8..15"),
])
def test_bad_arguments_say_what_is_wrong(extra, message):
    with pytest.raises(pktgen.ArgError, match=re.escape(message)):
        pktgen.parse_args(BASE + extra)


def test_port_matrix():
    assert pktgen.port_matrix("0@1,1@0") == "1.0"
    assert pktgen.port_matrix("0@1,1@0,2@0") == "[1:2].0"


def test_nic_mode_takes_both_ports():
    a = pktgen.parse_args(BASE + ["--mode", "nic", "--gen-pci", "0000:01:00.0", "--dut-pci", "0000:01:00.1"])
    assert (a.gen_pci, a.dut_pci) == ("0000:01:00.0", "0000:01:00.1")


def test_main_returns_2_on_bad_arguments(capsys):
    assert pktgen.main(BASE + ["--sizes", "65"]) == 2
    assert "--sizes: [65] not allowed" in capsys.readouterr().err


# ---- generated scripts -----------------------------------------------------------------------

# The command forms of pktgen 23.03.0's CLI (app/cli-functions.c, range_map and set_map) that the
# generated setup uses; every generated line must be one of them.
CLI_FORMS = [
    r"set 0 type ipv4", r"set 0 proto udp", r"set 0 dst mac ([0-9a-f]{2}:){5}[0-9a-f]{2}",
    r"set 0 src ip [\d.]+/\d+", r"set 0 dst ip [\d.]+", r"set 0 (sport|dport|size) \d+",
    r"range 0 type ipv[46]", r"range 0 proto tcp",
    r"range 0 (src|dst) mac (start|min|max|inc) ([0-9a-f]{2}:){5}[0-9a-f]{2}",
    r"range 0 (src|dst) ip (start|min|max|inc) [0-9a-f.:]+",
    r"range 0 (src|dst) port (start|min|max|inc) \d+", r"range 0 size (start|min|max|inc) \d+",
    r"range 0 tcp flag (set|clr) (syn|ack|all)", r"enable 0 (range|latency)",
]


def commands(kind, flows=4096):
    return [c for c in pktgen.setup_commands(kind, flows, "02:00:00:00:00:01") if not c.startswith("#")]


@pytest.mark.parametrize("kind", pktgen.KINDS)
def test_setup_lines_are_pktgen_commands(kind):
    for c in commands(kind):
        assert any(re.fullmatch(f, c) for f in CLI_FORMS), c


def test_tcp4_is_acks_of_n_flows_to_the_vip():
    c = commands("tcp4", flows=1000)
    assert "range 0 type ipv4" in c and "range 0 tcp flag set ack" in c
    assert "range 0 dst ip start 198.18.1.1" in c
    assert "range 0 src ip min 198.19.0.1" in c and "range 0 src ip max 198.19.3.232" in c  # 1 + 999
    assert "range 0 src ip inc 0.0.0.1" in c
    assert "range 0 src port max 1024" in c and "range 0 src port inc 0" in c


def test_one_flow_does_not_step_the_address():
    c = commands("tcp4", flows=1)
    assert "range 0 src ip max 198.19.0.1" in c and "range 0 src ip inc 0.0.0.0" in c


def test_syn_storm_steps_address_and_port():
    c = commands("syn4")
    assert "range 0 tcp flag clr all" in c and "range 0 tcp flag set syn" in c
    assert c.index("range 0 tcp flag clr all") < c.index("range 0 tcp flag set syn")
    assert "range 0 src ip min 198.19.0.1" in c and "range 0 src ip max 198.19.255.255" in c  # 65,535
    assert "range 0 src port min 1024" in c and "range 0 src port max 65534" in c
    assert "range 0 src port inc 1" in c
    # 65,535 and 64,511 are coprime: the (address, port) pair repeats after their product.
    assert math.gcd(65535, 65534 - 1024 + 1) == 1


def test_ipv6_kinds_use_ipv6_addresses():
    c = commands("tcp6", flows=16)
    assert "range 0 type ipv6" in c
    assert "range 0 dst ip start 2001:db8:1::1" in c
    assert "range 0 src ip max 2001:db8:19::10" in c and "range 0 src ip inc ::1" in c
    assert "range 0 tcp flag set syn" in commands("syn6")


@pytest.mark.parametrize("kind", pktgen.KINDS)
def test_latency_packets_go_to_the_udp_latency_service(kind):
    c = commands(kind)
    assert "set 0 proto udp" in c and "set 0 dst ip 198.18.1.3" in c and "set 0 dport 5001" in c
    assert c[-1] == "enable 0 latency"  # latency copies the single packet set above
    if kind not in pktgen.PCAP_KINDS:
        assert c[-2] == "enable 0 range"
    else:
        assert not [x for x in c if x.startswith("range")]  # the pcap is the traffic
    spec = pktgen.snapshot_spec()
    lat = [s for s in spec["services"] if s["protocol"] == "udp"]
    assert lat and lat[0]["vip"] == pktgen.VIP_LAT and lat[0]["port"] == pktgen.LAT_PORT
    assert {s["vip"] for s in spec["services"]} == {pktgen.VIP4, pktgen.VIP6, pktgen.VIP_LAT}


def test_generated_setup_is_the_one_pktgen_ran():
    # tests/bench/data/pktgen/setup.pkt is what the recorded run gave pktgen (tcp4, 4096 flows).
    recorded = (DATA / "setup.pkt").read_text().splitlines()
    assert recorded == pktgen.setup_commands("tcp4", 4096, "02:00:00:00:00:01")


def test_pcap_syns_are_unique_syns_to_the_vip(tmp_path):
    import struct
    pktgen.write_syn_pcap(tmp_path / "s.pcap", 1500, "02:00:00:00:00:01")
    data = (tmp_path / "s.pcap").read_bytes()
    off, flows = 24, set()
    while off < len(data):
        caplen = struct.unpack_from("<I", data, off + 8)[0]
        f = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        assert len(f) == 60 and f[:6] == bytes.fromhex("020000000001") and f[12:14] == b"\x08\x00"
        assert f[23] == 6 and f[30:34] == bytes([198, 18, 1, 1]) and f[47] == 0x02  # TCP SYN to the VIP
        flows.add((f[26:30], f[34:36]))
    assert len(flows) == 1500


def test_pcap_kind_only_for_64_bytes():
    with pytest.raises(pktgen.ArgError, match="replays 64-byte frames"):
        pktgen.parse_args(BASE + ["--kinds", "tcp4,synpcap4", "--sizes", "64,128"])
    assert pktgen.parse_args(BASE + ["--kinds", "synpcap4", "--sizes", "64"]).kinds == ["synpcap4"]
    with pytest.raises(pktgen.ArgError, match="--pcap-syns"):
        pktgen.parse_args(BASE + ["--pcap-syns", "10"])


def test_unknown_kind_is_refused():
    with pytest.raises(pktgen.ArgError, match="traffic kind 'udp4'"):
        pktgen.setup_commands("udp4", 1, "02:00:00:00:00:01")


def test_control_loop_is_bounded_and_quotes_paths():
    lua = pktgen.control_lua('/tmp/a"b', "/tmp/r.txt", 5000, 7)
    assert 'local ctl, results = "/tmp/a\\"b", "/tmp/r.txt"' in lua
    assert "while n <= 7 do" in lua and "if idle > 5000 then" in lua
    assert "pktgen.quit()" in lua and 'pktgen.portStats("0", "port")' in lua
    assert 'pktgen.latsampler("0", "on")' in lua and 'pktgen.latsampler("0", "off")' in lua


def test_trial_script():
    t = pktgen.trial_lua(3, 1518, 12.5, 2000, 1200, "/w/lat-3.txt")
    assert 'fpg_trial(3, 1518, "12.5000", 2000, 1200, "/w/lat-3.txt", 4000)' in t
    with pytest.raises(pktgen.ArgError, match="packet size 65"):
        pktgen.trial_lua(1, 65, 10, 1000, 1200, "/w/l")
    with pytest.raises(pktgen.ArgError, match="rate 0"):
        pktgen.trial_lua(1, 64, 0, 1000, 1200, "/w/l")


# ---- parsing recorded output -----------------------------------------------------------------

def test_records_from_recorded_pktgen_log():
    # pktgen's own console output (screen codes, log lines) around the records.
    recs = pktgen.parse_records((DATA / "pktgen.log").read_text(errors="replace"))
    kinds = [r["record"] for r in recs]
    assert kinds[0] == "ready" and kinds[-1] == "quit"
    trials = [r for r in recs if r["record"] == "trial"]
    assert trials and [t["id"] for t in trials] == list(range(1, len(trials) + 1))
    for t in trials:
        assert isinstance(t["tx"], int) and isinstance(t["rx"], int) and t["size"] in pktgen.SIZES
        assert pktgen.link_mbps(t) is not None


def test_records_from_recorded_results_file_match_the_log():
    from_file = pktgen.parse_records((DATA / "results.txt").read_text())
    from_log = pktgen.parse_records((DATA / "pktgen.log").read_text(errors="replace"))
    assert [r for r in from_file if r["record"] == "trial"] == [r for r in from_log if r["record"] == "trial"]


def test_record_values_are_typed():
    r = pktgen.parse_records("junk \x1b[2J FPG trial id=4 link=<UP-10000-FD> size=64 rate=12.5000 ms=1000 "
                             "tx=10 rx=9 lat_min_us=1.500 latfile=/w/l.txt\nFPG\n")
    assert r == [{"record": "trial", "id": 4, "link": "<UP-10000-FD>", "size": 64, "rate": 12.5, "ms": 1000,
                  "tx": 10, "rx": 9, "lat_min_us": 1.5, "latfile": "/w/l.txt"}]
    assert pktgen.link_mbps(r[0]) == 10000
    assert pktgen.link_mbps({"link": "<--Down-->"}) is None


def test_recorded_latency_file():
    samples = pktgen.parse_latency_file((DATA / "latency.txt").read_text())
    assert len(samples) > 10 and all(s > 0 for s in samples)
    s = pktgen.latency_summary(samples)
    ordered = sorted(samples)
    assert s["samples"] == len(samples)
    assert s["min_us"] == ordered[0] / 1e3 and s["max_us"] == ordered[-1] / 1e3
    assert s["mean_us"] == pytest.approx(sum(samples) / len(samples) / 1e3)
    # nearest rank: the smallest sample with at least 99 % of the samples at or below it
    p99 = s["p99_us"] * 1e3
    assert sum(x <= p99 for x in samples) >= 0.99 * len(samples)
    assert sum(x < p99 for x in samples) < 0.99 * len(samples)


def test_latency_file_errors():
    with pytest.raises(ValueError, match="not a pktgen latency sampler file"):
        pktgen.parse_latency_file("1\n2\n")
    with pytest.raises(ValueError, match="bad latency sample"):
        pktgen.parse_latency_file("Latency\n12\nx\n")
    assert pktgen.latency_summary([])["p99_us"] is None
    assert pktgen.percentile([5, 1, 3, 2, 4], 99) == 5 and pktgen.percentile([5, 1, 3, 2, 4], 40) == 2


# ---- verdict and search ----------------------------------------------------------------------

def test_requested_rate():
    assert pktgen.requested_pps(10000, 100, 64) == pytest.approx(14880952.38, rel=1e-6)
    assert pktgen.requested_pps(10000, 50, 1518) == pytest.approx(406372.0, rel=1e-4)


def rec(tx, rx, rate=10.0, size=64, ms=1000):
    return {"tx": tx, "rx": rx, "rate": rate, "size": size, "ms": ms}


def test_verdict_loss_and_shortfall():
    want = pktgen.requested_pps(10000, 10, 64)  # 1,488,095 packets in 1 s
    ok = pktgen.judge(rec(int(want), int(want)), 10000, 0.0, 0.02)
    assert ok["passed"] and ok["loss"] == 0.0 and ok["shortfall"] < 1e-6
    lost = pktgen.judge(rec(int(want), int(want) - 1), 10000, 0.0, 0.02)
    assert not lost["passed"] and lost["loss"] > 0
    assert pktgen.judge(rec(int(want), int(want) - 1), 10000, 1e-5, 0.02)["passed"]
    slow = pktgen.judge(rec(int(want * 0.9), int(want * 0.9)), 10000, 0.0, 0.02)  # back-pressure
    assert not slow["passed"] and slow["shortfall"] == pytest.approx(0.1, abs=1e-6)
    assert not pktgen.judge(rec(0, 0), 10000, 0.5, 0.5)["passed"]


def test_verdicts_of_recorded_trials():
    for r in pktgen.parse_records((DATA / "results.txt").read_text()):
        if r["record"] == "trial":
            v = pktgen.judge(r, pktgen.link_mbps(r), 0.0, 0.02)
            assert v["passed"] == (r["rx"] >= r["tx"] and v["shortfall"] <= 0.02)
            # the measured window (secs), not the requested one (ms): pktgen.delay() oversleeps
            assert r["secs"] >= r["ms"] / 1000 - 0.02
            assert v["rx_mpps"] == pytest.approx(r["rx"] / r["secs"] / 1e6)


class SimulatedDut:
    """Loses packets above `capacity` percent of the link (loss grows with the excess)."""

    def __init__(self, capacity):
        self.capacity, self.rates = capacity, []

    def __call__(self, rate):
        self.rates.append(rate)
        loss = max(0.0, (rate - self.capacity) / rate)
        return {"passed": loss <= 0.0, "loss": loss}


@pytest.mark.parametrize("capacity", [0.7, 13.3, 37.0, 50.0, 62.5, 99.9])
def test_search_converges_within_resolution(capacity):
    dut = SimulatedDut(capacity)
    r = pktgen.zero_loss_search(dut, 100.0, 0.5, 20, 1e9)
    assert r["rate_pct"] <= capacity < r["rate_pct"] + 0.5 + 1e-9
    assert r["best"]["rate_pct"] == r["rate_pct"] and r["best"]["passed"]
    assert dut.rates[0] == 100.0 and len(r["trials"]) <= 1 + math.ceil(math.log2(100 / 0.5))
    assert r["stopped"] == "resolution"


def test_search_passing_at_the_maximum_stops_at_once():
    dut = SimulatedDut(100.0)
    r = pktgen.zero_loss_search(dut, 100.0, 0.5, 20, 1e9)
    assert r["rate_pct"] == 100.0 and dut.rates == [100.0] and r["stopped"] == "max_rate_passed"


def test_search_is_bounded_in_iterations():
    dut = SimulatedDut(37.0)
    r = pktgen.zero_loss_search(dut, 100.0, 0.001, 4, 1e9)
    assert len(dut.rates) == 4 and r["stopped"] == "max_iterations"
    assert dut.rates == [100.0, 50.0, 25.0, 37.5] and r["rate_pct"] == 25.0


def test_search_on_a_dut_that_loses_at_every_rate():
    dut = SimulatedDut(0.0)
    r = pktgen.zero_loss_search(lambda x: {"passed": False, "loss": 1.0}, 100.0, 0.5, 30, 1e9)
    assert r["rate_pct"] == 0.0 and r["best"] is None
    assert len(r["trials"]) <= 1 + math.ceil(math.log2(100 / 0.5)) and r["stopped"] == "resolution"
    assert all(not t["passed"] for t in r["trials"])
    del dut


def test_search_is_bounded_in_time():
    now = [0.0]

    def trial(rate):
        now[0] += 10.0  # every trial takes 10 s
        return {"passed": rate < 30}

    r = pktgen.zero_loss_search(trial, 100.0, 0.01, 50, 35.0, clock=lambda: now[0])
    assert len(r["trials"]) == 4 and r["stopped"] == "deadline"


# ---- JSON and plot ---------------------------------------------------------------------------

def fake_run(mpps, p99):
    best = {"rate_pct": 10.0, "passed": True, "rx_mpps": mpps,
            "latency": {"samples": 100, "min_us": 1.0, "mean_us": 2.0, "p99_us": p99, "max_us": 9.0}}
    return {"search": {"rate_pct": 10.0, "best": best, "trials": [best], "stopped": "resolution"}, "fixed": []}


def test_fixed_loads_are_summarised_per_load():
    def fixed(rate, rx, loss):
        return {"rate_pct": rate, "offered_mpps": rate / 10, "rx_mpps": rx, "loss": loss, "passed": True}
    runs = [dict(fake_run(1.0, 5.0), fixed=[fixed(1.0, 0.1, 0.0), fixed(5.0, 0.4, 0.2)]),
            dict(fake_run(1.0, 5.0), fixed=[fixed(1.0, 0.3, 0.0), fixed(5.0, 0.5, 0.1)])]
    row = pktgen.summarise({"syn6": {512: {"fulcrum": runs}}})[0]
    assert row["fulcrum"]["fixed"] == [
        {"rate_pct": 1.0, "offered_mpps": 0.1, "rx_mpps": pytest.approx(0.2), "loss": 0.0},
        {"rate_pct": 5.0, "offered_mpps": 0.5, "rx_mpps": pytest.approx(0.45), "loss": pytest.approx(0.15)}]
    assert "ratio" not in row


def test_summary_and_json_shape(tmp_path):
    results = {"tcp4": {64: {"fulcrum": [fake_run(1.0, 5.0), fake_run(3.0, 7.0), fake_run(2.0, 6.0)],
                             "macswap": [fake_run(4.0, 3.0)]},
                        1518: {"fulcrum": [{"search": {"rate_pct": 0.0, "best": None, "trials": [],
                                                       "stopped": "resolution"}, "fixed": []}],
                               "macswap": [fake_run(0.8, 4.0)]}}}
    summary = pktgen.summarise(results)
    row = summary[0]
    assert row["kind"] == "tcp4" and row["size"] == 64
    assert row["fulcrum"]["zero_loss_mpps"] == 2.0 and row["fulcrum"]["runs_mpps"] == [1.0, 3.0, 2.0]
    assert row["fulcrum"]["p99_us"] == 6.0 and row["ratio"] == 0.5
    assert summary[1]["fulcrum"]["zero_loss_mpps"] == 0.0 and summary[1]["fulcrum"]["p99_us"] is None
    a = pktgen.parse_args(BASE + ["--kinds", "tcp4", "--sizes", "64,1518"])
    doc = json.loads(json.dumps(pktgen.result_document(a, summary, results, {"commit": "abc1234"})))
    assert set(doc) == {"tool", "meta", "settings", "summary", "results"}
    assert doc["settings"]["sizes"] == [64, 1518] and doc["meta"]["commit"] == "abc1234"
    png = tmp_path / "r.png"
    pktgen.plot(summary, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- starting a DUT --------------------------------------------------------------------------

def test_a_dut_whose_memif_did_not_connect_is_started_again(monkeypatch):
    slept = []
    monkeypatch.setattr(throughput.time, "sleep", slept.append)
    d = pktgen.Duts(pktgen.parse_args(BASE), "t", throughput)
    failures = ["macswap testpmd: memif link not up after 60 s",
                "fulcrum-dataplane exited (1):\nmemif_connect_client(): Failed to connect socket: /tmp/w/x.sock."]
    calls = []

    def start_once(dut, kind):
        calls.append((dut, kind))
        if failures:
            raise RuntimeError(failures.pop(0))
        return "started"

    monkeypatch.setattr(d, "start_once", start_once)
    assert d.start("fulcrum", "tcp4") == "started"
    assert calls == [("fulcrum", "tcp4")] * 3 and slept == [2, 2]
    # Three failures: the last is raised; any other failure at once.
    failures[:] = ["memif link not up"] * 3
    calls.clear()
    with pytest.raises(throughput.MemifNotConnected):
        d.start("macswap", "syn4")
    assert len(calls) == 3
    failures[:] = ["fulcrum-dataplane exited (2):\n--snapshot: cannot read 'x.snap'"]
    calls.clear()
    with pytest.raises(RuntimeError, match="cannot read"):
        d.start("fulcrum", "tcp4")
    assert len(calls) == 1
