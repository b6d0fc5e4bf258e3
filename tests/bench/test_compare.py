"""`bench compare` and `run --baseline`: regressions found, identical runs pass, timing only on one device, and
each metric judged in its better direction (FID, s/image lower; IS higher; params exact)."""
import copy

import pytest

from bench.compare import compare
from bench.measure.base import Context
from bench.results import write_json_atomic
from bench.runner import run_suite
from bench.suite import load_suite
from tests.bench.runner_helpers import FAKE_SUITE, cli, install_fake, machine, write

VALUES = {"one": 1.0, "two": 2.0, "three": 3.0}


@pytest.fixture
def baseline(tmp_path, monkeypatch):
    install_fake(monkeypatch, lambda item, ctx: VALUES[item.row.name] if item.metric == "fake" else 2.0)
    return run_suite(load_suite(write(tmp_path, FAKE_SUITE)), "smoke", machine(tmp_path), Context())


def cell(result, row, column="a"):
    return next(c for c in result["cells"] if (c["row"], c["column"]) == (row, column))


def test_identical_runs_pass(tmp_path, baseline, capsys):
    old = write_json_atomic(baseline, tmp_path / "old.json")
    new = write_json_atomic(copy.deepcopy(baseline), tmp_path / "new.json")
    assert cli("compare", old, new) == 0
    assert capsys.readouterr().out.strip().endswith("6 cells compared, no regressions, no improvements")


def test_injected_status_regression_is_reported_and_exits_nonzero(tmp_path, baseline, capsys):
    new = copy.deepcopy(baseline)
    cell(new, "two").update(status="fail", measured=2.5, reason="2.50 is outside [1.98, 2.02]")
    old_path, new_path = write_json_atomic(baseline, tmp_path / "old.json"), write_json_atomic(new, tmp_path / "new.json")
    assert cli("compare", old_path, new_path) == 1
    out = capsys.readouterr().out
    assert "REGRESSION two / a: status pass -> fail (2.00 -> 2.50)" in out and "1 regression(s)" in out


def test_a_value_moving_beyond_tolerance_regresses_even_if_it_still_passes(baseline):
    cell(baseline, "three")["measured"] = 2.975  # both pass the paper's 3.0 ± 1 % ...
    new = copy.deepcopy(baseline)
    cell(new, "three")["measured"] = 3.025  # ... but moved by 1.7 %, more than 1 % of 2.975
    cell(new, "one")["measured"] = 1.009  # moved less than the tolerance allows
    regressions = compare(baseline, new).regressions
    assert len(regressions) == 1 and regressions[0].startswith("three / a: value moved 2.98 -> 3.02")


def test_error_and_lost_cells_are_regressions_improvements_are_not(baseline):
    new = copy.deepcopy(baseline)
    cell(new, "one").update(status="error", measured=None, reason="RuntimeError: x")
    new["cells"] = [c for c in new["cells"] if (c["row"], c["column"]) != ("two", "a")]
    worse = copy.deepcopy(baseline)
    cell(worse, "three").update(status="fail")
    result = compare(baseline, new)
    assert [r.split(":")[0] for r in result.regressions] == ["one / a", "two / a"]
    improved = compare(worse, baseline)  # fail -> pass is an improvement
    assert improved.ok and improved.improvements[0].startswith("three / a: status fail -> pass")


def test_timing_cells_compare_only_on_the_same_device(baseline):
    new = copy.deepcopy(baseline)
    cell(new, "one", "t")["measured"] = 9.0  # 4.5x slower
    assert not compare(baseline, new).ok
    new["provenance"]["device"] = "cuda: NVIDIA H100"
    result = compare(baseline, new)
    assert result.ok and any("timing not compared" in n for n in result.notes)


def test_different_suites_are_refused(tmp_path, baseline, capsys):
    other = copy.deepcopy(baseline)
    other["suite"] = "table1"
    a, b = write_json_atomic(baseline, tmp_path / "a.json"), write_json_atomic(other, tmp_path / "b.json")
    assert cli("compare", a, b) == 2 and "different suites" in capsys.readouterr().err


# Real metrics (their directions come from bench.definitions) with faked measurements.
DIRECTED = """\
[suite]
name = "directed"
title = "One cell per direction"

[[columns]]
key = "fid"
label = "FID"
metric = "fid"
profiles = ["smoke", "full"]
tolerance = { abs = 0.10, why = "seed noise" }

[[columns]]
key = "is"
label = "IS"
metric = "is"
profiles = ["smoke", "full"]
tolerance = { rel = 0.02, why = "seed noise" }

[[columns]]
key = "params"
label = "Params (M)"
metric = "params"
profiles = ["smoke", "full"]
tolerance = { window = [-0.5, 1.0], why = "whole millions" }

[[columns]]
key = "speed"
label = "s/image"
metric = "s_per_image"
profiles = ["smoke", "full"]
tolerance = { rel = 0.05, why = "timing noise" }

[[rows]]
name = "DiT-XL"
model = "DiT-XL/2"
cells = { fid = 2.27, is = 277.0, params = 675, speed = 0.50 }
"""
MEASURED = {"fid": 2.27, "is": 277.0, "params": 675.13, "s_per_image": 0.50}


@pytest.fixture
def directed(tmp_path, monkeypatch):
    for name in ("quality", "params", "latency"):
        install_fake(monkeypatch, lambda item, ctx: MEASURED[item.metric], name=name, metrics=())
    result = run_suite(load_suite(write(tmp_path, DIRECTED)), "smoke", machine(tmp_path), Context())
    assert {c["column"]: c["status"] for c in result["cells"]} == dict.fromkeys(("fid", "is", "params", "speed"),
                                                                                 "pass")
    return result


def moved(result, column, value):
    new = copy.deepcopy(result)
    cell(new, "DiT-XL", column)["measured"] = value
    return compare(result, new)


@pytest.mark.parametrize("column, better, worse", [("fid", 2.10, 2.50), ("speed", 0.40, 0.60),
                                                   ("is", 290.0, 260.0)])
def test_a_move_the_better_way_is_an_improvement_the_worse_way_a_regression(directed, column, better, worse):
    up = moved(directed, column, better)
    assert up.ok and not up.regressions and len(up.improvements) == 1
    assert up.improvements[0].startswith(f"DiT-XL / {column}: value moved") and ", better (" in up.improvements[0]
    down = moved(directed, column, worse)
    assert not down.ok and not down.improvements and len(down.regressions) == 1
    assert ", worse (" in down.regressions[0]


def test_fid_2_27_to_2_10_improves_and_2_50_regresses(directed):
    assert moved(directed, "fid", 2.10).improvements == [
        "DiT-XL / fid: value moved 2.27 -> 2.10, better (lower is better), more than the tolerance allows "
        "(±0.100; ±0.1)"]
    assert moved(directed, "fid", 2.50).regressions == [
        "DiT-XL / fid: value moved 2.27 -> 2.50, worse (lower is better), more than the tolerance allows "
        "(±0.100; ±0.1)"]
    assert moved(directed, "fid", 2.20).ok and not moved(directed, "fid", 2.20).improvements  # within tolerance


def test_an_exact_metric_regresses_either_way(directed):
    for value in (674.2, 676.0):  # params: window [-0.5, 1.0) allows a move of 0.75 between runs
        result = moved(directed, "params", value)
        assert not result.ok and not result.improvements
        assert result.regressions[0].startswith("DiT-XL / params: value moved 675.13 -> ")
    assert moved(directed, "params", 675.5).ok


def test_beating_the_papers_band_is_an_improvement_not_a_status_regression(directed):
    new = copy.deepcopy(directed)
    cell(new, "DiT-XL", "fid").update(measured=2.10, status="fail", reason="2.10 is outside [2.17, 2.37]")
    cell(new, "DiT-XL", "is").update(measured=250.0, status="fail", reason="250.00 is outside [271.46, 282.54]")
    result = compare(directed, new)
    assert [r.split(":")[0] for r in result.regressions] == ["DiT-XL / is"]
    assert result.improvements[0].startswith("DiT-XL / fid: status pass -> fail (2.27 -> 2.10)")
    assert "the value moved the better way (lower is better)" in result.improvements[0]


def test_compare_prints_improvements_and_counts_both(tmp_path, directed, capsys):
    new = copy.deepcopy(directed)
    cell(new, "DiT-XL", "fid")["measured"] = 2.10
    cell(new, "DiT-XL", "speed")["measured"] = 0.40
    old_path, new_path = write_json_atomic(directed, tmp_path / "old.json"), write_json_atomic(new, tmp_path / "new.json")
    assert cli("compare", old_path, new_path) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line[:11] for line in out[:2]] == ["improved   "] * 2
    assert out[-1].endswith("4 cells compared, no regressions, 2 improvement(s)")
    cell(new, "DiT-XL", "is")["measured"] = 260.0
    write_json_atomic(new, new_path)
    assert cli("compare", old_path, new_path) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("REGRESSION DiT-XL / is: value moved 277.00 -> 260.00, worse (higher is better)")
    assert out[-1].endswith("4 cells compared, 1 regression(s), 2 improvement(s)")


#################################################################################
#                  Timing cells that carry their own spread                     #
#################################################################################

def _timed(tmp_path, monkeypatch, ranges):
    """A run of the fake suite whose timing cells (paper 2.0 ± 0.5) are measured over rounds: row -> (value,
    low, high)."""
    from bench.measure.base import Measured
    install_fake(monkeypatch, lambda item, ctx: Measured(*ranges[item.row.name], rounds=5)
                 if item.metric == "fake_s" else VALUES[item.row.name])
    return run_suite(load_suite(write(tmp_path, FAKE_SUITE)), "smoke", machine(tmp_path), Context())


def test_a_range_across_the_bands_edge_is_inconclusive(tmp_path, monkeypatch):
    result = _timed(tmp_path, monkeypatch, {"one": (2.1, 1.9, 2.3), "two": (2.4, 2.2, 2.7), "three": (3.0, 2.8, 3.2)})
    one, two, three = (cell(result, r, "t") for r in ("one", "two", "three"))
    assert one["status"] == "pass" and one["spread"] == {"low": 1.9, "high": 2.3, "rounds": 5, "dropped": 0, "coverage": 1.0}
    assert two["status"] == "inconclusive" and "within the measurement's own spread" in two["reason"]
    assert "2.40 is in [1.50, 2.50]" in two["reason"]  # the median passes, the range does not decide
    assert three["status"] == "fail" and "and so is its range" in three["reason"]
    assert result["counts"]["inconclusive"] == 1 and cell(result, "one")["spread"] is None  # a plain value


def test_the_gate_does_not_fail_on_a_move_within_both_runs_spread(tmp_path, monkeypatch):
    old = _timed(tmp_path, monkeypatch, {"one": (2.0, 1.8, 2.2), "two": (2.0, 1.95, 2.05), "three": (2.0, 1.9, 2.1)})
    new = copy.deepcopy(old)
    # one: moved 0.7 > the tolerance's 0.5, but within 0.5 + both half-ranges (0.2 + 0.2): inconclusive, a note
    cell(new, "one", "t").update(measured=1.3, spread={"low": 1.1, "high": 1.5, "rounds": 5}, status="inconclusive")
    # two: moved 1.0 worse, beyond 0.5 + 0.05 + 0.05: a regression though the status only became inconclusive
    cell(new, "two", "t").update(measured=3.0, spread={"low": 2.95, "high": 3.05, "rounds": 5}, status="fail")
    result = compare(old, new)
    assert [r.split(":")[0] for r in result.regressions] == ["two / t"]
    assert any(n.startswith("one / t: value moved 2.00 -> 1.30") and "inconclusive" in n for n in result.notes)
    # a very noisy run does not excuse any move: the spread allowance is capped at the tolerance (0.5)
    wild = copy.deepcopy(old)
    cell(wild, "one", "t").update(measured=3.2, spread={"low": 0.0, "high": 9.0, "rounds": 5}, status="inconclusive")
    assert [r.split(":")[0] for r in compare(old, wild).regressions] == ["one / t"]
    broken = copy.deepcopy(old)
    cell(old, "two", "t")["status"] = "inconclusive"
    cell(broken, "two", "t").update(status="error", measured=None, spread=None, reason="RuntimeError: x")
    assert [r.split(":")[0] for r in compare(old, broken).regressions] == ["two / t"]  # inconclusive -> error
    cell(old, "two", "t")["status"] = "pass"
    new2 = copy.deepcopy(old)
    cell(new2, "three", "t").update(status="inconclusive", reason="x")  # a verdict lost to noise: a note
    assert compare(old, new2).ok and any(n.startswith("three / t: status pass -> inconclusive") for n in
                                         compare(old, new2).notes)


def test_a_result_written_before_inconclusive_existed_still_reads(tmp_path, baseline):
    from bench.results import load_result, summary_line
    old = copy.deepcopy(baseline)
    del old["counts"]["inconclusive"]
    path = write_json_atomic(old, tmp_path / "fake.json")
    assert load_result(path)["counts"]["inconclusive"] == 0
    assert "0 inconclusive" in summary_line(old)
    bad = copy.deepcopy(baseline)
    cell(bad, "one", "t")["spread"] = {"low": "fast"}
    with pytest.raises(ValueError, match="lacks a numeric low and high"):
        load_result(write_json_atomic(bad, tmp_path / "bad.json"))
