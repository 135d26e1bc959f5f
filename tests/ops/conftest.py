"""Operations tests: packaging, systemd units, man pages, shell completion, monitoring assets.

They check the files an operator installs against the binaries and metrics they describe, so
they need the build (build/ by default, FULCRUM_BUILD to change it)."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("FULCRUM_BUILD", ROOT / "build"))


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def build():
    if not (BUILD / "build.ninja").exists():
        pytest.fail(f"{BUILD} is not a configured build: run `meson setup build && ninja -C build` first")
    return BUILD
