"""The GPU runner's regression gate: reports/ against baselines/<fingerprint>/<profile>/ (bench/baseline.py)."""
import copy
import json

import pytest

from bench import baseline
from bench.measure.base import Context
from bench.results import write_json_atomic
from bench.runner import run_suite
from bench.suite import load_suite
from tests.bench.runner_helpers import FAKE_SUITE, cli, install_fake, machine, write
from tests.bench.test_compare import VALUES, cell


@pytest.fixture
def run_result(tmp_path, monkeypatch):
    install_fake(monkeypatch, lambda item, ctx: VALUES[item.row.name] if item.metric == "fake" else 2.0)
    return run_suite(load_suite(write(tmp_path, FAKE_SUITE)), "smoke", machine(tmp_path), Context())


def reports_with(tmp_path, result, name="reports"):
    folder = tmp_path / name
    folder.mkdir()
    write_json_atomic(result, folder / f"{result['suite']}.json")
    (folder / "notes.json").write_text(json.dumps({"not": "a result"}))  # ignored
    return folder


def test_accept_then_check_passes_and_a_planted_regression_fails(tmp_path, run_result, capsys):
    baselines = tmp_path / "baselines"
    assert cli("baseline", "accept", "--reports", reports_with(tmp_path, run_result), "--baselines", baselines) == 0
    (stored,) = baselines.glob("*/*/*.json")
    assert stored.parent.parent.name == baseline.fingerprint(run_result) and "torch" in stored.parent.parent.name
    assert stored.parent.name == "smoke"  # a ci run is never compared with another profile's baseline

    same = reports_with(tmp_path, copy.deepcopy(run_result), "same")
    assert cli("baseline", "check", "--reports", same, "--baselines", baselines) == 0

    worse = copy.deepcopy(run_result)
    cell(worse, "two").update(status="fail", measured=2.5, reason="outside")
    capsys.readouterr()
    assert cli("baseline", "check", "--reports", reports_with(tmp_path, worse, "worse"), "--baselines", baselines) == 1
    out = capsys.readouterr().out
    assert "REGRESSION two / a: status pass -> fail" in out and "1 regression(s)" in out


def test_a_planted_improvement_passes(tmp_path, run_result, capsys):
    baselines = tmp_path / "baselines"
    worse = copy.deepcopy(run_result)
    cell(worse, "two").update(status="fail", measured=2.5, reason="outside")
    baseline.accept(reports_with(tmp_path, worse, "old"), baselines)  # the baseline was the worse run
    assert cli("baseline", "check", "--reports", reports_with(tmp_path, run_result), "--baselines", baselines) == 0
    assert "improved   two / a: status fail -> pass" in capsys.readouterr().out


def test_another_fingerprint_is_not_compared_and_missing_baselines_are_named(tmp_path, run_result, capsys):
    baselines = tmp_path / "baselines"
    other = copy.deepcopy(run_result)
    other["provenance"]["device"] = "NVIDIA H100 80GB HBM3"
    cell(other, "two").update(status="fail", measured=9.0)
    baseline.accept(reports_with(tmp_path, other, "h100"), baselines)
    reports = reports_with(tmp_path, run_result)
    assert cli("baseline", "check", "--reports", reports, "--baselines", baselines) == 0  # nothing of this machine
    assert "no baseline" in capsys.readouterr().out
    assert cli("baseline", "check", "--reports", reports, "--baselines", baselines, "--require") == 1
    assert cli("baseline", "check", "--reports", tmp_path / "nothing", "--baselines", baselines) == 2


def test_the_gate_fails_closed_on_a_corrupt_or_absent_current_result(tmp_path, run_result, capsys):
    """A baseline of two suites; today's run has one readable result and one corrupt: check (with or without
    --require), accept and report all refuse; with the corrupt file gone, --require fails on the suite that
    has a baseline and no current result."""
    baselines = tmp_path / "baselines"
    second = copy.deepcopy(run_result)
    second["suite"] = "second"
    old = reports_with(tmp_path, run_result, "old")
    write_json_atomic(second, old / "second.json")
    assert cli("baseline", "accept", "--reports", old, "--baselines", baselines) == 0
    today = reports_with(tmp_path, copy.deepcopy(run_result), "today")
    (today / "second.json").write_text('{"schema": "dydit-bench-result/1", "suite": "sec')  # cut off mid-write
    capsys.readouterr()
    for argv in (["baseline", "check", "--reports", today, "--baselines", baselines],
                 ["baseline", "check", "--require", "--reports", today, "--baselines", baselines],
                 ["baseline", "accept", "--reports", today, "--baselines", tmp_path / "new"],
                 ["report", "--out", today]):
        assert cli(*argv) == 2, argv
        assert "second.json: unreadable JSON" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not (today / "index.html").exists()
    (today / "second.json").unlink()
    assert cli("baseline", "check", "--reports", today, "--baselines", baselines) == 0  # no --require: noted
    assert "unmeasured second: baseline" in capsys.readouterr().out
    assert cli("baseline", "check", "--require", "--reports", today, "--baselines", baselines) == 1
