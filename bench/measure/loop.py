"""s/image ratios over whole sampling loops (Tables 4 and 18): every path of a sampler timed in one run.

The paper's s/image are V100 numbers: a suite compares the ratio path / DiT (no cache) measured in one
process on one device. The first cell of a sampler setup times *every* path the suite asks for with
that setup (bench.loop_speed, interleaved call by call): DiT, each DyDiT row, each DeepCache interval;
the other cells read that run.

Models: a mini row (DyDiT-Mini/2) runs the mini reproduction's model trained here (bench.mini, cached);
a DyDiT row with its checkpoint present runs its trained routers; without one (smoke, this CPU)
its routers are calibrated (bench.speed: random weights, one bias offset bisected so the dynamic FLOPs
reach the row's `options.flops_target`). DiT is the same weights on the DiT path (bench.speed.shared_dit):
a static model's time does not depend on its weights. The VAE is the SD VAE's architecture (random
weights: decode time does not depend on them); the mini has none (it samples pixels).
"""
import json

from bench import assets
from bench.definitions import METRIC_REALIZED, METRIC_S_PER_IMAGE_RATIO
from bench.measure.base import Skip

DIT = "DiT"
CALLS, REPEATS = 3, 3  # full calls per path on each schedule's own timesteps; median of repeats
CALIBRATION_STEPS = 10  # timesteps over [0, 1000) the routers are standardised on (then calibrated per sampler)
SLOTS = ("name", "steps", "cfg_scale", "guided_channels", "batch_size", "precision")


def setup_key(spec: dict) -> str:
    """The setup shared by the paths of one timing run: the sampler (everything but DeepCache) and the DiT
    the paths are compared with (a suite of several sizes times each size against its own DiT)."""
    return json.dumps({**{k: spec["sampler"][k] for k in SLOTS}, "dit": dit_of(spec["model"])}, sort_keys=True)


def is_mini(model: str) -> bool:
    """A model of the mini reproduction (DyDiT-Mini/2, DyDiT-Mini-32/2, ...): trained here, samples pixels."""
    return model.split("-")[1].split("/")[0] == "Mini"


def dit_of(model: str) -> str:
    """'DyDiT-S/2' -> 'DiT-S/2': the static model a row is compared with."""
    return model.removeprefix("Dy")


def is_dydit(row: dict) -> bool:
    return row["model"].startswith("DyDiT-")


def path_name(row: dict) -> str:
    """DiT, or '<model> λ=<flops_target>', plus ', DeepCache N' for N > 1."""
    interval = row["sampler"]["deepcache_interval"]
    lam = row["options"].get("flops_target")
    if is_dydit(row) and lam is None:
        raise ValueError(f"row {row['name']!r}: a DyDiT row needs options.flops_target (its lambda)")
    base = f"{row['model']} λ={lam:g}" if is_dydit(row) else DIT
    return base + (f", DeepCache {interval}" if interval > 1 else "")


def _dydit(row, ctx, log):
    """(model, weights note, calibrate?): the row's DyDiT with its checkpoint's routers (or the mini's trained
    ones), or with random standardised routers that run_setup calibrates to options.flops_target."""
    from bench.speed import schedule, standardized_dydit
    models = ctx.cache.setdefault("loop_models", {})
    lam = row["options"]["flops_target"]
    if row["options"].get("routers", "all") != "all":
        raise Skip("the loop timing runs the learned routers: a routers ablation is measured by bench.mini")
    key = (row["model"], lam)
    if key not in models:
        status = assets.check_asset(row["checkpoint"], ctx.assets_root) if row.get("checkpoint") else None
        if is_mini(row["model"]):  # the mini reproduction's models, trained here
            from bench import mini
            model, info = mini.trained_model(row, ctx)
            models[key] = (model, f"trained here by the mini reproduction ({info['key']})", False)
        elif status is not None and status.ok:
            from dydit.checkpoints import load_checkpoint
            from dydit.models import create_model
            model = create_model(row["model"])
            load_checkpoint(model, status.path)
            models[key] = (model.eval().to(ctx.device), f"{row['checkpoint']} ({status.path}): trained routers", False)
        else:
            model = standardized_dydit(row["model"], schedule(CALIBRATION_STEPS), ctx.device, ctx.seed)
            fraction = row["options"].get("flops_fraction", lam)
            models[key] = (model, f"random weights, routers calibrated to {fraction:.4g} of DiT's FLOPs on each "
                                  f"sampler's timed calls (no {row.get('checkpoint') or 'checkpoint'} here)", True)
    return models[key]


def _calibrate(model, lam, sampler, ctx, log):
    """Calibrated routers: one offset bisected so the FLOPs of the calls this sampler will time reach λ."""
    from bench.loop_speed import picks, width_cost
    from bench.speed import recalibrate
    from dydit.fast import FastDyDiT
    from dydit.sampling import sampler_timesteps
    ts = sampler_timesteps(sampler["name"], sampler["steps"])
    idx = picks(len(ts), CALLS, 0, width_cost(FastDyDiT(model, cache_bytes=0), ts))
    reached = recalibrate(model, lam, [ts[i] for i in idx], ctx.seed)
    log(f"  routers calibrated to λ={lam:g} on the {len(idx)} timed calls of {sampler['name']}-{len(ts)}: {reached:.3f}")


def run_setup(spec: dict, ctx, log=print) -> dict:
    """Times every path of the suite with this row's setup; {path: LoopTiming dict + ratio, ...}."""
    from bench.loop_speed import LoopPath, time_loops
    from bench.speed import shared_dit, timing_vae
    from dydit.fast import FastDyDiT
    key, sampler = setup_key(spec), spec["sampler"]
    rows = [cell for cell, metric, measure in ctx.cache.get("suite_cells", [])
            if measure == "loop" and setup_key(cell) == key]
    names = [path_name(r) for r in rows]  # raises for a DyDiT row without its lambda
    dydit_rows = {name: r for name, r in zip(names, rows) if is_dydit(r)}
    if not dydit_rows:
        raise Skip("no DyDiT row of this suite times this sampler: nothing to compare DiT with")
    paths, weights = [], {}
    first = None
    calibrated = set()
    for name, r in sorted(dydit_rows.items()):
        model, weights[name], calibrate = _dydit(r, ctx, log)
        if calibrate and id(model) not in calibrated:
            options = r["options"]
            _calibrate(model, options.get("flops_fraction", options["flops_target"]), sampler, ctx, log)
            calibrated.add(id(model))
        first = model if first is None else first
        paths.append(LoopPath(name, FastDyDiT(model), r["sampler"]["deepcache_interval"]))
    dit = shared_dit(first)
    intervals = {r["sampler"]["deepcache_interval"] for r in rows if not is_dydit(r)}
    paths = [LoopPath(DIT if n <= 1 else f"{DIT}, DeepCache {n}", dit, n) for n in sorted({0, *intervals})] + paths
    vae_key = ("loop_vae", str(ctx.device))
    if vae_key not in ctx.cache:  # the mini samples pixels: no VAE
        pixels = is_mini(first_row_model(dydit_rows))
        ctx.cache[vae_key] = (None, 0.0, "none: the mini samples pixels") if pixels else timing_vae(ctx.device)
    decode, decode_gmacs, vae_note = ctx.cache[vae_key]
    from bench.sample import precision
    decode_times = ctx.cache.setdefault("loop_decode_s", {})  # per batch size: the same for every sampler
    with precision(sampler["precision"]):
        timings = time_loops(paths, sampler["name"], sampler["steps"], sampler["batch_size"], sampler["cfg_scale"],
                             sampler["guided_channels"], CALLS, REPEATS, decode, decode_gmacs, ctx.device, ctx.seed,
                             log, decode_times.get(sampler["batch_size"]))
    decode_times[sampler["batch_size"]] = next(iter(timings.values())).decode_s
    base = timings[DIT]
    ctx.cache.setdefault("loop_paths", {})[key] = paths  # the report section checks the estimate on them
    ctx.cache["loop_last_setup"] = key  # calibrated routers are set for this setup now
    out = {"setup": json.loads(key), "vae": vae_note, "paths": {}, "weights": {DIT: "the DyDiT's weights, DiT path"},
           "timed_with": [p.name for p in paths]}
    out["weights"].update(weights)
    for name, t in timings.items():
        ratio = t.s_per_image / base.s_per_image
        flops = t.gmacs_per_image / base.gmacs_per_image
        out["paths"][name] = {**t.to_dict(), "ratio": ratio, "flops_ratio": flops, "realized": flops / ratio}
    return out


def first_row_model(rows: dict) -> str:
    return next(iter(rows.values()))["model"]


METRICS = {METRIC_S_PER_IMAGE_RATIO: "ratio", METRIC_REALIZED: "realized"}


def measure(row, metric, ctx):
    if metric not in METRICS:
        raise ValueError(f"bench.measure.loop measures {', '.join(map(repr, METRICS))}, not {metric!r}")
    runs = ctx.cache.setdefault("loop_runs", {})
    key = setup_key(row)
    if key not in runs:
        runs[key] = run_setup(row, ctx)
        ctx.provenance.setdefault("loop_speed", []).append(runs[key])
    name = path_name(row)
    if name not in runs[key]["paths"]:
        raise ValueError(f"path {name!r} was not timed (timed: {', '.join(runs[key]['paths'])})")
    if metric == METRIC_REALIZED and not is_dydit(row):
        raise ValueError(f"row {row['name']!r}: realized speed-up is measured for DyDiT rows")
    return runs[key]["paths"][name][METRICS[metric]]
