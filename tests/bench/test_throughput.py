"""bench/throughput.py's own logic: which DUT start failures it retries."""
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
    b = StubBench([msg] * 5)
    with pytest.raises(RuntimeError, match="memif link not up"):
        b.start_dut_retrying("macswap", "established_dsr")
    assert b.starts == 5
    assert sleeps == [2, 4, 8, 10]


def test_a_start_after_four_failures_succeeds(sleeps):
    msg = "fulcrum-dataplane exited (1):\nmemif_connect_client(): Failed to connect socket: /tmp/x/memif.sock."
    b = StubBench([msg] * 4)
    assert b.start_dut_retrying("fulcrum", "unique_syn") == "dut"
    assert b.starts == 5
    assert sum(sleeps) == 24


@pytest.mark.parametrize("msg", [
    "fulcrum-dataplane exited (2):\nfulcrum-dataplane: --snapshot: cannot read 'x.snap'",
    "fulcrum-dataplane exited (1):\nuplink port net_memif0 (net_memif): start failed: Invalid argument",
])
def test_other_failures_are_not_retried(msg):
    b = StubBench([msg])
    with pytest.raises(RuntimeError):
        b.start_dut_retrying("fulcrum", "established_dsr")
    assert b.starts == 1
