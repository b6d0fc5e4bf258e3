"""`bench compare` and `run --baseline`: regressions found, identical runs pass, timing only on one device."""
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
    install_fake(monkeypatch, lambda row, metric, ctx: VALUES[row["name"]] if metric == "fake" else 2.0)
    return run_suite(load_suite(write(tmp_path, FAKE_SUITE)), "smoke", machine(tmp_path), Context())


def cell(result, row, column="a"):
    return next(c for c in result["cells"] if (c["row"], c["column"]) == (row, column))


def test_identical_runs_pass(tmp_path, baseline, capsys):
    old = write_json_atomic(baseline, tmp_path / "old.json")
    new = write_json_atomic(copy.deepcopy(baseline), tmp_path / "new.json")
    assert cli("compare", old, new) == 0
    assert capsys.readouterr().out.strip().endswith("6 cells compared, no regressions")


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
    assert compare(worse, baseline).ok  # fail -> pass is an improvement


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
    assert cli("compare", a, b) == 2 and "different suites" in capsys.readouterr().out
