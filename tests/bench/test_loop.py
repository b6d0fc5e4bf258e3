"""Whole-loop s/image: the estimate's accounting, the estimate against whole runs on a work clock (no
wall-clock assertions: speed is measured in benchmarks), and the Table 4/18 measurement through the runner."""
import statistics

import pytest
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from bench.timing import calls as timing
from bench.timing.loop import LoopPath, check_estimate, picks, shared_dit, step_counts, time_loops
from bench.measure.base import Context
from bench.measure.loop import FULL_SIZE, MINI, MINI_DEEPCACHE, timing_budget
from dydit.sampling import SamplerSpec
from bench.results import ERROR, INCONCLUSIVE, PASS, SKIPPED
from bench.runner import AUTO, run_suite

from bench.timing.calibration import calibrated_dydit, schedule
from bench.suite import load_suite
from dydit.deepcache import cached_step_macs
from dydit.fast import FastDyDiT
from dydit.flops import dit_macs
from tests.bench.runner_helpers import machine, write


class WorkClock(TorchFunctionMode):
    """A deterministic clock: it advances by the MACs of every linear layer and attention that runs."""
    now = 0.0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear:
            x, w = args[0], args[1]
            WorkClock.now += x.numel() / x.shape[-1] * w.shape[0] * w.shape[1]
        elif func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            WorkClock.now += q.numel() * k.shape[-2] * 2
        return out


@pytest.fixture
def work_clock(monkeypatch):
    """Every timing of bench.timing.calls reads the work clock instead of the wall clock."""
    def time_once(fn, device="cpu"):
        start = WorkClock.now
        fn()
        return WorkClock.now - start
    monkeypatch.setattr(timing, "time_once", time_once)
    with WorkClock():
        yield


@pytest.fixture(scope="module")
def dydit():
    return calibrated_dydit("DyDiT-S/8", 0.5, schedule(10), log=lambda *a: None)


def test_picks_and_step_counts():
    assert picks(50, 3) == [0, 24, 49] and picks(50, 3, interval=5) == [0, 20, 45]
    assert picks(4, 10) == [0, 1, 2, 3]
    # by cost: steps ordered 1, 3, 5, 2, 0, 4; the medians of two strata of three are steps 3 and 0
    assert picks(6, 2, cost=[5, 1, 4, 2, 6, 3]) == [0, 3]
    assert step_counts(250, 0) == (250, 0) and step_counts(250, 2) == (125, 125) and step_counts(250, 3) == (84, 166)


def test_estimate_adds_up_its_parts(dydit):
    paths = [LoopPath("DiT", shared_dit(dydit)), LoopPath("fast", FastDyDiT(dydit)),
             LoopPath("fast+cache", FastDyDiT(dydit), deepcache=3)]
    out = time_loops(paths, SamplerSpec(name="ddim", steps=12, batch_size=2), calls=3, repeats=1,
                     decode=lambda z: z * 2, decode_gmacs_per_image=1.5, log=lambda *a: None)
    for t in out.values():
        total = t.full_steps * t.full_call_s + t.cached_steps * t.cached_call_s + t.loop_s + t.decode_s
        assert t.s_per_image == pytest.approx(total / 2)
        assert t.gmacs_per_image == pytest.approx(t.model_gmacs_per_image + 1.5)
    assert out["DiT"].model_gmacs_per_image == pytest.approx(2 * 12 * dit_macs(dydit) / 1e9)  # CFG: 2 rows/image
    cached = out["fast+cache"]
    assert (cached.full_steps, cached.cached_steps) == (4, 8)
    per_full = (cached.model_gmacs_per_image * 1e9 / 2 - 8 * cached_step_macs(dydit)) / 4
    assert per_full < 0.8 * dit_macs(dydit), "the calibrated DyDiT's full calls skip compute"


@pytest.mark.parametrize("sampler,steps,interval", [("ddpm", 60, 0), ("ddim", 50, 3), ("dpm-solver++", 25, 2)])
def test_estimate_matches_whole_runs_on_a_work_clock(work_clock, dydit, sampler, steps, interval):
    """The method for long schedules (K calls on the schedule's own timesteps x steps + the loop's own work)
    against whole runs of every step, with time = the work done: exact for DiT, within 10 % for a DyDiT
    whose width changes with t (the suites' wall-clock check allows 15 %: bench/sections/loop.py)."""
    paths = [LoopPath("DiT", shared_dit(dydit), interval), LoopPath("fast", FastDyDiT(dydit), interval)]
    estimates = time_loops(paths, SamplerSpec(name=sampler, steps=steps, batch_size=1), calls=5, repeats=1,
                           log=lambda *a: None)
    checked = check_estimate(paths, estimates, repeats=1)
    assert checked["DiT"]["rel_error"] == pytest.approx(0.0, abs=1e-9)
    assert abs(checked["fast"]["rel_error"]) <= 0.10, checked["fast"]  # the method's own error, no timing noise
    assert checked["fast"]["measured_s_per_image"] < 0.8 * checked["DiT"]["measured_s_per_image"]


def test_short_whole_runs_repeat_within_a_round_and_count_once(work_clock, dydit, monkeypatch):
    """A whole run shorter than WHOLE_RUN_MIN_S runs several times per round (sub-second runs are timer noise);
    what is reported is still one run's time, so DiT's estimate stays exact."""
    from bench.timing import loop
    paths = [LoopPath("DiT", shared_dit(dydit)), LoopPath("fast", FastDyDiT(dydit))]
    estimates = time_loops(paths, SamplerSpec(name="ddim", steps=10, batch_size=1), calls=5, repeats=1,
                           log=lambda *a: None)
    monkeypatch.setattr(loop, "WHOLE_RUN_MIN_S", 2.5 * estimates["DiT"].s_per_image)
    checked = check_estimate(paths, estimates, repeats=2)
    assert checked["DiT"]["times"] == 3 and checked["fast"]["times"] >= 3
    assert checked["DiT"]["rel_error"] == pytest.approx(0.0, abs=1e-9)
    assert checked["DiT"]["runs"] == pytest.approx([estimates["DiT"].s_per_image] * 2)
    monkeypatch.setattr(loop, "WHOLE_RUN_MIN_S", 1e6 * estimates["DiT"].s_per_image)  # a tiny model: capped
    assert check_estimate(paths, estimates, repeats=1)["DiT"]["times"] == loop.WHOLE_RUN_MAX_TIMES


SUITE = """
[suite]
name = "loop-tiny"
title = "tiny loop suite"

[suite.sampler]
cfg_scale = 1.5

[[columns]]
key = "ratio"
label = "s/image ÷ DiT's"
metric = "s_per_image_ratio"
profiles = ["smoke", "full"]
sampler = { name = "dpm-solver++", steps = 10, batch_size = 1 }
tolerance = { window = [-1.0, 0.005], why = "at or below" }

[[rows]]
name = "DiT-S/8, DeepCache 2"
model = "DiT-S/8"
sampler = { deepcache_interval = 2 }
cells = { ratio = 0.55 }

[[rows]]
name = "DyDiT-S/8 λ=0.5"
model = "DyDiT-S/8"
options = { flops_target = 0.5 }
cells = { ratio = 0.9 }

[[rows]]
name = "DyDiT-S/8 λ=0.5, DeepCache 2"
model = "DyDiT-S/8"
options = { flops_target = 0.5 }
sampler = { deepcache_interval = 2 }
cells = { ratio = 0.5 }

[[sections]]
title = "Whole sampling loops"
module = "loop"
profiles = ["smoke", "full"]
"""


def test_ratio_cells_time_every_path_in_one_run_and_the_section_judges_them(tmp_path, monkeypatch):
    suite = load_suite(write(tmp_path, SUITE, "loop.toml"))
    ctx = Context(work_dir=tmp_path / "work")
    monkeypatch.setattr("bench.timing.speed.timing_vae", lambda device: (None, 0.0, "none (test)"))  # the SD VAE's decode takes seconds
    result = run_suite(suite, AUTO, machine(tmp_path), ctx)
    cells = {c["row"]: c for c in result["cells"]}
    assert all(c["status"] not in (ERROR, SKIPPED) for c in cells.values()), cells
    (run_,) = result["provenance"]["measurements"]["loop_speed"]
    assert set(run_["paths"]) == {"DiT", "DiT, DeepCache 2", "DyDiT-S/8 λ=0.5", "DyDiT-S/8 λ=0.5, DeepCache 2"}
    for row, path in (("DiT-S/8, DeepCache 2", "DiT, DeepCache 2"), ("DyDiT-S/8 λ=0.5", "DyDiT-S/8 λ=0.5")):
        p = run_["paths"][path]
        dit_rounds = run_["paths"]["DiT"]["rounds_s_per_image"][: len(p["rounds_s_per_image"])]  # the same rounds
        assert cells[row]["measured"] == pytest.approx(p["s_per_image"] / statistics.median(dit_rounds))
    assert 0.3 < run_["paths"]["DyDiT-S/8 λ=0.5"]["flops_ratio"] < 0.8
    # each ratio carries the range of its interleaved rounds (round r of every path side by side)
    p = run_["paths"]["DyDiT-S/8 λ=0.5"]
    assert len(p["ratio_rounds"]) == len(p["rounds_s_per_image"]) in (5, 10, 15)  # more where undecided
    assert run_["budget"] == {"calls": 3, "repeats": 5, "whole_runs": 2, "more": 5, "most": 15}
    # at 5 rounds the interval of the median is their whole range
    spread = cells["DyDiT-S/8 λ=0.5"]["spread"]
    if spread["rounds"] == 5:
        assert (spread["low"], spread["high"], spread["dropped"]) == (
            min(min(p["ratio_rounds"]), p["ratio"]), max(max(p["ratio_rounds"]), p["ratio"]), 0)
    assert cells["DyDiT-S/8 λ=0.5"]["status"] in (PASS, "fail", "inconclusive")
    (section,) = result["sections"]
    names = " | ".join(r["name"] for r in section["rows"])
    assert section["status"] in (PASS, "fail", "inconclusive") and "compose" in names and "estimate vs whole" in names
    assert "realized" in names and "s/image ÷ DiT without cache" in names


@pytest.mark.parametrize("second, status, rounds", [([0.87] * 5, PASS, 10), ([0.85, 0.95] * 5, INCONCLUSIVE, 15)])
def test_a_path_whose_interval_crosses_its_band_edge_is_timed_more_rounds_beside_dit(tmp_path, monkeypatch, second,
                                                                                      status, rounds):
    """Scripted rounds: the DyDiT's ratio over 5 rounds straddles its bound (0.905); only it and DiT are timed again,
    5 rounds at a time, until its interval decides (10 rounds) or it has 15 (inconclusive)."""
    first = [0.86, 0.88, 0.89, 0.90, 0.95]  # one round above the bound: over 10 rounds the highest is left out
    batches = []

    def scripted(calls, repeats, warmup=0, device="cpu"):
        if "DiT/full" not in calls:  # the section's whole runs (bench.timing.loop.check_estimate)
            return {name: (1.0, [1.0] * repeats) for name in calls}
        batches.append(sorted(calls))
        dyn = (first if len(batches) == 1 else second)[:repeats]
        script = {"DyDiT-S/8 λ=0.5/full": dyn, "DyDiT-S/8 λ=0.5, DeepCache 2/full": [0.9] * repeats}
        totals = {name: [0.01] * repeats if name.endswith("/cached") else script.get(name, [1.0] * repeats)
                  for name in calls}
        return {name: (statistics.median(ts), ts) for name, ts in totals.items()}
    monkeypatch.setattr("bench.timing.loop.interleaved_call_medians", scripted)
    nulls, counted = [], []
    monkeypatch.setattr("bench.timing.loop.median_seconds",
                        lambda fn, repeats, warmup, device: nulls.append(fn) or (0.0, [0.0]))
    from bench.timing import loop as loop_timing
    real_macs = loop_timing._call_macs
    monkeypatch.setattr(loop_timing, "_call_macs", lambda path, *a: counted.append(path.name) or real_macs(path, *a))
    monkeypatch.setattr("bench.timing.speed.timing_vae", lambda device: (None, 0.0, "none (test)"))
    result = run_suite(load_suite(write(tmp_path, SUITE, "loop.toml")), AUTO, machine(tmp_path),
                       Context(work_dir=tmp_path / "work"))
    # a further look times the rounds only: each path's MACs are counted and the null loop timed in the first
    assert len(nulls) == 1 and len(set(counted.count(name) for name in set(counted))) == 1, (len(nulls), counted)
    cells = {c["row"]: c for c in result["cells"]}
    assert len(batches) == 1 + (rounds - 5) // 5
    assert all(b == ["DiT/full", "DyDiT-S/8 λ=0.5/full"] for b in batches[1:])  # only the undecided path beside DiT
    (run_,) = result["provenance"]["measurements"]["loop_speed"]
    p = run_["paths"]["DyDiT-S/8 λ=0.5"]
    assert len(p["ratio_rounds"]) == rounds and len(run_["paths"]["DiT"]["rounds_s_per_image"]) == rounds
    timed = first + second[:5] * ((rounds - 5) // 5)  # each further look times `second`'s first 5 rounds
    assert p["ratio_rounds"] == pytest.approx(timed)
    assert len(run_["paths"]["DiT, DeepCache 2"]["rounds_s_per_image"]) == 5  # decided at 5: a prefix of DiT's
    assert p["ratio"] == pytest.approx(statistics.median(timed))
    cell = cells["DyDiT-S/8 λ=0.5"]
    assert (cell["status"], cell["spread"]["rounds"]) == (status, rounds), cell
    assert cells["DiT-S/8, DeepCache 2"]["status"] == cells["DyDiT-S/8 λ=0.5, DeepCache 2"]["status"] == PASS


def test_the_mini_models_are_timed_with_more_calls_and_rounds_than_full_size_ones():
    assert timing_budget("DyDiT-Mini/2") == timing_budget("DiT-Mini/2") == MINI
    assert timing_budget("DyDiT-Mini/2", deepcache=True) == MINI_DEEPCACHE
    assert timing_budget("DyDiT-XL/2") == timing_budget("DiT-S/8", deepcache=True) == FULL_SIZE
    assert MINI.calls > FULL_SIZE.calls and MINI.repeats > FULL_SIZE.repeats and MINI.whole_runs >= 3
    # DeepCache's compose checks combine four paths' rounds: more of them
    assert MINI_DEEPCACHE.repeats > MINI.repeats and MINI_DEEPCACHE.calls == MINI.calls


def test_a_dydit_row_without_lambda_is_an_error_and_no_dydit_is_a_skip(tmp_path, monkeypatch):
    text = SUITE.replace('options = { flops_target = 0.5 }\ncells = { ratio = 0.9 }', 'cells = { ratio = 0.9 }')
    suite = load_suite(write(tmp_path, text, "loop.toml"))
    ctx = Context(work_dir=tmp_path / "work")
    monkeypatch.setattr("bench.timing.speed.timing_vae", lambda device: (None, 0.0, "none (test)"))
    result = run_suite(suite, AUTO, machine(tmp_path), ctx)
    assert {c["status"] for c in result["cells"]} == {ERROR}  # one setup: its run fails for every cell
    assert "flops_target" in result["cells"][0]["reason"]
    only_dit = SUITE.split("[[rows]]\nname = \"DyDiT")[0]
    result = run_suite(load_suite(write(tmp_path, only_dit + '\n', "dit.toml")), AUTO, machine(tmp_path), ctx)
    assert result["cells"][0]["status"] == SKIPPED and "no DyDiT row" in result["cells"][0]["reason"]


def test_a_dysit_row_is_timed_through_the_dynamic_path_against_its_own_sit(tmp_path, monkeypatch):
    """The loop measurement asks the registry what a row is: a DySiT row is dynamic (its routers calibrated,
    its calls skipping compute) and is compared with SiT, its static counterpart."""
    monkeypatch.setattr("bench.timing.speed.timing_vae", lambda device: (None, 0.0, "none (test)"))
    head = SUITE.split("[[rows]]")[0]
    text = head + '[[rows]]\nname = "DySiT-S/8 λ=0.5"\nmodel = "DySiT-S/8"\noptions = { flops_target = 0.5 }\n' \
                  'cells = { ratio = 0.9 }\n'
    suite = load_suite(write(tmp_path, text, "dysit.toml"))
    result = run_suite(suite, AUTO, machine(tmp_path), Context(work_dir=tmp_path / "work"))
    (cell,) = result["cells"]
    assert cell["status"] not in (ERROR, SKIPPED), cell
    (run_,) = result["provenance"]["measurements"]["loop_speed"]
    assert run_["setup"]["dit"] == "SiT-S/8" and set(run_["paths"]) == {"DiT", "DySiT-S/8 λ=0.5"}
    dynamic = run_["paths"]["DySiT-S/8 λ=0.5"]
    assert 0.3 < dynamic["flops_ratio"] < 0.8  # calibrated routers: its calls skip compute
    assert "routers calibrated" in run_["weights"]["DySiT-S/8 λ=0.5"]


def test_speed_cli_loop_mode_reports_consistent_ratios(tmp_path):
    import json
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "bench", "speed", "--loop", "--model", "DyDiT-S/8", "--sampler", "ddim",
                           "--steps", "6", "--calls", "2", "--repeats", "1", "--cache-gb", "0,1", "--no-vae", "--json",
                           "--min-realized", "0.0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert set(r["paths"]) == {"DiT", "DyDiT fast, cache 0 GiB", "DyDiT fast, cache 1 GiB"}
    for p in r["paths"].values():
        assert p["realized"] == pytest.approx(p["speedup"] * p["flops_ratio"])
    assert r["paths"]["DyDiT fast, cache 0 GiB"]["sliced_weights_gib"] == 0


def test_the_estimate_check_is_inconclusive_when_its_whole_runs_disagree():
    """Each whole run is judged against the estimate: all within 15 %: pass; all beyond: fail; split: inconclusive."""
    from bench.sections.loop import check_rows

    def checked(*errors):
        return {"DiT": {"estimated_s_per_image": 1.0, "measured_s_per_image": 1.0, "rel_error": sorted(errors)[0],
                        "rel_error_rounds": list(errors)}}
    (ok,), (bad,), (split,) = check_rows(checked(0.05, -0.1)), check_rows(checked(0.2, 0.3)), \
        check_rows(checked(0.05, -0.2))
    assert ok["ok"] and not bad["ok"] and not bad.get("inconclusive")
    assert not split["ok"] and split["inconclusive"] is True and "rounds -0.200-0.050" in split["name"]
