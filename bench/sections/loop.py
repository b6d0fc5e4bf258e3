"""The report section of the whole-loop timings (Tables 4 and 18): what each ratio is made of, judged.

Rows, per timed sampler setup and path: realized = speed-up / FLOPs ratio over the whole loop (model
calls with CFG + VAE decode), against the paper's own realized at XL λ=0.5 (1.73× faster at 2.05× fewer
FLOPs: 0.84, the scaling table); and, on the shortest schedule timed, the estimate against whole runs.
"""
import math

from bench.measure.base import Measured
from bench.measure.loop import DIT, LoopRun
from bench.timing.loop import LoopTiming, check_estimate, time_loops
from dydit.sampling import SamplerSpec

PAPER_REALIZED = 1.73 / (118.69 / 57.88)  # DyDiT-XL λ=0.5: speed-up over the FLOPs ratio (scaling table)
DEEPCACHE_2_MAX = 0.55  # interval 2 runs half the steps whole: at most 0.55 of the same model without cache
COMPOSE_TOLERANCE = 0.10  # |ratio with both / (DyDiT's ratio x DeepCache's ratio on DiT) - 1|
# |estimate / whole runs - 1|. The method is exact for DiT on a work clock (tests/bench/test_loop.py) and within
# 10 % for a DyDiT; on this shared 2-core VM the two timing procedures (interleaved calls, whole runs) also
# differ by up to 11 % for DiT (NOTES.md): 15 % covers both.
ESTIMATE_TOLERANCE = 0.15
CHECK_SAMPLER, CHECK_STEPS = "dpm-solver++", 10  # the shortest schedule of the paper's tables: whole runs are cheap


def run(suite_run):
    record = suite_run.record("loop")
    runs = record.runs if record is not None else []
    if not runs:
        return {"title": "Whole sampling loops", "note": "no loop timing ran (every ratio cell was skipped)",
                "rows": [{"name": "loop timings ran", "value": 0, "unit": "", "ok": False, "expected": "≥ 1"}]}
    rows = []
    for run_ in runs:
        rows += realized_rows(run_) + deepcache_rows(run_)
    kept = [r.kept_parts for r in runs]
    if all(kept):  # trained weights only: the check is kept with the timings it checks
        checked, _ = record.kept.get(("estimate-check", kept), lambda: check_estimate_against_whole_runs(
            suite_run.ctx, record), what="the estimate check")
    else:
        checked = check_estimate_against_whole_runs(suite_run.ctx, record)
    rows += check_rows(checked)
    note = ("s/image on this machine are estimates from timed calls on each schedule's own timesteps "
            "(bench/timing/loop.py), checked here against whole runs of the shortest schedule. Weights: "
            + "; ".join(f"{k}: {v}" for k, v in runs[0].weights.items()) + f". VAE: {runs[0].vae}.")
    dates = sorted({r.measured_at for r in runs if r.kept_parts})
    if dates:
        note += (f" Timings of models trained here are kept per machine and code ({record.kept.folder}): these were "
                 f"timed {', '.join(dates)}; `bench run --retime` times them again.")
    if any(_split(name)[1] for r in runs for name in r.paths):
        from dydit.deepcache import DESIGN
        note += " " + DESIGN
    return {"title": "Whole sampling loops: realized speed-up and the estimate check", "note": note, "rows": rows,
            "provenance": {"loop_speed_check": checked}}


def _row(name, value, ok, expected):
    return {"name": name, "value": round(value, 3), "unit": "", "ok": bool(ok), "expected": expected}


def _timed_row(name, value, rounds, accepts, expected):
    """A check of a timed value: ok when it and the interval of its rounds' median (Measured.of_rounds: every round
    at 5, the extremes left out with more) pass, failed when none does, else inconclusive (the interval falls on
    both sides of the bound: the difference is within the timing's spread)."""
    if rounds:
        m = Measured.of_rounds(rounds, value=value)
        name += f"; rounds {m.low:.3f}-{m.high:.3f}" + (f" (of {m.rounds}, the median's {m.coverage:.0%} interval)"
                                                        if m.dropped else "")
        verdicts = [accepts(v) for v in (value, m.low, m.high)]
    else:
        verdicts = [accepts(value)]
    row = _row(name, value, all(verdicts), expected)
    if not row["ok"] and any(verdicts):
        row["inconclusive"] = True
    return row


def _per_round(paths, name, base):
    """s/image of `name` ÷ `base`, round by round (their rounds ran side by side)."""
    return [a / b for a, b in zip(paths[name].get("rounds_s_per_image", []), paths[base].get("rounds_s_per_image", []))]


def _split(name):
    """'X, DeepCache N' -> ('X', N); 'X' -> ('X', 0)."""
    base, _, n = name.partition(", DeepCache ")
    return base, int(n) if n else 0


def realized_rows(run_: LoopRun) -> list:
    """Realized speed-up of every DyDiT path without DeepCache: judged against the paper's at XL; other sizes
    (the mini models, where fixed per-call work weighs more; S and B, judged per λ by the scaling suite's
    realized cells) shown, checked finite."""
    label = f"{run_.setup.name}-{run_.paths[DIT]['steps']}"
    dit = run_.paths[DIT]
    rows = []
    for name, p in run_.paths.items():
        if name == DIT or _split(name)[1]:
            continue
        text = (f"{label} · {name}: realized (speed-up {1 / p['ratio']:.2f}× at FLOPs ratio {p['flops_ratio']:.3f}; "
                f"{p['s_per_image']:.3g} s/image here, DiT {dit['s_per_image']:.3g}; slices {p['sliced_weights_gib']:.2f} GiB)")
        if not ("-XL/" in name and name.endswith(" λ=0.5")):  # 0.84 is XL λ=0.5's; other paths are judged
            rows.append(_row(text, p["realized"], math.isfinite(p["realized"]), "finite (shown)"))  # by cells
        else:
            rows.append(_timed_row(text, p["realized"], p.get("realized_rounds", []), lambda v: v >= PAPER_REALIZED,
                                   f"≥ {PAPER_REALIZED:.2f} (the paper's, XL λ=0.5)"))
    return rows


def deepcache_rows(run_: LoopRun) -> list:
    """DeepCache: interval 2 against the same model without cache; DyDiT + DeepCache against the product."""
    paths, rows = run_.paths, []
    label = f"{run_.setup.name}-{paths[DIT]['steps']}"
    for name, p in paths.items():
        base, n = _split(name)
        if not n or base not in paths:
            continue
        own = p["s_per_image"] / paths[base]["s_per_image"]
        if n == 2:
            rows.append(_timed_row(f"{label} · {name}: s/image ÷ {base} without cache", own,
                                   _per_round(paths, name, base), lambda v: v <= DEEPCACHE_2_MAX, f"≤ {DEEPCACHE_2_MAX}"))
        dit_n = f"{DIT}, DeepCache {n}"
        if base != DIT and dit_n in paths:
            product = paths[base]["ratio"] * paths[dit_n]["ratio"]
            rel = p["ratio"] / product - 1
            rounds = [a / (b * c) - 1 for a, b, c in zip(p.get("ratio_rounds", []), paths[base].get("ratio_rounds", []),
                                                         paths[dit_n].get("ratio_rounds", []))]
            rows.append(_timed_row(f"{label} · {name}: the speed-ups compose — ratio {p['ratio']:.3f} vs {base}'s "
                                   f"{paths[base]['ratio']:.3f} × DiT's with DeepCache {n} {paths[dit_n]['ratio']:.3f} "
                                   f"= {product:.3f} (relative difference)", rel, rounds,
                                   lambda v: abs(v) <= COMPOSE_TOLERANCE, f"|·| ≤ {COMPOSE_TOLERANCE:g}"))
    return rows


def check_estimate_against_whole_runs(ctx, record) -> dict:
    """The estimate against whole runs of the shortest schedule, for DiT and the suite's last DyDiT path
    (with DeepCache where the suite has it): the 10-step DPM-Solver++ run of the suite if it timed one,
    else one timed here with the first setup's CFG and batch."""
    runs = record.runs
    setup = runs[0].setup
    check = [runs[0].timed[0], runs[0].timed[-1]]  # DiT without cache; the last DyDiT path
    # a suite's own 10-step run, if it was the last one timed (calibrated routers are set for the last setup)
    last = runs[-1]
    if (last.setup.name, last.setup.steps) == (CHECK_SAMPLER, CHECK_STEPS):
        estimates = {name: LoopTiming(**{k: v for k, v in p.items() if k in LoopTiming.__dataclass_fields__})
                     for name, p in last.paths.items()}
        check = [runs[0].timed[0], last.timed[-1]]
    else:
        short = SamplerSpec(name=CHECK_SAMPLER, steps=CHECK_STEPS, batch_size=setup.batch_size,
                            cfg_scale=setup.cfg_scale, guided_channels=setup.guided_channels)
        estimates = time_loops(check, short, runs[0].budget.calls, runs[0].budget.repeats, record.decode,
                               record.decode_gmacs, ctx.device, ctx.seed)
    return check_estimate(check, estimates, repeats=runs[0].budget.whole_runs, cfg_scale=setup.cfg_scale,
                          guided_channels=setup.guided_channels, decode=record.decode, device=ctx.device, seed=ctx.seed)


def check_rows(checked: dict) -> list:
    """One judged row per path of the estimate check."""
    rows = []
    for name, c in checked.items():
        # each whole run against the estimate: a verdict only when every run agrees (the runs are the spread)
        rows.append(_timed_row(f"estimate vs whole {CHECK_SAMPLER}-{CHECK_STEPS} runs · {name} "
                               f"({c['estimated_s_per_image']:.3g} vs {c['measured_s_per_image']:.3g} s/image)",
                               c["rel_error"], c.get("rel_error_rounds", []), lambda v: abs(v) <= ESTIMATE_TOLERANCE,
                               f"|·| ≤ {ESTIMATE_TOLERANCE:g}"))
    return rows
