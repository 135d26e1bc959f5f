"""The test library's own clean-up: a test run stopped by a signal leaves no namespace behind."""
import pathlib
import signal
import subprocess
import sys

import fulcrumlab

LIB = pathlib.Path(__file__).resolve().parents[1] / "lib"

CHILD = f"""
import sys, time
sys.path.insert(0, {str(LIB)!r})
import fulcrumlab
with fulcrumlab.own_namespace("flsg") as ns:
    print(ns, flush=True)
    time.sleep(60)
"""


def namespaces():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def test_a_run_stopped_by_sigterm_deletes_its_namespace():
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    ns = ""
    try:
        ns = p.stdout.readline().strip()
        assert ns.startswith("flsg"), ns
        assert ns in namespaces()
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 128 + signal.SIGTERM
        assert ns not in namespaces()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if ns:
            fulcrumlab.delete_namespace(ns)
