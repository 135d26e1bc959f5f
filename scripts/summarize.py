#!/usr/bin/python3
"""Sums JUnit XML results: prints one line per suite, then 'N passed, N failed, N skipped'.

Usage: summarize.py RESULTS_DIR. Exits 1 if anything failed or no test ran."""
import pathlib
import sys
import xml.etree.ElementTree as ET


def count(path):
    root = ET.parse(path).getroot()
    passed = failed = skipped = 0
    failures = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}.{case.get('name', '')}".strip(".")
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
            failures.append(name)
        elif case.find("skipped") is not None or case.get("status") == "notrun":
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped, failures


def main():
    results = pathlib.Path(sys.argv[1])
    total = [0, 0, 0]
    for path in sorted(results.glob("*.xml")):
        try:
            p, f, s, names = count(path)
        except ET.ParseError as e:
            p, f, s, names = 0, 1, 0, [f"{path.name}: unreadable results ({e})"]
        total[0] += p
        total[1] += f
        total[2] += s
        print(f"  {path.stem:<14} {p:5d} passed {f:4d} failed {s:4d} skipped")
        for n in names[:20]:
            print(f"      FAILED {n}")
    print(f"{total[0]} passed, {total[1]} failed, {total[2]} skipped")
    return 0 if total[1] == 0 and total[0] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
