"""Tests of the benchmark scripts' own logic (argument handling, result parsing, searches),
run on recorded tool output: no traffic, no DPDK."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "lib"))
