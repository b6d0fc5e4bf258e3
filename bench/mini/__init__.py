"""The mini reproduction: the paper's claims checked on real digits with models trained here on a CPU.

    config.py   the recipe (data, model, budgets) and the cache key
    build.py    the trained artifacts, cached: digit classifier, DiT, DyDiTs (through dydit.train)
    evaluate.py one model measured: sampling, mini-FID, accuracy, FLOPs ratio, redundancy, figures' data
    section.py  the report section: figures and the numbers behind the claims
    figures.py  matplotlib figures

`measure_row(row, ctx)` is what the suite's cells (bench/measure/mini.py) read: everything of one run is
measured once and kept in ctx.cache, so seven cells of a row cost one evaluation.
"""
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.definitions import (METRIC_ACCURACY, METRIC_ACCURACY_VS_DIT, METRIC_FLOPS_RATIO, METRIC_INK_VS_BACKGROUND,
                               METRIC_MINI_FID_VS_DIT, METRIC_MINI_FID_VS_FULL, METRIC_SPEEDUP,
                               METRIC_TRAINABLE_FRACTION, METRIC_WIDTH_LATE_VS_EARLY)
from dydit.flow import FLOW_SAMPLERS
from bench.mini.config import MiniConfig
from dydit.models import DyDiT
from dydit.fileio import write_json_atomic

CACHE_KEY = "mini"
SPEED_CALLS = 5  # model calls timed per path, spread over the schedule, at the suite's CFG batch
SPEED_REPEATS = 3


@dataclasses.dataclass
class State:
    """What one suite run has built and measured so far."""
    config: MiniConfig
    cache_dir: Path
    retrain: object  # False, or rebuild what was built before this time (bench.mini.build._artifact)
    classifier: Path = None
    classifier_info: dict = None
    reference: dict = None  # held-out digits' classifier features
    floor: float = None  # mini-FID of the training split vs held-out: what real digits score
    models: dict = dataclasses.field(default_factory=dict)  # row name -> (model, build info)
    measured: dict = dataclasses.field(default_factory=dict)  # row name -> evaluation dict


def state(ctx, config=None) -> State:
    """The run's State (ctx.cache), with the classifier and the reference features ready."""
    if CACHE_KEY not in ctx.cache:
        from bench.metrics import digits
        from bench.mini import build
        config = config or ctx.cache.get("mini_config") or MiniConfig()
        cache_dir = Path(ctx.work_dir or "reports/work") / "mini-models"
        s = State(config, cache_dir, ctx.cache.get("mini_retrain") or False)
        s.classifier, s.classifier_info = build.classifier(config, cache_dir, s.retrain)
        extractor = digits.extractor(s.classifier)
        heldout, _ = build.real_digits("heldout", config)
        s.reference = digits.features(heldout, extractor)
        ctx.cache[CACHE_KEY] = s
        ctx.provenance["mini"] = {"config": dataclasses.asdict(config), "cache": str(cache_dir),
                                  "classifier": {"path": str(s.classifier), **s.classifier_info}, "models": {}}
    return ctx.cache[CACHE_KEY]


def _sampling(row):
    from bench.mini.evaluate import Sampling
    s = row["sampler"]
    if s["guided_channels"] is not None:
        raise ValueError("the mini samples pixels: guide every channel (guided_channels = \"all\")")
    return Sampling(s["name"], s["steps"], s["cfg_scale"], s["num_samples"], s["batch_size"], s["seed"],
                    s["deepcache_interval"])


def _evaluate(s: State, row, model, model_key, random_routing=False):
    """Samples and measures one model, or loads that measurement (same model, sampling and code);
    random_routing: a DyDiT whose heads, channel groups and tokens are drawn at random, as many as it chose."""
    from bench.metrics import digits
    from bench.mini import build, evaluate
    sampling = _sampling(row)
    if s.floor is None:  # as many real training digits as the models generate: FID's bias depends on N
        train, _ = build.real_digits("train", s.config)
        s.floor = digits.mini_fid(digits.features(train[:sampling.num_samples], digits.extractor(s.classifier)),
                                  s.reference)
    key = s.config.key("evaluation", model_key, dataclasses.asdict(sampling), _code_digest())
    cached = s.cache_dir / f"evaluation-{key}"
    if (cached / "numbers.json").is_file():
        return _load_evaluation(cached)
    recorder = evaluate.Recorder(model, sampling.deepcache_interval, random_routing_seed=sampling.seed if random_routing
                                 else None)
    start = time.perf_counter()
    images, labels, pixels = evaluate.sample_digits(model, sampling, recorder)
    out = {"seconds_sampling": time.perf_counter() - start, "images": images, "labels": labels,
           "flops_ratio": evaluate.flops_ratio(model, recorder.calls),
           **evaluate.quality(images, labels, digits.extractor(s.classifier), s.reference)}
    if isinstance(model, DyDiT) and sampling.deepcache_interval <= 1 and not random_routing:  # what it skipped, where
        out["widths"] = evaluate.widths_per_step(model, recorder.calls)
        if sampling.sampler not in FLOW_SAMPLERS:  # claim 3 is stated on DDPM's t (noisy: t >= 750)
            out["width_late_vs_early"] = evaluate.width_late_minus_early(model, recorder.calls)
        out["patch_flops"] = evaluate.patch_mlp_flops(model, recorder.calls, len(pixels)).numpy()
        out["ink_vs_background"] = evaluate.ink_over_background(model, recorder.calls, pixels)
    _save_evaluation(out, cached)
    return out


ARRAYS = ("images", "labels", "patch_flops")


def _save_evaluation(ev, folder):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: ev[k] for k in ARRAYS if k in ev}
    if "widths" in ev:
        arrays.update(zip(("width_steps", "width_heads", "width_groups"), ev["widths"]))
    np.savez(folder / "arrays.npz", **arrays)
    write_json_atomic({k: v for k, v in ev.items() if k not in ARRAYS and k != "widths"}, folder / "numbers.json")


def _load_evaluation(folder):
    ev = json.loads((folder / "numbers.json").read_text())
    with np.load(folder / "arrays.npz") as f:
        ev.update({k: f[k] for k in ARRAYS if k in f.files})
        if "width_steps" in f.files:
            ev["widths"] = (f["width_steps"], f["width_heads"], f["width_groups"])
    ev["cached"] = str(folder)
    return ev


def _code_digest():
    """What decides an evaluation besides the model and the sampling: the measuring code."""
    from bench.mini import evaluate
    from bench.metrics import digits
    from dydit import deepcache, fast, flops, sampling
    return [hashlib.sha256(Path(m.__file__).read_bytes()).hexdigest()[:16]
            for m in (evaluate, digits, fast, flops, sampling, deepcache)]


def label(name: str, sampling) -> str:
    """A measured model's name in this run: the row's, plus its sampler when not the mini's DDIM-50."""
    extra = [] if (sampling.sampler, sampling.steps) == ("ddim", 50) else [f"{sampling.sampler}-{sampling.steps}"]
    if sampling.deepcache_interval > 1 and "DeepCache" not in name:
        extra.append(f"DeepCache {sampling.deepcache_interval}")
    return " · ".join([name] + extra)


# options.routers of a DyDiT row: the paper's ablation (TDW only, SDT only, random routers at the same FLOPs);
# options.adapter: DyDiT++'s parameter-efficient fine-tuning (static LoRA, TD-LoRA; "none": full)
ROUTERS = {"all": "", "width": "TDW only", "token": "SDT only", "random": "random routers"}
ADAPTERS = {"none": "", "lora": "LoRA", "td-lora": "TD-LoRA"}


def family(model: str) -> str:
    """'SiT' for SiT-* / DySiT-* (flow matching), else 'DiT'."""
    return "SiT" if model.split("-", 1)[0] in ("SiT", "DySiT") else "DiT"


def config_for(s: State, model: str) -> MiniConfig:
    """The recipe of a row's model: the run's, with its family's static and dynamic model of that size
    (DiT-Mini-32/2 and DyDiT-Mini-32/2, SiT-Mini/2 and DySiT-Mini/2; DiT-Mini/2 gives the run's config)."""
    size_patch, f = model.split("-", 1)[1], family(model)  # "Mini-32/2"
    return dataclasses.replace(s.config, model=f"{f}-{size_patch}", dynamic_model=f"Dy{f}-{size_patch}")


def dit_name(model: str) -> str:
    """'DyDiT-Mini-32/2' -> 'DiT-Mini-32', 'DySiT-Mini/2' -> 'SiT-Mini': the name a row's static model is
    measured under."""
    return f"{family(model)}-" + model.split("/")[0].split("-", 1)[1]


def _routers(row) -> str:
    routers = row["options"].get("routers", "all")
    if routers not in ROUTERS:
        raise ValueError(f"row {row['name']!r}: options.routers must be one of {', '.join(ROUTERS)}, not {routers!r}")
    return routers


def _model(s: State, ctx, row):
    """(model, build info) of a row: its size's DiT, or the DyDiT fine-tuned to its options.flops_target (with
    options.routers: "width" / "token" trained with only those routers; "random" is the "all" model, whose
    routing bench.mini.evaluate replaces by random choices of the same sizes)."""
    from bench.mini import build
    lam, routers, adapter = row["options"].get("flops_target"), _routers(row), row["options"].get("adapter", "none")
    config = config_for(s, row["model"])
    is_dit = row["model"] == config.model
    trained = "all" if routers == "random" else routers
    name = dit_name(row["model"]) if is_dit else " · ".join(
        filter(None, [f"Dy{dit_name(row['model'])} λ={lam}", ROUTERS[trained], ADAPTERS[adapter]]))
    if name not in s.models:
        if is_dit:
            s.models[name] = build.dit(config, s.cache_dir, s.retrain)
        elif lam is None:
            raise ValueError(f"row {row['name']!r}: a DyDiT row needs options.flops_target (its lambda)")
        else:
            s.models[name] = build.dydit(config, lam, s.cache_dir, s.retrain, routers=trained, adapter=adapter)
        ctx.provenance["mini"]["models"][name] = s.models[name][1]
    return s.models[name]


def measured(row, ctx):
    """The evaluation of a row under its own sampler in this run, or None (not measured)."""
    s = ctx.cache.get(CACHE_KEY)
    return None if s is None else s.measured.get(label(row["name"], _sampling(row)))


def trained_model(row, ctx):
    """(model, build info) of a mini row, trained here (cached): what bench.measure.loop times."""
    return _model(state(ctx), ctx, row)


def measure_row(row, ctx) -> dict:
    """{metric: value} of one mini row under its cell's sampler (any sampler, DeepCache), measuring (and
    building) what it needs once per run. "vs DiT" compares with the DiT under the same sampler, no cache."""
    s = state(ctx)
    sampling = _sampling(row)
    name = label(row["name"], sampling)
    if name in s.measured:
        return s.measured[name]["metrics"]
    plain = {**row["sampler"], "deepcache_interval": 0}
    dit_model = config_for(s, row["model"]).model
    base = label(dit_name(row["model"]), _sampling({"sampler": plain}))
    if base not in s.measured:
        dit, info = _model(s, ctx, {**row, "model": dit_model, "options": {}})
        ev = _evaluate(s, {**row, "name": dit_name(row["model"]), "sampler": plain}, dit, info["key"])
        ctx.provenance["mini"].setdefault("sampling", {})[base] = dataclasses.asdict(_sampling({"sampler": plain}))
        ev["metrics"] = {METRIC_FLOPS_RATIO: ev["flops_ratio"], METRIC_ACCURACY: ev["accuracy"]}
        s.measured[base] = ev
    dit_ev = s.measured[base]
    model, info = _model(s, ctx, row)
    random_routing = _routers(row) == "random"
    ev = dit_ev if name == base else _evaluate(s, row, model, info["key"] + ("-random" if random_routing else ""),
                                               random_routing)
    metrics = {METRIC_FLOPS_RATIO: ev["flops_ratio"], METRIC_ACCURACY: ev["accuracy"],
               METRIC_MINI_FID_VS_DIT: ev["mini_fid"] - dit_ev["mini_fid"],
               METRIC_ACCURACY_VS_DIT: ev["accuracy"] - dit_ev["accuracy"]}
    info = _model(s, ctx, row)[1]
    if "trainable_parameters" in info:  # a fine-tuned DyDiT: what its fine-tuning trained
        metrics[METRIC_TRAINABLE_FRACTION] = info["trainable_parameters"] / info["parameters"]
    if row["options"].get("adapter", "none") != "none":  # against the full fine-tune of the same lambda
        full = {**row, "name": f"Dy{dit_name(row['model'])} λ={row['options']['flops_target']}",
                "options": {"flops_target": row["options"]["flops_target"]}}
        measure_row(full, ctx)  # measured once (or loaded) like any row
        metrics[METRIC_MINI_FID_VS_FULL] = ev["mini_fid"] - s.measured[label(full["name"], sampling)]["mini_fid"]
    if "ink_vs_background" in ev:  # a DyDiT without DeepCache: where it skipped
        metrics[METRIC_INK_VS_BACKGROUND] = ev["ink_vs_background"]
    if "width_late_vs_early" in ev:  # ... and when, on DDPM's timesteps
        metrics[METRIC_WIDTH_LATE_VS_EARLY] = ev["width_late_vs_early"]
    if name != base:
        s.measured[name] = {**ev, "metrics": metrics}
    return metrics


def speedup(row, ctx) -> float:
    """DiT's s/image / the fast path's (bench.mini.speed), for a DyDiT row measured by measure_row."""
    s = state(ctx)
    measure_row(row, ctx)
    ev = s.measured[label(row["name"], _sampling(row))]
    if "speed" not in ev:
        if row["options"].get("flops_target") is None or row["sampler"]["deepcache_interval"] > 1:
            raise ValueError("the mini's speed-up is measured for DyDiT rows without DeepCache (bench.measure.loop "
                             "times DeepCache)")
        if _routers(row) == "random":
            raise ValueError("random routing runs the masked path twice per call: its speed is not measured")
        dit_model = config_for(s, row["model"]).model
        ev["speed"] = speed(row, _model(s, ctx, {**row, "model": dit_model, "options": {}})[0],
                            _model(s, ctx, row)[0])
    return ev["speed"]["dit"] / ev["speed"]["fast"]


@torch.no_grad()
def speed(row, dit, dydit) -> dict:
    """s/image of DiT, the fast path and the masked path: model calls interleaved call by call at SPEED_CALLS
    of the sampler's own timesteps, evenly spread, on the suite's CFG batch, scaled to the schedule's
    length (the scheduler's own step is negligible next to a call). The FLOPs ratio of exactly those
    calls is beside it, so realized = speed-up / FLOPs ratio."""
    from bench.timing import interleaved_call_medians
    from dydit import sampling
    from dydit.fast import FastDyDiT
    from dydit.flops import dit_macs, dynamic_macs
    s = _sampling(row)
    steps = sampling.sampler_timesteps(s.sampler, s.steps)[:: max(1, s.steps // SPEED_CALLS)]
    batch = 2 * s.batch_size  # [cond; uncond]
    x = torch.randn(batch, dydit.in_channels, dydit.input_size, dydit.input_size,
                    generator=torch.Generator().manual_seed(s.seed))
    num_classes = dydit.y_embedder.embedding_table.num_embeddings - 1
    y = torch.cat([torch.arange(s.batch_size) % num_classes, torch.full((s.batch_size,), num_classes)])
    fast = FastDyDiT(dydit).prepare([float(t) for t in steps])
    t_of = [torch.full((batch,), t) for t in steps]  # int64 DDPM steps, float32 flow times
    calls = {"dit": [lambda t=t: dit(x, t, y) for t in t_of], "fast": [lambda t=t: fast(x, t, y) for t in t_of],
             "masked": [lambda t=t: dydit(x, t, y) for t in t_of]}
    medians = interleaved_call_medians(calls, repeats=SPEED_REPEATS, warmup=1)
    record_macs = []
    for t in t_of:
        record = []
        fast(x, t, y, record=record)
        record_macs.append(dynamic_macs(dydit, record).mean())
    out = {name: seconds / (len(steps) * s.batch_size) * s.steps for name, (seconds, _) in medians.items()}
    out["calls_timed"], out["batch"] = len(steps), batch
    out["flops_ratio_timed"] = float(torch.stack(record_macs).mean()) / dit_macs(dydit)
    return out
