"""Per-cell profiles (`auto`), the plan `bench run` prints first, and judged sections (the pipeline check)."""
import sys
import types

import pytest
import numpy as np

from bench import runner
from bench.measure.base import Context, Measurement
from bench.sections.pipeline_check import rank_check
from bench.results import ERROR, FAIL, PASS, REFERENCE, SKIPPED
from bench.runner import AUTO, Machine, SuiteRun, decide, make_plan, measurements, plan_table, run_section, run_suite
from bench.suite import SUITES_DIR, SectionSpec, load_suite

TABLE1 = SUITES_DIR / "table1.toml"


class FakeMachine(Machine):
    """A CUDA machine with every asset present but the named ones (nothing is read from disk)."""

    def __init__(self, absent=(), cuda=True):
        super().__init__(cuda=cuda, assets_root=None, manifest={})
        self.absent = set(absent)

    def asset_problem(self, name):
        return f"{name} (missing: <assets>/{name})" if name in self.absent else None


def fake_measurements(monkeypatch, value=2.0):
    """Every measurement returns `value` and records (row, metric, profile) instead of measuring."""
    calls = []
    module = types.ModuleType("fake_measure_all")
    module.MEASUREMENT = type("Fake", (Measurement,), {
        "check": lambda self, item: None,
        "measure": lambda self, item, ctx: calls.append((item.row.name, item.metric, ctx.profile)) or value})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for name in list(runner.MEASUREMENTS):
        monkeypatch.setitem(runner.MEASUREMENTS, name, module.__name__)
    return calls


def test_every_asset_but_sits_runs_the_dit_and_dydit_quality_cells(monkeypatch):
    suite = load_suite(TABLE1)
    suite.sections = []  # the pipeline check is tested on its own
    calls = fake_measurements(monkeypatch)
    result = run_suite(suite, AUTO, FakeMachine(absent={"sit-xl-2"}), Context())
    cells = {(c["row"], c["column"]): c for c in result["cells"]}
    for row in ("DiT-XL", "DyDiT-XL λ=0.7", "DyDiT-XL λ=0.5"):
        assert cells[(row, "fid")]["status"] in (PASS, FAIL), cells[(row, "fid")]
        assert (row, "fid", "full") in calls
    sit = cells[("SiT-XL", "fid")]
    assert sit["status"] == SKIPPED and "sit-xl-2" in sit["reason"]  # its weights are absent here
    assert cells[("SiT-XL", "params")]["status"] in (PASS, FAIL)  # its architecture cells still run
    assert cells[("ADM", "fid")]["status"] == REFERENCE


def test_auto_on_a_cpu_without_assets_runs_what_smoke_runs():
    suite = load_suite(TABLE1)
    from bench.assets import load_manifest
    cpu = FakeMachine(absent=set(load_manifest()), cuda=False)
    auto = {(d.row, d.column): d.profile is not None for d in plan(suite, AUTO, cpu).decisions}
    smoke = {(d.row, d.column): d.profile is not None for d in plan(suite, "smoke", cpu).decisions}
    assert auto == smoke and any(auto.values())
    fid = decide(suite.rows[[r.name for r in suite.rows].index("DiT-XL")].cells["fid"], AUTO, cpu)
    assert fid.profile is None and "a CUDA GPU" in fid.reason and "dit-xl-2" in fid.reason


def test_the_plan_table_counts_cells_and_says_why():
    suite = load_suite(TABLE1)
    text = plan_table(plan(suite, AUTO, FakeMachine(absent={"dit-xl-2"}, cuda=False)))
    head = text.splitlines()[0]
    runs, skips, cited = (int(head.split()[i]) for i in (0, 7, 9))
    assert runs + skips + cited == len(list(suite.cells()))
    assert "needs a CUDA GPU, dit-xl-2" in text and "run (full)" in text and "cited" in text


def plan(suite, profile, machine):
    return make_plan(suite, profile, machine, measurements(suite, profile, machine, Context()))


RUN = SuiteRun(suite=None, ctx=Context(), cells=[], records={})  # what a section receives, empty


def section(monkeypatch, run):
    module = types.ModuleType("fake_section_check")
    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return SectionSpec("Check", module.__name__, ("smoke",))


def test_a_section_passes_only_when_every_row_is_judged_ok(monkeypatch):
    row = {"name": "a", "value": 0.0, "unit": "", "ok": True, "expected": "0"}
    good = run_section(section(monkeypatch, lambda ctx: {"rows": [row]}), AUTO, RUN)
    assert good["status"] == PASS
    bad = run_section(section(monkeypatch, lambda ctx: {"rows": [row, {**row, "name": "b", "ok": False}]}),
                      AUTO, RUN)
    assert bad["status"] == FAIL and bad["note"].startswith("FAILED: b")
    unjudged = run_section(section(monkeypatch, lambda ctx: {"rows": [{"name": "c", "value": 1.0}]}), "smoke",
                           RUN)
    assert unjudged["status"] == ERROR and "without a boolean 'ok': c" in unjudged["note"]
    empty = run_section(section(monkeypatch, lambda ctx: {"rows": []}), "smoke", RUN)
    assert empty["status"] == ERROR
    noisy = {**row, "name": "d", "ok": False, "inconclusive": True}
    undecided = run_section(section(monkeypatch, lambda ctx: {"rows": [row, noisy]}), AUTO, RUN)
    assert undecided["status"] == "inconclusive" and undecided["note"].startswith("INCONCLUSIVE (within their own")
    both = run_section(section(monkeypatch, lambda ctx: {"rows": [noisy, {**row, "name": "b", "ok": False}]}), AUTO, RUN)
    assert both["status"] == FAIL  # a failed row decides, whatever else is undecided


def test_a_timed_section_row_is_decided_only_when_its_rounds_agree():
    from bench.sections.loop import _timed_row
    below = lambda v: v <= 0.55  # noqa: E731
    assert _timed_row("x", 0.52, [0.51, 0.53, 0.54], below, "≤ 0.55")["ok"]
    straddles = _timed_row("x", 0.54, [0.52, 0.56, 0.53], below, "≤ 0.55")
    assert not straddles["ok"] and straddles["inconclusive"] and "rounds 0.520-0.560" in straddles["name"]
    failed = _timed_row("x", 0.60, [0.58, 0.62], below, "≤ 0.55")
    assert not failed["ok"] and "inconclusive" not in failed
    # with 9 rounds the interval of the median leaves out the lowest and the highest: one slow round decides nothing
    nine = [0.50, 0.51, 0.49, 0.52, 0.50, 0.63, 0.51, 0.50, 0.52]
    one_slow = _timed_row("x", 0.51, nine, below, "≤ 0.55")
    assert one_slow["ok"] and "rounds 0.500-0.520 (of 9, the median's 96% interval)" in one_slow["name"]
    assert _timed_row("x", 0.51, nine[:5] + [0.63, 0.60, 0.50, 0.52], below, "≤ 0.55")["inconclusive"]


def test_the_interval_of_a_median_is_distribution_free_and_covers_at_least_90_percent():
    from bench.measure.base import MEDIAN_COVERAGE, median_interval
    assert median_interval([3, 1, 2, 5, 4]) == (1.0, 5.0, 0, 1 - 2 / 32)  # 5 rounds: min and max, coverage 0.94
    low, high, dropped, coverage = median_interval(range(9))
    assert (low, high, dropped) == (1.0, 7.0, 1) and coverage == pytest.approx(1 - 2 * 10 / 512)
    assert median_interval(range(11))[:3] == (2.0, 8.0, 2)  # 0.935: 3 left out would cover only 0.79
    assert median_interval([0.7]) == (0.7, 0.7, 0, 0.0)
    # the rule's promise, by simulation: the interval holds the true median at least MEDIAN_COVERAGE of the time
    rng = np.random.default_rng(0)
    for n in (5, 9, 11):
        hits = [lo <= 0 <= hi for lo, hi, *_ in (median_interval(rng.standard_cauchy(n)) for _ in range(4000))]
        assert np.mean(hits) >= MEDIAN_COVERAGE - 0.015


def test_a_pipeline_check_with_a_rank_mismatch_fails(monkeypatch):
    one = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    two = one.copy()
    assert rank_check(two, one)["ok"] is True
    two[2, 3, 4, 1] ^= 1  # one pixel level in one image
    mismatch = rank_check(two, one)
    assert mismatch["ok"] is False and mismatch["value"] == 1.0
    result = run_section(section(monkeypatch, lambda ctx: {"rows": [mismatch]}), AUTO, RUN)
    assert result["status"] == FAIL


def test_the_pipeline_check_runs_end_to_end_and_every_check_holds(tmp_path):
    """Table 1's smoke section for real, once (the report tests use a stand-in): every sampler, 2 torchrun ranks
    against 1 process, torch-fidelity's loading code and the metrics, on random weights."""
    import types
    from bench.measure.base import Context
    from bench.sections import pipeline_check
    section = pipeline_check.run(types.SimpleNamespace(ctx=Context(work_dir=tmp_path)))
    assert section["rows"] and all(row["ok"] for row in section["rows"]), [r for r in section["rows"] if not r["ok"]]
    assert "2 ranks give the same images as 1 process" in section["note"]
