"""The connection table's pages (docs/architecture.md, "Per-worker placement"): a dataplane
whose EAL runs without hugepages (--no-huge, as here) maps each worker's table apart, 2 MiB
aligned and advised MADV_HUGEPAGE, populated before the worker starts. The kernel's own
accounting (/proc/PID/smaps, AnonHugePages) must show the table on transparent huge pages, and
the start-up log line must report what the kernel shows."""
import pathlib
import re

import pytest

import fulcrumlab

THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")
CAPACITY = 1 << 20  # 56.5 MiB per worker: large enough that 4 KiB pages would cost TLB misses


def thp_mode():
    try:
        return re.search(r"\[(\w+)\]", THP.read_text()).group(1)
    except (OSError, AttributeError):
        return "unavailable"


def mappings(pid):
    """[(start, size in bytes, AnonHugePages in bytes)] of every mapping of the process."""
    out, cur = [], None
    for line in pathlib.Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            cur = [int(m.group(1), 16), int(m.group(2), 16) - int(m.group(1), 16), 0]
            out.append(cur)
        elif line.startswith("AnonHugePages:") and cur is not None:
            cur[2] = int(line.split()[1]) * 1024
    return [tuple(x) for x in out]


@pytest.mark.skipif(thp_mode() in ("never", "unavailable"),
                    reason=f"transparent huge pages are {thp_mode()} on this kernel")
def test_connection_tables_sit_on_transparent_huge_pages(workdir):
    d = fulcrumlab.Dataplane(workdir, ["net_null0,no-rx=1"], "net_null0", conn_capacity=CAPACITY)
    try:
        log = d.log()
        lines = re.findall(r"connection table of worker (\d+) \(--conn-capacity (\d+)\): (\d+) MiB mapped apart "
                           r"\(the EAL runs without hugepages\), (\d+) MiB of it on transparent huge pages", log)
        assert [w for w, *_ in lines] == ["0"], log
        _, cap, mapped_mib, huge_mib = lines[0]
        assert int(cap) == CAPACITY
        mapped, huge = int(mapped_mib) << 20, int(huge_mib) << 20
        assert mapped >= (113 << 19), log  # 1M entries: at least 56.5 MiB
        # The table is a mapping of its own, starting on a 2 MiB boundary, whole huge pages long.
        tables = [m for m in mappings(d.pid) if m[1] == mapped and m[0] % (2 << 20) == 0]
        assert len(tables) == 1, f"2 MiB-aligned mappings of {mapped_mib} MiB: {tables}"
        # The log reports the kernel's accounting: at least the huge pages it claimed are there
        # (khugepaged may only add more), and (direct compaction being allowed under
        # MADV_HUGEPAGE on an idle host) at least three quarters of the table is on them.
        in_smaps = tables[0][2]
        assert in_smaps >= huge, f"log says {huge_mib} MiB on huge pages, smaps {in_smaps >> 20} MiB"
        assert huge * 4 >= mapped * 3, f"only {huge_mib} of {mapped_mib} MiB on huge pages\n{log}"
        assert "4 KiB pages" not in log
        assert d.alive(), log
    finally:
        assert d.stop() == 0, d.log()
