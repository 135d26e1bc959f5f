import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "lib"))

import fulcrumlab  # noqa: E402


def pytest_configure(config):
    for tool in (fulcrumlab.DATAPLANE, fulcrumlab.SNAPSHOT_TOOL):
        if not tool.exists():
            raise pytest.UsageError(f"{tool} is missing: build first (ninja -C build)")


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def dp(tmp_path):
    """A dataplane on a pcap port with no traffic: for tests of its control socket."""
    from pcaputil import write_pcap
    write_pcap(tmp_path / "empty.pcap", [])
    d = fulcrumlab.Dataplane(tmp_path, [f"net_pcap0,rx_pcap={tmp_path}/empty.pcap,tx_pcap={tmp_path}/out.pcap"],
                             "net_pcap0")
    yield d
    assert d.stop() == 0, d.log()
