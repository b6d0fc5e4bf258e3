"""One suite run of the mini reproduction: the classifier, the reference features and every model measured
once, shared by the run's mini cells (bench.measure.mini) and read by the mini report sections.

    run = MiniRun.start(ctx)          # the digit classifier trained or loaded, held-out features ready
    metrics = run.measure_row(item)   # {metric: value} of one row under its cell's sampler
"""
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.definitions import (METRIC_ACCURACY, METRIC_ACCURACY_VS_CONTROL, METRIC_ACCURACY_VS_DIT,
                               METRIC_FLOPS_RATIO, METRIC_INK_VS_BACKGROUND, METRIC_MINI_FID_OVER_FLOOR,
                               METRIC_MINI_FID_VS_CONTROL, METRIC_MINI_FID_VS_DIT, METRIC_MINI_FID_VS_FULL,
                               METRIC_MINI_FVD, METRIC_MINI_FVD_VS_CONTROL, METRIC_MINI_KID,
                               METRIC_MINI_KID_VS_CONTROL, METRIC_MOTION, METRIC_MOTION_VS_CONTROL, METRIC_READBACK,
                               METRIC_READBACK_VS_CONTROL, METRIC_TRAINABLE_FRACTION, METRIC_WIDTH_LATE_VS_EARLY)
from bench.measure.base import Item, Measured
from bench.mini import build
from bench.mini.config import MiniConfig
from bench.suite import Options
from dydit import registry
from dydit.fileio import write_json_atomic
from dydit.models import DyDiT
from dydit.sampling import FLOW_SAMPLERS, SamplerSpec, labels_for

SPEED_CALLS = 5  # model calls timed per path, spread over the schedule, at the suite's CFG batch
SPEED_REPEATS = 5  # interleaved rounds: the speed-up's median and its range over them


@dataclasses.dataclass
class MiniRun:
    """What one suite run has built and measured so far (the record the mini report sections read)."""
    config: MiniConfig
    cache_dir: Path
    retrain: object  # False, or rebuild what was built before this time (bench.mini.build._artifact)
    classifier: Path = None
    classifier_info: dict = None
    reference: dict = None  # held-out digits' classifier features
    floors: dict = dataclasses.field(default_factory=dict)  # N -> mini-FID of N training digits vs held-out
    models: dict = dataclasses.field(default_factory=dict)  # model label -> (model, build info)
    model_names: dict = dataclasses.field(default_factory=dict)  # model label -> its registry name
    measured: dict = dataclasses.field(default_factory=dict)  # measured label -> evaluation dict
    provenance: dict = dataclasses.field(default_factory=dict)
    judge: object = None  # the text-to-image rows' bench.mini.evaluate_text2img.TextToImageJudge, made on first use
    video: object = None  # the video rows' bench.mini.evaluate_video.VideoJudge, made on first use
    timings: object = None  # bench.timing.kept.KeptTimings: speed-ups kept for the same models, code and machine

    @classmethod
    def start(cls, ctx) -> "MiniRun":
        """A run with the classifier and the held-out reference features ready."""
        from bench.metrics import digits
        config = build.run_config(ctx)
        run = cls(config, build.cache_dir(ctx), ctx.retrain, timings=ctx.kept_timings(build.device_of(config)))
        run.classifier, run.classifier_info = build.classifier(config, run.cache_dir, run.retrain)
        heldout, _ = build.real_digits("heldout", config)
        run.reference = digits.features(heldout, digits.extractor(run.classifier))
        run.provenance = {"config": dataclasses.asdict(config), "cache": str(run.cache_dir),
                          "classifier": {"path": str(run.classifier), **run.classifier_info}, "models": {}}
        return run

    def model(self, model: str, options: Options):
        """(model, build info) of a row's model, built or loaded once per run."""
        name = build.model_label(model, options)
        if name not in self.models:
            built, info = build.build_row_model(self.config, self.cache_dir, self.retrain, model, options)
            self.models[name] = built.to(build.device_of(self.config)), info
            self.model_names[name] = model
            self.provenance["models"][name] = self.models[name][1]
        return self.models[name]

    def text_to_image_judge(self):
        """The attribute reader and held-out canvases' features that score the text-to-image rows (built once)."""
        if self.judge is None:
            from bench.mini.evaluate_text2img import TextToImageJudge
            weights, info = build.reader(self.config, self.cache_dir, self.retrain)
            self.judge = TextToImageJudge.load(weights, info["thresholds"], self.config.data_seed)
            self.provenance["reader"] = {"path": str(weights), **info}
        return self.judge

    def video_judge(self):
        """The frame classifier and held-out clips' features that score the video rows (built once)."""
        if self.video is None:
            from bench.mini.evaluate_video import VideoJudge
            weights, info = build.frame_classifier(self.config, self.cache_dir, self.retrain)
            self.video = VideoJudge.load(weights, self.config.data_seed)
            self.provenance["frame_classifier"] = {"path": str(weights), **info}
        return self.video

    def floor_of(self, model: str, n: int) -> float:
        """What n real training images (clips) score against the held-out ones, in the features a model's rows use."""
        if registry.entry(model).is_text_to_image:
            return self.text_to_image_judge().floor(n, self.config.data_seed)
        if registry.entry(model).is_video:
            return self.video_judge().floor(n, self.config.data_seed)
        return self.floor(n)

    def floor(self, n: int) -> float:
        """What real digits score: mini-FID of n training digits vs the held-out ones (FID's bias depends on n,
        so the floor uses as many digits as the models generate)."""
        from bench.metrics import digits
        if n not in self.floors:
            train, _ = build.real_digits("train", self.config)
            self.floors[n] = digits.mini_fid(digits.features(train[:n], digits.extractor(self.classifier)),
                                             self.reference)
        return self.floors[n]

    def measured_for(self, item: Item):
        """The evaluation of a row under its own sampler in this run, or None (not measured)."""
        return self.measured.get(label(item.row.name, _sampling(item.sampler)))

    def measure_row(self, item: Item) -> dict:
        """{metric: value} of one mini row under its cell's sampler (any sampler, DeepCache), measuring (and
        building) what it needs once per run. "vs DiT" compares with the DiT under the same sampler, no cache."""
        return measure_row(self, item.row.name, item.model, item.options, _sampling(item.sampler))

    def speedup(self, item: Item) -> Measured:
        """DiT's s/image / the fast path's, for a dynamic row measured by measure_row, with its range over the
        interleaved rounds."""
        sampling = _sampling(item.sampler)
        self.measure_row(item)
        ev = self.measured[label(item.row.name, sampling)]
        if "speedup_rounds" not in ev.get("speed", {}):  # timed once per run, or kept from a run on this machine
            if item.options.flops_target is None or sampling.deepcache_interval > 1:
                raise ValueError("the mini's speed-up is measured for DyDiT rows without DeepCache (bench.measure.loop "
                                 "times DeepCache)")
            if item.options.routers == "random":
                raise ValueError("random routing runs the masked path twice per call: its speed is not measured")
            (static, static_info), (dynamic, dynamic_info) = self.model(registry.entry(item.model).static, Options()), \
                self.model(item.model, item.options)

            def measure():
                if registry.entry(item.model).is_text_to_image:  # the text-to-image mini: prompts, not classes
                    from bench.mini import evaluate_text2img
                    return evaluate_text2img.speed(sampling, static, dynamic, self.text_to_image_judge().prompts)
                if registry.entry(item.model).is_video:  # the video mini: clips
                    from bench.mini import evaluate_video
                    return evaluate_video.speed(sampling, static, dynamic, SPEED_CALLS, SPEED_REPEATS)
                return speed(sampling, static, dynamic)
            parts = ("mini-speed", static_info["key"], dynamic_info["key"], dataclasses.asdict(sampling), SPEED_CALLS,
                     SPEED_REPEATS, "trajectory inputs")
            timing, measured_at = self.timings.get(parts, measure, what=f"speed-up of {item.row.name}")
            ev["speed"] = {**timing, "measured_at": measured_at}
        return Measured.of_rounds(ev["speed"]["speedup_rounds"], value=ev["speed"]["dit"] / ev["speed"]["fast"])


def _sampling(spec: SamplerSpec) -> SamplerSpec:
    """The mini samples pixels: every channel guided."""
    if spec.guided_channels is not None:
        raise ValueError("the mini samples pixels: guide every channel (guided_channels = \"all\")")
    return spec


def measure_row(s: MiniRun, row_name: str, model_name: str, options: Options, sampling: SamplerSpec) -> dict:
    """{metric: value} of one row (see MiniRun.measure_row). "vs DiT": against the family's static model under
    the same sampler without cache; "vs control": a dynamic row against its fair control (the static model
    fine-tuned alike, with the row's adapter)."""
    name = label(row_name, sampling)
    if name in s.measured:
        return s.measured[name]["metrics"]
    plain = dataclasses.replace(sampling, deepcache_interval=0)
    entry = registry.entry(model_name)
    dit_ev = _measured(s, label(entry.label, plain), entry.static, Options(), plain)
    model, info = s.model(model_name, options)
    random_routing = options.routers == "random"
    base = label(entry.label, plain)
    ev = dit_ev if name == base else _evaluate(s, sampling, model, info["key"] + ("-random" if random_routing else ""),
                                               random_routing)
    metrics = {METRIC_FLOPS_RATIO: ev["flops_ratio"], METRIC_ACCURACY: ev["accuracy"], METRIC_MINI_KID: ev["mini_kid"],
               METRIC_MINI_FID_OVER_FLOOR: ev["mini_fid"] / s.floor_of(model_name, sampling.num_samples),
               METRIC_MINI_FID_VS_DIT: ev["mini_fid"] - dit_ev["mini_fid"],
               METRIC_ACCURACY_VS_DIT: ev["accuracy"] - dit_ev["accuracy"]}
    control = build.control_row(model_name, options)
    if control is not None:  # against what the same fine-tuning without routers and FLOPs loss gives
        ctl = _measured(s, label(build.model_label(*control), plain), *control, plain)
        metrics.update({METRIC_MINI_FID_VS_CONTROL: ev["mini_fid"] - ctl["mini_fid"],
                        METRIC_ACCURACY_VS_CONTROL: ev["accuracy"] - ctl["accuracy"],
                        METRIC_MINI_KID_VS_CONTROL: ev["mini_kid"] - ctl["mini_kid"]})
        if "readback" in ev:
            metrics[METRIC_READBACK_VS_CONTROL] = ev["readback"] - ctl["readback"]
    if "readback" in ev:  # a text-to-image row: its prompts read back from its canvases
        metrics[METRIC_READBACK] = ev["readback"]
    if "mini_fvd" in ev:  # a video row: its clips as clips
        metrics.update({METRIC_MINI_FVD: ev["mini_fvd"], METRIC_MOTION: ev["motion"]})
        if control is not None:
            metrics.update({METRIC_MINI_FVD_VS_CONTROL: ev["mini_fvd"] - ctl["mini_fvd"],
                            METRIC_MOTION_VS_CONTROL: ev["motion"] - ctl["motion"]})
    if "trainable_parameters" in info:  # a fine-tuned model: what its fine-tuning trained
        metrics[METRIC_TRAINABLE_FRACTION] = info["trainable_parameters"] / info["parameters"]
    full = build.full_finetune_row(model_name, options)
    if full is not None:  # against the full fine-tune of the same lambda
        full_name = build.model_label(*full)
        measure_row(s, full_name, *full, sampling)
        metrics[METRIC_MINI_FID_VS_FULL] = ev["mini_fid"] - s.measured[label(full_name, sampling)]["mini_fid"]
    if "ink_vs_background" in ev:  # a DyDiT without DeepCache: where it skipped
        metrics[METRIC_INK_VS_BACKGROUND] = ev["ink_vs_background"]
    if "width_late_vs_early" in ev:  # ... and when, on DDPM's timesteps
        metrics[METRIC_WIDTH_LATE_VS_EARLY] = ev["width_late_vs_early"]
    s.measured[name] = {**ev, "metrics": metrics}
    return metrics


def _measured(s: MiniRun, name: str, model_name: str, options: Options, sampling: SamplerSpec) -> dict:
    """The evaluation of a static model (the DiT, or its control) that rows are compared with, made once."""
    if name not in s.measured:
        model, info = s.model(model_name, options)
        s.provenance.setdefault("sampling", {})[name] = dataclasses.asdict(sampling)
        s.measured[name] = _evaluate(s, sampling, model, info["key"])
    return s.measured[name]


def _evaluate(s: MiniRun, sampling: SamplerSpec, model, model_key, random_routing=False):
    """Samples and measures one model, or loads that measurement (same model, sampling and code);
    random_routing: a DyDiT whose heads, channel groups and tokens are drawn at random, as many as it chose."""
    from bench.metrics import digits
    from bench.mini import evaluate, evaluate_text2img, evaluate_video
    from dydit.latte import Latte
    from dydit.text2img import TextToImageFlux
    text_to_image, video = isinstance(model, TextToImageFlux), isinstance(model, Latte)
    code = (evaluate_text2img if text_to_image else evaluate_video if video else evaluate).code_digest()
    key = s.config.key("evaluation", model_key, dataclasses.asdict(sampling), code)
    cached = s.cache_dir / f"evaluation-{key}"
    if (cached / "numbers.json").is_file():
        return _load_evaluation(cached)
    if text_to_image:
        if random_routing or sampling.deepcache_interval > 1:
            raise ValueError("the text-to-image mini measures its own routers without DeepCache")
        out = evaluate_text2img.evaluate(model, sampling, s.text_to_image_judge())
        _save_evaluation(out, cached)
        return out
    if video:
        if random_routing:
            raise ValueError("the video mini measures its own routers (no random-routing rows)")
        out = evaluate_video.evaluate_clips(model, sampling, s.video_judge())
        _save_evaluation(out, cached)
        return out
    recorder = evaluate.Recorder(model, sampling.deepcache_interval, random_routing_seed=sampling.seed if random_routing
                                 else None)
    start = time.perf_counter()
    images, labels, pixels = evaluate.sample_digits(model, sampling, recorder)
    out = {"seconds_sampling": time.perf_counter() - start, "images": images, "labels": labels,
           "flops_ratio": evaluate.flops_ratio(model, recorder.calls),
           **evaluate.quality(images, labels, digits.extractor(s.classifier), s.reference)}
    if isinstance(model, DyDiT) and sampling.deepcache_interval <= 1 and not random_routing:  # what it skipped, where
        out["widths"] = evaluate.widths_per_step(model, recorder.calls)
        if sampling.name not in FLOW_SAMPLERS:  # claim 3 is stated on DDPM's t (noisy: t >= 750)
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


def label(name: str, sampling) -> str:
    """A measured model's name in this run: the row's, plus its sampler when not the mini's DDIM-50."""
    extra = [] if (sampling.name, sampling.steps) == ("ddim", 50) else [f"{sampling.name}-{sampling.steps}"]
    if sampling.deepcache_interval > 1 and "DeepCache" not in name:
        extra.append(f"DeepCache {sampling.deepcache_interval}")
    return " · ".join([name] + extra)


@torch.no_grad()
def speed(s: SamplerSpec, dit, dydit) -> dict:
    """s/image of DiT, the fast path and the masked path, and the FLOPs ratio of exactly the calls timed
    (bench.mini.evaluate.speed: SPEED_CALLS of the sampler's timesteps on the DyDiT's own sampled run's inputs,
    SPEED_REPEATS interleaved rounds)."""
    from bench.mini import evaluate
    from dydit.fast import FastDyDiT
    from dydit.flops import dit_macs, dynamic_macs
    num_classes = dydit.y_embedder.embedding_table.num_embeddings - 1
    times = evaluate.timed_timesteps(s, SPEED_CALLS)
    labels = labels_for(range(s.batch_size), s.seed, "balanced", num_classes)
    inputs = evaluate.trajectory_inputs(dydit, s, (dydit.in_channels, dydit.input_size, dydit.input_size), labels,
                                        num_classes, times)
    fast = FastDyDiT(dydit).prepare([float(t) for t in times])
    return evaluate.speed(s, inputs, {"dit": dit, "fast": fast, "masked": dydit},
                          lambda inputs: evaluate.recorded_flops_ratio(fast, inputs, lambda r: dynamic_macs(dydit, r),
                                                                       dit_macs(dydit)), SPEED_REPEATS)
