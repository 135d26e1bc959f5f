"""bench/steady.py: pairs of throughput.sh runs compared within one speed state."""
import json

import pytest

import steady


def res(fulcrum, macswap):
    return {"fulcrum": [{"mpps": 1.0, "dut_busy_cycles_per_pkt": c} for c in fulcrum],
            "macswap": [{"mpps": 1.0, "dut_busy_cycles_per_pkt": c} for c in macswap]}


def test_pairs_in_the_median_band_are_kept_across_files():
    # Two invocations: the second ran partly in a slow state (macswap 207-217) and partly fast (75).
    a = {"established_ipip": res([215.9, 217.3, 234.0], [163.9, 162.2, 168.0])}
    b = {"established_ipip": res([294.6, 108.3, 227.2], [207.5, 75.2, 158.4])}
    pooled = steady.pool([("a", a), ("b", b)])
    band, kept, left = steady.steady(pooled["established_ipip"])
    # Median of the six macswap runs: (162.2 + 163.9) / 2 = 163.05; 10% either side.
    assert band == pytest.approx((146.745, 179.355))
    assert kept == [(215.9, 163.9), (217.3, 162.2), (234.0, 168.0), (227.2, 158.4)]
    assert left == [(294.6, 207.5), (108.3, 75.2)]


def test_a_fixed_band_replaces_the_median_band():
    pairs = [(187.5, 164.9), (252.2, 209.0), (179.9, 97.2), (190.0, 181.9)]
    band, kept, left = steady.steady(pairs, band=(150, 185))
    assert band == (150, 185) and kept == [(187.5, 164.9), (190.0, 181.9)]
    assert left == [(252.2, 209.0), (179.9, 97.2)]


def test_the_report_gives_sorted_runs_medians_and_the_ratio():
    pooled = {"established_dsr": [(190.0, 164.0), (180.0, 160.0), (185.0, 170.0), (260.0, 210.0)]}
    lines = steady.report(pooled, band=(150, 185))
    assert lines[0] == "== established_dsr: 3 of 4 pairs with macswap at 150.0-185.0 busy cycles per packet"
    assert lines[1] == "   fulcrum, sorted: 180.0 185.0 190.0"
    assert lines[2] == f"   medians: fulcrum 185.0, macswap 164.0; capacity ratio {164 / 185:.3f}"
    assert lines[3] == "   left out (fulcrum / macswap): 260.0 / 210.0"


def test_identical_pairs_are_each_counted_once():
    band, kept, left = steady.steady([(200.0, 160.0), (200.0, 160.0), (200.0, 300.0)], band=(150, 185))
    assert len(kept) == 2 and left == [(200.0, 300.0)]


def test_a_dut_that_reported_no_cycles_is_never_kept():
    band, kept, left = steady.steady([(0.0, 160.0), (200.0, 160.0), (200.0, 0.0)], band=(0, 185))
    assert kept == [(200.0, 160.0)] and left == [(0.0, 160.0), (200.0, 0.0)]
    # Nor does a zero count toward the median band.
    band, kept, left = steady.steady([(200.0, 0.0), (200.0, 100.0), (210.0, 104.0)])
    assert band == pytest.approx((91.8, 112.2)) and len(kept) == 2


def test_a_case_in_one_file_only_is_reported_from_that_file():
    pooled = steady.pool([("a", {"established_dsr": res([190.0], [165.0])}),
                          ("b", {"established_dsr": res([185.0], [160.0]), "unique_syn": res([228.8], [176.5])})])
    assert pooled == {"established_dsr": [(190.0, 165.0), (185.0, 160.0)], "unique_syn": [(228.8, 176.5)]}


@pytest.mark.parametrize("value", [float("inf"), float("nan"), True, "190", -1.0, None])
def test_cycles_that_are_not_a_count_are_refused(value):
    bad = {"established_dsr": res([value], [165.0])}
    with pytest.raises(steady.Refused, match="a finite number of cycles"):
        steady.pairs_of(bad, "x.json")


def test_a_file_without_cases_is_refused():
    for empty in ({}, [], "x"):
        with pytest.raises(steady.Refused, match="one or more cases"):
            steady.pairs_of(empty, "empty.json")


@pytest.mark.parametrize("text,message", [
    ("150", "expected LO-HI"), ("a-b", "expected LO-HI"), ("185-150", "LO must be at least 0 and below HI"),
    ("1-2-3", "expected LO-HI"),
])
def test_bad_bands_are_refused(text, message):
    with pytest.raises(steady.Refused, match=message):
        steady.parse_band(text)


def test_unequal_run_counts_are_refused():
    with pytest.raises(steady.Refused, match="has 2 fulcrum runs and 1 macswap runs"):
        steady.pairs_of({"established_dsr": res([1.0, 2.0], [1.0])}, "x.json")


def test_results_without_cycles_are_refused():
    bad = {"established_dsr": {"fulcrum": [{"mpps": 1.0}], "macswap": [{"mpps": 1.0}]}}
    with pytest.raises(steady.Refused, match="lacks dut_busy_cycles_per_pkt"):
        steady.pairs_of(bad, "old.json")


def test_the_command_reads_files_and_reports_errors(tmp_path, capsys):
    f = tmp_path / "results.json"
    f.write_text(json.dumps({"unique_syn": res([228.8, 230.7], [176.5, 174.8])}))
    assert steady.main([str(f)]) == 0
    out = capsys.readouterr().out
    assert "== unique_syn: 2 of 2 pairs" in out and "capacity ratio" in out
    (tmp_path / "bad.json").write_text("{not json")
    assert steady.main([str(tmp_path / "bad.json")]) == 2
    assert "bad.json: not JSON" in capsys.readouterr().err
    assert steady.main([str(tmp_path / "missing.json")]) == 2
    assert "missing.json: cannot read it" in capsys.readouterr().err
    assert steady.main(["--band", "x", str(f)]) == 2
    assert "--band 'x'" in capsys.readouterr().err
    assert steady.main(["--pct", "0", str(f)]) == 2
    assert "--pct 0.0: expected a percentage" in capsys.readouterr().err
