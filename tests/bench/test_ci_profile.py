"""The ci profile (a GPU runner's gate on a push): exactly the gate's cells on a CUDA runner with every asset, an
estimate from FLOPs under 30 minutes on one H100, baseline cells (no paper number) and their calibrated spread."""
import copy
import json

import pytest

from bench import baseline, estimate
from bench.compare import compare
from bench.measure.base import Context
from bench.results import MEASURED
from dydit.fileio import write_json_atomic
from bench.runner import Machine, prepare, run_suite
from bench.suite import SuiteError, load_suite
from tests.bench.runner_helpers import cli, install_fake, machine, write

DYNAMIC = ("DyDiT-XL λ=0.7", "DyDiT-XL λ=0.5")
# the gate: params and FLOPs, the DDIM-50 s/image ratios of Tables 4 and 18, FID-5K (DDIM-50) of DiT-XL/2
# and DyDiT-XL/2 λ 0.7 / 0.5
CI_CELLS = {
    "table1": {(r, c) for r in ("DiT-L", "DiT-XL", "SiT-XL", *DYNAMIC) for c in ("params", "flops")},
    "table4": {(r, "ratio_ddim50") for r in DYNAMIC} | {(r, "fid5k_ddim50") for r in ("DiT-XL", *DYNAMIC)},
    "table18": {(r, "ratio_ddim50") for r in ("DiT-XL, DeepCache 2", "DiT-XL, DeepCache 5", "DyDiT-XL λ=0.5",
                                              "DyDiT-XL λ=0.5, DeepCache 2", "DyDiT-XL λ=0.5, DeepCache 3")},
}


@pytest.fixture(scope="module")
def ci_plans():
    runner = Machine.assumed_runner()  # a fake CUDA machine with every asset present
    return {name: prepare(load_suite(f"suites/{name}.toml"), "ci", runner, Context(profile="ci", device="cuda"))[1]
            for name in CI_CELLS}


def test_the_ci_plan_lists_exactly_the_gate_cells(ci_plans):
    for name, plan in ci_plans.items():
        assert {(d.row, d.column) for d in plan.decisions if d.profile == "ci"} == CI_CELLS[name], name
    fid = [g for g in ci_plans["table4"].groups if g.measure == "quality"]
    assert {g.items[0].sampler.num_samples for g in fid} == {5000}
    assert {(g.items[0].sampler.name, g.items[0].sampler.steps) for g in fid} == {("ddim", 50)}
    assert all(item.cell.baseline for g in fid for item in g.items)  # no paper FID-5K: the runner's baseline


def test_the_ci_estimate_on_one_h100_is_under_30_minutes_and_the_precision_is_chosen_by_it(ci_plans, capsys):
    groups = {name: plan.groups for name, plan in ci_plans.items()}
    chosen = estimate.total_minutes(estimate.estimate(groups, estimate.H100))
    by_precision = {p: estimate.total_minutes(estimate.estimate(groups, estimate.H100, p)) for p in ("fp32", "tf32",
                                                                                                     "bf16")}
    assert chosen < 30
    assert by_precision["fp32"] > by_precision["tf32"] > 30 > by_precision["bf16"]  # why the FID-5K runs in bf16
    # the arithmetic the issue states: 5,000 DiT-XL/2 images, 118.7 GMACs x 2 CFG rows x 50 steps ~ 1.2e17 FLOPs
    dit = next(g for g in groups["table4"] if g.measure == "quality" and g.items[0].row.name == "DiT-XL")
    model_flops = 5000 * estimate.model_flops_per_image(dit.items[0])
    assert model_flops == pytest.approx(1.19e17, rel=0.01)
    assert cli("estimate") == 0
    out = capsys.readouterr().out
    assert f"total: {chosen:.1f} min" in out and "not measured" in out and "tf32" in out


def test_a_baseline_cell_is_measured_never_judged_and_takes_no_paper_number(tmp_path, monkeypatch):
    install_fake(monkeypatch, lambda item, ctx: 5.0, metrics=(("fake", "u", "quality", "lower"),))
    text = BASELINE_SUITE  # one baseline cell, defined below
    result = run_suite(load_suite(write(tmp_path, text)), "ci", machine(tmp_path), Context(profile="ci"))
    (cell,) = result["cells"]
    assert cell["status"] == MEASURED and cell["paper"] is None and cell["measured"] == 5.0
    assert result["counts"][MEASURED] == 1
    for bad, field in ((text.replace('baseline = true,', 'baseline = true, paper = 1.0,'), "paper"),
                       (text.replace(', note = "no paper number at this setting"', ""), "note"),
                       (text.replace('profiles = ["ci"]', 'profiles = ["nightly"]'), "profiles")):
        with pytest.raises(SuiteError, match=field):
            load_suite(write(tmp_path, bad, "bad.toml"))


def test_the_prediction_bound_rule():
    # mean 5.0, s = 0.1, n = 3: t(0.995, 2) = 9.925 times sqrt(1 + 1/3)
    assert baseline.prediction_bound([5.0, 5.1, 4.9]) == pytest.approx(9.925 * 0.1 * (4 / 3) ** 0.5, rel=1e-3)
    with pytest.raises(ValueError):
        baseline.prediction_bound([5.0])


def _measured_result():
    provenance = {"device": "cuda: H100", "suite_file": "suites/table4.toml", "versions": {"torch": "2", "cuda": "13"}}
    cell = {"row": "DiT-XL", "column": "fid5k_ddim50", "metric": "fid", "status": MEASURED, "measured": 5.0,
            "paper": None, "unit": "", "kind": "quality", "reason": "", "tolerance": None, "spread": None}
    return {"suite": "table4", "profile": "ci", "provenance": provenance, "cells": [cell]}


def test_the_gate_fails_closed_without_a_calibration_then_judges_within_it(tmp_path, capsys):
    from bench.results import SCHEMA
    old = {**_measured_result(), "schema": SCHEMA}
    assert compare(old, copy.deepcopy(old)).regressions  # no calibrated spread: fails closed
    folder = tmp_path / "baselines" / baseline.fingerprint(old) / "ci"
    folder.mkdir(parents=True)
    write_json_atomic(old, folder / "table4.json")
    runs = []

    def run_cells(suite_file, keys, seed):
        runs.append((keys, seed))
        return {keys[0]: {1: 5.1, 2: 4.9}[seed]}

    path = baseline.calibrate(folder, run_cells)
    assert runs == [([("DiT-XL", "fid5k_ddim50")], 1), ([("DiT-XL", "fid5k_ddim50")], 2)]
    stored = json.loads(path.read_text())
    assert stored["cells"][0]["seed_values"] == [5.1, 4.9] and stored["rule"] == baseline.RULE
    bound = baseline.prediction_bound([5.0, 5.1, 4.9])  # about 1.15
    reports = tmp_path / "reports"
    reports.mkdir()
    for measured, code in ((5.0 + bound * 0.9, 0), (5.0 + bound * 1.1, 1), (3.0, 0)):  # worse, too worse, better
        new = copy.deepcopy(old)
        new["cells"][0]["measured"] = measured
        write_json_atomic(new, reports / "table4.json")
        capsys.readouterr()
        assert cli("baseline", "check", "--require", "--reports", reports, "--baselines", tmp_path / "baselines") \
            == code, measured
        assert ("REGRESSION" in capsys.readouterr().out) == bool(code)


BASELINE_SUITE = '''\
[suite]
name = "gate"
title = "Gate"

[[columns]]
key = "fid5k"
label = "FID-5K"
metric = "fake"
profiles = ["ci"]

[[rows]]
name = "one"
model = "DiT-S/8"
cells = { fid5k = { baseline = true, note = "no paper number at this setting" } }
'''


def test_run_accept_calibrate_check_end_to_end_through_the_cli(tmp_path, monkeypatch, capsys):
    """`run --profile ci`, `baseline accept`, `baseline calibrate` (the cell rerun per seed), `baseline check`; the
    report shows the measured cell without a paper number."""
    by_seed = {0: 5.0, 1: 5.2, 2: 4.8, 7: 9.0}
    install_fake(monkeypatch, lambda item, ctx: by_seed[item.sampler.seed], metrics=(("fake", "u", "quality", "lower"),))
    suite, reports, baselines = write(tmp_path, BASELINE_SUITE), tmp_path / "reports", tmp_path / "baselines"
    assert cli("run", suite, "--profile", "ci", "--out", reports) == 0
    page = (reports / "gate.html").read_text()
    assert "• measured" in page and "st-measured" in page
    assert cli("baseline", "accept", "--reports", reports, "--baselines", baselines) == 0
    assert cli("baseline", "check", "--reports", reports, "--baselines", baselines) == 1  # not calibrated: closed
    capsys.readouterr()
    assert cli("baseline", "calibrate", "--reports", reports, "--baselines", baselines, "--seeds", "0", "1") == 2
    assert "0 is the suite's own seed" in capsys.readouterr().err
    assert cli("baseline", "calibrate", "--reports", reports, "--baselines", baselines) == 0
    (calibration,) = baselines.glob("*/ci/calibration.json")
    assert json.loads(calibration.read_text())["cells"][0]["seed_values"] == [5.2, 4.8]
    assert cli("baseline", "check", "--require", "--reports", reports, "--baselines", baselines) == 0
    by_seed[0] = 9.0  # a planted regression far beyond the calibrated spread (about 2.3)
    assert cli("run", suite, "--profile", "ci", "--out", reports) == 0
    capsys.readouterr()
    assert cli("baseline", "check", "--require", "--reports", reports, "--baselines", baselines) == 1
    assert "REGRESSION one / fid5k: value moved 5.00 -> 9.00" in capsys.readouterr().out
    # the calibration belongs to its baseline: edited, the check refuses; a new accept removes it (fails closed)
    (accepted,) = baselines.glob("*/ci/gate.json")
    edited = json.loads(accepted.read_text())
    edited["cells"][0]["measured"] = 5.5
    accepted.write_text(json.dumps(edited))
    assert cli("baseline", "check", "--reports", reports, "--baselines", baselines) == 2
    assert "was made for a baseline value 5" in capsys.readouterr().err
    assert cli("baseline", "accept", "--reports", reports, "--baselines", baselines) == 0
    assert not calibration.exists()
    assert cli("baseline", "check", "--reports", reports, "--baselines", baselines) == 1
    assert cli("baseline", "calibrate", "--reports", reports, "--baselines", baselines, "--seeds", "3") == 2
    assert "at least 2" in capsys.readouterr().err


def test_a_gated_cell_that_vanishes_or_comes_back_uncalibrated_fails_the_gate():
    from bench.results import ERROR, SCHEMA
    old = {**_measured_result(), "schema": SCHEMA}
    gone = copy.deepcopy(old)
    gone["cells"] = []
    assert compare(old, gone).regressions  # a measured cell may not vanish
    broken = copy.deepcopy(old)
    broken["cells"][0].update(status=ERROR, measured=None)
    assert compare(broken, old).regressions  # error -> measured without a calibration: not judged, so not passed
