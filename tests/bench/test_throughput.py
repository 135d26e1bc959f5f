"""bench/throughput.py's own logic: which DUT start failures it retries, and its closing tables."""
import pathlib
import subprocess
import sys
import types

import pytest

import throughput


class StubBench(throughput.Bench):
    """A Bench whose DUT start fails with the given messages, then succeeds."""

    def __init__(self, failures):
        super().__init__(types.SimpleNamespace(workdir="/nonexistent"))
        self.failures = list(failures)
        self.starts = 0

    def start_dut(self, kind, case):
        self.starts += 1
        if self.failures:
            raise RuntimeError(self.failures.pop(0))
        return "dut"


@pytest.fixture(autouse=True)
def sleeps(monkeypatch):
    """The pauses the retries took (not slept)."""
    taken = []
    monkeypatch.setattr(throughput.time, "sleep", taken.append)
    return taken


@pytest.mark.parametrize("msg", [
    "macswap testpmd: memif link not up after 60 s",
    "fulcrum-dataplane exited (1):\nmemif_connect_client(): Failed to connect socket: /tmp/x/memif.sock.",
    "fulcrum-dataplane exited (1):\n2026-12-03T03:44:24.502 fulcrum-dataplane error: uplink port net_memif0 "
    "(net_memif): start failed: Operation not permitted",
])
def test_a_memif_that_did_not_connect_is_retried(msg):
    b = StubBench([msg, msg])
    assert b.start_dut_retrying("fulcrum", "unique_syn") == "dut"
    assert b.starts == 3


def test_retries_stop_after_the_last_attempt_with_doubling_pauses(sleeps):
    msg = "macswap testpmd: memif link not up after 60 s"
    b = StubBench([msg] * 3)
    with pytest.raises(throughput.MemifNotConnected, match="memif link not up"):
        b.start_dut_retrying("macswap", "established_dsr")
    assert b.starts == 3
    assert sleeps == [2, 4]


def test_a_start_after_two_failures_succeeds(sleeps):
    msg = "fulcrum-dataplane exited (1):\nmemif_connect_client(): Failed to connect socket: /tmp/x/memif.sock."
    b = StubBench([msg] * 2)
    assert b.start_dut_retrying("fulcrum", "unique_syn") == "dut"
    assert b.starts == 3
    assert sum(sleeps) == 6


class FakeGenerator:
    def __init__(self, name):
        self.name = name
        self.prefix = "fbgen-" + name
        self.quits = 0

    def quit(self):
        self.quits += 1


class RestartBench(throughput.Bench):
    """A Bench whose runs fail to connect on the generators listed in `stuck`."""

    def __init__(self, stuck):
        super().__init__(types.SimpleNamespace(workdir="/nonexistent"))
        self.stuck = set(stuck)
        self.generators = []
        self.runs = []

    def start_generator(self, case, pcap, frames):
        g = FakeGenerator(f"g{len(self.generators) + 1}")
        self.generators.append(g)
        return g

    def run_one(self, g, case, kind):
        self.runs.append((g.name, kind))
        if g.name in self.stuck:
            raise throughput.MemifNotConnected("memif_connect_client(): Failed to connect socket")
        return {"mpps": 1.0}


@pytest.fixture
def removed(monkeypatch):
    """The DPDK runtime directories removed (not touched)."""
    gone = []
    monkeypatch.setattr(throughput, "remove_dpdk_runtime_dir", gone.append)
    return gone


def test_a_generator_that_takes_no_connection_is_replaced_once(removed):
    b = RestartBench(stuck={"g0"})
    g0 = FakeGenerator("g0")
    res, g = b.run_one_restarting(g0, "established_dsr", "x.pcap", 16, "fulcrum")
    assert res == {"mpps": 1.0}
    assert g is b.generators[0] and g.name == "g1" and g.quits == 0
    assert g0.quits == 1 and removed == ["fbgen-g0"]
    assert b.runs == [("g0", "fulcrum"), ("g1", "fulcrum")]


def test_a_run_that_connects_keeps_its_generator(removed):
    b = RestartBench(stuck=set())
    g0 = FakeGenerator("g0")
    res, g = b.run_one_restarting(g0, "unique_syn", "x.pcap", 16, "macswap")
    assert res == {"mpps": 1.0} and g is g0
    assert g0.quits == 0 and removed == [] and b.generators == []


def test_the_replacement_is_stopped_when_it_fails_too(removed):
    b = RestartBench(stuck={"g1", "g2"})
    b.generators.append(FakeGenerator("g1"))
    g1 = b.generators[0]
    with pytest.raises(throughput.MemifNotConnected):
        b.run_one_restarting(g1, "established_dsr", "x.pcap", 16, "macswap")
    g2 = b.generators[1]
    assert g1.quits == 1 and g2.quits == 1
    assert removed == ["fbgen-g1", "fbgen-g2"]
    assert b.runs == [("g1", "macswap"), ("g2", "macswap")]


@pytest.mark.parametrize("msg", [
    "fulcrum-dataplane exited (2):\nfulcrum-dataplane: --snapshot: cannot read 'x.snap'",
    "fulcrum-dataplane exited (1):\nuplink port net_memif0 (net_memif): start failed: Invalid argument",
])
def test_other_failures_are_not_retried(msg):
    b = StubBench([msg])
    with pytest.raises(RuntimeError):
        b.start_dut_retrying("fulcrum", "established_dsr")
    assert b.starts == 1


def generator_start(tmp_path, monkeypatch, case, **opts):
    """Each start_generator() of a Bench with these options, as (the EAL arguments its testpmd
    got, whether the case's memif socket file existed when it started)."""
    seen = []
    sock = tmp_path / f"memif-{case}.sock"

    class FakeTestpmd:
        def __init__(self, eal, args, log, limit):
            seen.append((eal, sock.exists()))

        def wait_for(self, *a):
            return "testpmd> "

    monkeypatch.setattr(throughput, "Testpmd", FakeTestpmd)
    b = throughput.Bench(types.SimpleNamespace(workdir=str(tmp_path), gen_main_cpu=0, gen_cpu=1, gen_burst=32,
                                               limit=60, rsize=11, dut_mac="02:00:00:00:00:01", **opts))
    b.start_generator(case, "x.pcap", 16)
    return seen


def test_a_new_generator_does_not_find_the_old_ones_socket(tmp_path, monkeypatch):
    """DPDK 22.11's memif server leaves its socket file at close: a generator started after a
    restart must not find it, or its bind fails (EADDRINUSE) and no DUT can connect."""
    sock = tmp_path / "memif-unique_syn.sock"
    sock.write_text("")  # what the generator stopped for the restart left
    seen = generator_start(tmp_path, monkeypatch, "unique_syn")
    assert len(seen) == 1 and seen[0][1] is False
    assert f"socket={sock}," in memif_devargs(seen[0][0])


def run(mpps, cycles, mhz=2096):
    return {"mpps": mpps, "dut_busy_cycles_per_pkt": cycles, "dut_capacity_mpps": mhz / cycles}


def test_summary_gives_medians_of_the_rate_and_of_the_capacity():
    # A macswap held back by the generator (its capacity well above what came back), and a
    # Fulcrum that was the limit itself: the two tables rank them differently.
    results = {"established_ipip": {
        "fulcrum": [run(6.2, 300.0), run(6.4, 290.0), run(9.0, 200.0)],
        "macswap": [run(8.2, 175.0), run(8.5, 160.0), run(7.8, 220.0)]}}
    lines = throughput.summary(results)
    rate = next(x for x in lines if x.startswith("established_ipip") and "6.200 6.400 9.000" in x).split()
    assert rate[-3:] == ["6.400", "8.200", f"{6.4 / 8.2:.3f}"]
    cap_header = lines.index(next(x for x in lines if x.startswith("== capacity")))
    cap = lines[cap_header + 2].split()
    assert cap[0] == "established_ipip"
    # Medians: 290 and 175 cycles per packet; 2096 MHz over them.
    assert cap[1:3] == ["290.0", "175.0"]
    assert cap[3:] == [f"{2096 / 290:.3f}", f"{2096 / 175:.3f}", f"{175 / 290:.3f}"]


def dut_command(tmp_path, monkeypatch, kind, case, **opts):
    """The EAL and application arguments start_dut gives a DUT, with the given options."""
    seen = []

    class Fake:
        def __init__(self, argv_or_eal, *args):
            seen.append(list(argv_or_eal) + (list(args[0]) if kind == "macswap" else []))

    monkeypatch.setattr(throughput, "Child", Fake)
    monkeypatch.setattr(throughput, "Testpmd", Fake)
    a = dict(workdir=str(tmp_path), dut_main_cpu=0, dut_cpu=1, dut_mem=512, rsize=10, dut_mac="02:00:00:00:00:01",
             limit=60, dataplane="fulcrum-dataplane", snapshot="b.snap", capacity=1 << 20, syn_capacity=131072,
             hugepages=False, zero_copy=False)
    a.update(opts)
    b = throughput.Bench(types.SimpleNamespace(**a))
    monkeypatch.setattr(b, "wait_dut_ready", lambda d, kind: None)
    b.start_dut(kind, case)
    return seen[0]


def memif_devargs(argv):
    return next(v for v in argv if v.startswith("net_memif0"))


@pytest.mark.parametrize("kind", ["fulcrum", "macswap"])
def test_zero_copy_is_the_clients_mode_on_shared_hugepage_memory(tmp_path, monkeypatch, kind):
    argv = dut_command(tmp_path, monkeypatch, kind, "established_ipip", hugepages=True, zero_copy=True)
    assert "role=client" in memif_devargs(argv) and memif_devargs(argv).endswith(",zero-copy=yes")
    # memif's zero-copy client needs one memory file (--single-file-segments), which
    # --huge-unlink excludes; --no-huge memory cannot be shared at all.
    assert "--single-file-segments" in argv and "--in-memory" in argv
    assert "--huge-unlink" not in argv and "--no-huge" not in argv


@pytest.mark.parametrize("huge,memory", [(False, "--no-huge"), (True, "--huge-unlink")])
def test_without_zero_copy_the_memif_copies(tmp_path, monkeypatch, huge, memory):
    argv = dut_command(tmp_path, monkeypatch, "fulcrum", "established_dsr", hugepages=huge)
    assert "zero-copy" not in memif_devargs(argv)
    assert memory in argv and "--single-file-segments" not in argv and "--in-memory" not in argv


def test_the_generator_never_takes_zero_copy(tmp_path, monkeypatch):
    eal = generator_start(tmp_path, monkeypatch, "established_dsr", zero_copy=True)[0][0]
    assert "role=server" in memif_devargs(eal) and "zero-copy" not in memif_devargs(eal)
    assert "--no-huge" in eal


def test_the_table_capacity_applies_to_the_established_cases(tmp_path, monkeypatch):
    for case, want in [("established_dsr", "32768"), ("established_dsr_74b", "32768"), ("established_ipip_ts", "32768"),
                       ("unique_syn", "131072")]:
        argv = dut_command(tmp_path, monkeypatch, "fulcrum", case, capacity=32768)
        assert str(argv[argv.index("--conn-capacity") + 1]) == want, case


def test_the_driver_refuses_zero_copy_without_hugepages(tmp_path):
    r = subprocess.run([sys.executable, str(throughput.__file__), "--workdir", str(tmp_path), "--dataplane", "x",
                        "--snapshot", "y", "--frames", "{}", "--zero-copy"], capture_output=True, text=True)
    assert r.returncode == 2 and "--zero-copy needs --hugepages" in r.stderr


def test_the_driver_refuses_a_case_without_a_pcap(tmp_path):
    r = subprocess.run([sys.executable, str(throughput.__file__), "--workdir", str(tmp_path), "--dataplane", "x",
                        "--snapshot", "y", "--frames", '{"established_dsr": 4}', "--cases", "established_dsr,bogus"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--cases: no pcap for 'bogus' (--frames names established_dsr;" in r.stderr, r.stderr


@pytest.mark.parametrize("args,message", [
    (["--zero-copy"], "--zero-copy needs --hugepages"),
    (["--cases", "established_dsr,bogus"], "unknown case 'bogus' in --cases 'established_dsr,bogus'; known cases: "
     "established_dsr,established_ipip,established_dsr_74b,established_dsr_ts,established_ipip_ts,unique_syn"),
    (["--cases", ""], "--cases is empty"),
    (["--conn-capacity", "0"], "--conn-capacity must be a positive integer (entries), got '0'"),
    (["--conn-capacity", "1M"], "--conn-capacity must be a positive integer (entries), got '1M'"),
])
def test_the_script_refuses_bad_options_before_it_builds(args, message):
    script = pathlib.Path(throughput.__file__).with_name("throughput.sh")
    r = subprocess.run(["bash", str(script), "--build-dir", "/nonexistent-build"] + args, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stderr
