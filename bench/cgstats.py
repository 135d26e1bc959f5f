#!/usr/bin/python3
"""Reads the per-thread callgrind outputs of bench/instructions.sh.

    cgstats.py thread PREFIX             the busiest thread's file and its total Ir
    cgstats.py threads PREFIX N          the files of the N threads that ran NAME (default
               [NAME]                    Worker::process_burst: the workers) and their total
                                         Ir, one a line, in thread order (the order the
                                         threads were created: EAL starts the worker lcores in
                                         lcore order); fails unless exactly N did
    cgstats.py funcs FILE NAME...        for each NAME: inclusive Ir, self Ir and calls of the
                                         first function whose name contains NAME (JSON)
    cgstats.py top FILE PACKETS [N]      the N functions with the most self Ir, per packet

Uses callgrind_annotate for the function tables (inclusive and self costs, call counts from
--tree=caller), so it reads exactly what the tool prints.
"""
import glob
import json
import re
import subprocess
import sys


def total_ir(path):
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return 0


def runs(files, name):
    """The files (threads) with costs in a function whose name contains `name`. Callgrind
    compresses names across the files of one run: "(id) name" once, in whichever file
    mentions it first, and "(id)" everywhere after; so find the ids, then the files with an
    fn= line (costs of the function itself) for one of them."""
    ids = set()
    define = re.compile(r"^c?fn=\((\d+)\) (.*)$")
    for f in files:
        with open(f, errors="replace") as fh:
            for line in fh:
                m = define.match(line)
                if m and name in m.group(2):
                    ids.add(m.group(1))
    out = []
    for f in files:
        with open(f, errors="replace") as fh:
            if any(line.startswith("fn=(") and line[4:].split(")", 1)[0] in ids for line in fh):
                out.append(f)
    return out


def annotate(path, *opts):
    return subprocess.run(["callgrind_annotate", "--threshold=100", *opts, path], capture_output=True,
                          text=True, check=True).stdout


ROW = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def rows(text):
    out = []
    for line in text.splitlines():
        m = ROW.match(line)
        if m and "PROGRAM TOTALS" not in line:
            out.append((int(m.group(1).replace(",", "")), m.group(2)))
    return out


def calls_of(tree_text, name):
    """Calls of the function whose '*' line contains name: the sum of its callers' (Nx)."""
    lines = tree_text.splitlines()
    for i, line in enumerate(lines):
        if "*  " in line and name in line.split("*  ", 1)[1]:
            n = 0
            j = i - 1
            while j >= 0 and "<" in lines[j]:
                m = re.search(r"\(([\d,]+)x\)", lines[j])
                if m:
                    n += int(m.group(1).replace(",", ""))
                j -= 1
            return n
    return 0


def strip_params(fn):
    """'ns::f(int, std::span<...>) const' -> 'ns::f' (balanced parentheses from the end)."""
    fn = fn.strip()
    if fn.endswith(" const"):
        fn = fn[:-6]
    if not fn.endswith(")"):
        return fn
    depth = 0
    for i in range(len(fn) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(fn[i], 0)
        if depth == 0:
            return fn[:i]
    return fn


def main():
    cmd = sys.argv[1]
    if cmd in ("thread", "threads"):
        files = [f for f in glob.glob(sys.argv[2] + "-*") if re.search(r"-\d+$", f)]
        if not files:
            sys.exit(f"no callgrind thread files {sys.argv[2]}-NN")
        if cmd == "thread":
            best = max(files, key=total_ir)
            print(best, total_ir(best))
            return
        n = int(sys.argv[3])
        name = sys.argv[4] if len(sys.argv) > 4 else "Worker::process_burst"
        ran = sorted(runs(files, name), key=lambda f: int(f.rsplit("-", 1)[1]))
        if len(ran) != n:
            sys.exit(f"{len(ran)} threads of {sys.argv[2]} ran {name}, {n} expected")
        for f in ran:
            print(f, total_ir(f))
    elif cmd == "funcs":
        path = sys.argv[2]
        inc = rows(annotate(path, "--inclusive=yes"))
        slf = rows(annotate(path))
        tree = annotate(path, "--tree=caller")
        res = {}
        for name in sys.argv[3:]:
            i = next((ir for ir, fn in inc if name in fn), 0)
            s = next((ir for ir, fn in slf if name in fn), 0)
            res[name] = {"inclusive": i, "self": s, "calls": calls_of(tree, name)}
        print(json.dumps(res))
    elif cmd == "top":
        path, packets = sys.argv[2], int(sys.argv[3])
        n = int(sys.argv[4]) if len(sys.argv) > 4 else 20
        for ir, fn in rows(annotate(path))[:n]:
            obj = re.search(r"\[([^\]]*)\]$", fn)
            fn = re.sub(r"\s*\[[^\]]*\]$", "", fn)  # drop the object file
            fn = re.sub(r"^\?\?\?:", "", fn)
            if fn.startswith("0x") and obj:  # no symbol (stripped DPDK driver): name the object
                fn += " in " + obj.group(1).rsplit("/", 1)[-1]
            fn = strip_params(fn)
            print(f"{ir / packets:9.1f}  {fn}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
