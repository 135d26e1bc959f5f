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
