"""The mini's spread study: how far its numbers move with the training seed, the sampling seed and the thread
count; the CFG scale chosen per family on the validation digits; the number of digits to generate; and the
quality tolerances derived from the spread. Its result is committed (suites/data/mini-spread.json) and the
mini suites' tolerances and CFG scales cite it (the mini report section fails when it is missing, was made for
another recipe, or chose another CFG scale than the suite samples with).

    python -m bench mini-spread                 # trains the baseline with 3 seeds (cached with the mini's)
    python -m bench mini-spread --families FLUX # FLUX-Mini's own: its CFG, N, 3 training seeds (hours on a CPU)
    nox -s mini-spread                          # the same, in its own venv; run it when the recipe changes

Interrupted, it keeps its work: the trained models in the mini's cache, every finished evaluation in
WORK_DIR/mini-spread-progress.json; the same command resumes (an evaluation is reused only for the same model
key, sampler spec, reference digits and thread count).

The rules, stated once:
- CFG: per family (DiT, SiT, Latte, FLUX), the scale of CFG_SCALES with the lowest mini-FID against the 500 validation
  digits among those whose accuracy is at least MIN_ACCURACY (none: the most accurate); the seed-0 baseline,
  DDIM-50 / flow-Euler-50, VAL_SAMPLES digits. The held-out digits, which score the claims, are not used. Latte
  (the video mini): VAL_SAMPLES clips against the 500 validation clips, mini-FID and accuracy of their frames
  (bench.mini.evaluate_video), motion and mini-FVD recorded beside them. FLUX (the text-to-image mini): VAL_SAMPLES
  canvases drawn from the validation prompts, mini-FID and accuracy of their prompted digit halves against the
  validation canvases' (bench.mini.evaluate_text2img), read-back recorded beside them.
- Whose spread: the families of SPREAD_MEASURED, each on its own baseline and held-out split: DiT (every digits
  mini's tolerances: SiT shares its network and digits) and FLUX (the text-to-image mini's: canvases from the
  held-out prompts, read-back's tolerance beside the others). The others' rows cite DiT's.
- Digits per model: the smallest of SAMPLE_SIZES whose sampling-seed standard deviation of mini-FID is at
  most SPREAD_FRACTION of its mean (seed-0 baseline, SAMPLING_SEEDS, nested prefixes of one sampling run).
- Tolerances: TOLERANCE_SIGMAS x the standard deviation of the baseline's metric over TRAIN_SEEDS x
  SAMPLING_SEEDS, plus the difference between 1 and 2 threads (the machine effect), rounded up.
"""
import dataclasses
import json
import math
import platform
import subprocess
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from bench.definitions import SPREAD_FAMILY, SPREAD_FILE, SPREAD_MEASURED
from bench.mini import build
from bench.mini.config import MiniConfig
from dydit import registry
from dydit.errors import UserError
from dydit.fileio import write_json_atomic
from dydit.sampling import SamplerSpec

CFG_SCALES = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
MIN_ACCURACY = 0.95
VAL_SAMPLES = 500  # the validation split's size: FID against it at the same N
TRAIN_SEEDS = (0, 1, 2)
SAMPLING_SEEDS = (0, 1, 2)
SAMPLE_SIZES = (250, 500, 1000)
SPREAD_FRACTION = 0.05
TOLERANCE_SIGMAS = 2.0
QUALITY_KEYS = ("mini_fid", "mini_kid", "accuracy", "readback")  # readback: the text-to-image mini's only
# 50 model calls each, as the suites sample
FAMILY_SAMPLERS = {"DiT": "ddim", "SiT": "flow-euler", "Latte": "ddim", "FLUX": "flow-euler"}
FAMILY_MODELS = {"SiT": "SiT-Mini/2", "Latte": "Latte-Mini/2", "FLUX": "FLUX-Mini"}  # DiT: the recipe's own model


#################################################################################
#                                  The rules                                    #
#################################################################################

def choose_cfg(sweep) -> float:
    """The CFG rule on a sweep [{cfg_scale, mini_fid, accuracy}] (validation digits)."""
    accurate = [p for p in sweep if p["accuracy"] >= MIN_ACCURACY]
    if not accurate:
        return max(sweep, key=lambda p: (p["accuracy"], -p["mini_fid"]))["cfg_scale"]
    return min(accurate, key=lambda p: p["mini_fid"])["cfg_scale"]


def choose_num_samples(by_size) -> int:
    """The N rule on {N: [mini-FID per sampling seed]}: the smallest N whose std / mean <= SPREAD_FRACTION
    (none: the largest measured)."""
    for n in sorted(by_size):
        values = np.asarray(by_size[n], dtype=float)
        if values.std(ddof=1) <= SPREAD_FRACTION * values.mean():
            return int(n)
    return int(max(by_size))


def tolerance(values, thread_difference) -> float:
    """The tolerance rule: TOLERANCE_SIGMAS x std (ddof 1) of the values + |1 vs 2 threads|, rounded up to 3
    significant digits (a tolerance is a bound: never rounded down)."""
    raw = TOLERANCE_SIGMAS * float(np.std(values, ddof=1)) + abs(thread_difference)
    if raw == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(raw)) - 2)
    return math.ceil(raw / scale) * scale


#################################################################################
#                                  The study                                    #
#################################################################################

def _git_state() -> dict:
    """The commit the study runs (read at its start: the checkout may move during hours of training)."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).parent).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def _provenance(command, seconds, git_state):
    return {"command": command, **git_state,
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "threads": torch.get_num_threads(), "torch": torch.__version__,
                        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": seconds}


def _spec(family, cfg_scale, num_samples, seed, steps=50):
    return SamplerSpec(name=FAMILY_SAMPLERS[family], steps=steps, cfg_scale=cfg_scale, guided_channels=None,
                       labels="balanced", num_samples=num_samples, seed=seed, batch_size=250, precision="fp32")


class Progress:
    """The study's finished evaluations, kept in a JSON file as they finish (so an interrupted study resumes);
    the file is reused only when the measuring code is unchanged (the digits', the clips' and the canvases' judges:
    each module's code_digest)."""

    def __init__(self, path: Optional[Path], log=print):
        from bench.mini import evaluate, evaluate_text2img, evaluate_video
        self.path = path
        self.code = evaluate.code_digest() + evaluate_video.code_digest() + evaluate_text2img.code_digest()
        kept = json.loads(path.read_text()) if path is not None and path.is_file() else {}
        self.done = kept.get("done", {}) if kept.get("code") == self.code else {}
        if self.done:
            log(f"resuming: {len(self.done)} finished evaluation(s) from {path}")

    def get(self, key: str, compute):
        """The evaluation `key` (recorded earlier, or computed now and recorded)."""
        if key not in self.done:
            self.done[key] = compute()
            if self.path is not None:
                write_json_atomic({"code": self.code, "done": self.done}, self.path)
        return self.done[key]


class _Baseline:
    """A baseline model whose cache key is known at once and which is trained or loaded only when an evaluation
    needs it (a resumed study whose evaluations of a seed are all recorded does not retrain that seed)."""

    def __init__(self, recipe: MiniConfig, cache, device):
        self.recipe, self.cache, self.device = recipe, cache, device
        self.key = build.dit_id(recipe).key
        self._model = None

    @property
    def model(self):
        if self._model is None:
            model, info = build.dit(self.recipe, self.cache)
            assert info["key"] == self.key, (info["key"], self.key)
            self._model = model.to(self.device)
        return self._model


def _evaluation_key(model_key, spec, reference, *parts):
    return "|".join([model_key, repr(spec), reference, f"threads={torch.get_num_threads()}", *map(str, parts)])


def _quality(model, spec, extractor, reference):
    from bench.mini import evaluate
    images, labels, _ = evaluate.sample_digits(model, spec)
    return {k: round(float(v), 6) for k, v in evaluate.quality(images, labels, extractor, reference).items()}


def _video_quality(config: MiniConfig, cache):
    """(model, spec) -> the quality of its clips against the validation clips (the video mini's judge on them)."""
    from bench.mini import evaluate_video
    weights, _ = build.frame_classifier(config, cache)
    judge = evaluate_video.VideoJudge.load(weights, config.data_seed, split="val")

    def quality(model, spec):
        clips, classes, _ = evaluate_video.sample_clips(model, spec, evaluate_video.Recorder(model))
        return {k: round(float(v), 6) for k, v in evaluate_video.quality(clips, classes, judge).items()}
    return quality


def _text_to_image_quality(config: MiniConfig, cache, split="val"):
    """(model, spec, sizes=None) -> the quality of its canvases, drawn from the split's prompts, against the split's
    canvases' digit halves (the text-to-image mini's judge on them; accuracy: the prompted digit read back); sizes:
    {str(N): the quality of the first N canvases} of the one run (a canvas's noise and prompt follow its index)."""
    from bench.mini import evaluate_text2img
    weights, info = build.reader(config, cache)
    judge = evaluate_text2img.TextToImageJudge.load(weights, info["thresholds"], config.data_seed, split=split)

    def scores(canvases, indices):
        return {k: round(float(v), 6) for k, v in evaluate_text2img.quality(canvases, judge.prompts, indices,
                                                                             judge).items()}

    def quality(model, spec, sizes=None):
        canvases, indices = evaluate_text2img.sample_canvases(model, spec, judge.prompts,
                                                              evaluate_text2img.Recorder(model))
        return scores(canvases, indices) if sizes is None else \
            {str(n): scores(canvases[:n], indices[:n]) for n in sizes}
    return quality


def _digits_quality(extractor, reference):
    """(model, spec, sizes=None) -> the quality of its digits against `reference` (sizes: as above)."""
    def quality(model, spec, sizes=None):
        return _quality(model, spec, extractor, reference) if sizes is None else \
            _prefix_quality(model, spec, sizes, extractor, reference)
    return quality


def _prefix_quality(model, spec, sizes, extractor, reference):
    """{str(N): quality of the first N digits} of one sampling run of max(sizes) digits (balanced labels: any
    prefix of a multiple of 10 digits is balanced too)."""
    from bench.metrics import digits
    from bench.mini import evaluate
    images, labels, _ = evaluate.sample_digits(model, dataclasses.replace(spec, num_samples=max(sizes)))
    feats = digits.features(images, extractor)
    out = {}
    for n in sizes:
        part = {k: v[:n] for k, v in feats.items()}
        out[str(n)] = {"mini_fid": digits.mini_fid(part, reference), "mini_kid": digits.mini_kid(part, reference),
                       "accuracy": digits.accuracy(part, labels[:n])}
    return out


def run_study(config: MiniConfig, cache, families=(SPREAD_FAMILY, "SiT"), train_seeds=TRAIN_SEEDS,
              sampling_seeds=SAMPLING_SEEDS, sizes=SAMPLE_SIZES, cfg_scales=CFG_SCALES, command="", log=print,
              steps=50, val_samples=VAL_SAMPLES, progress_file=None):
    """The whole study (see the module docstring) -> the dict committed as SPREAD_FILE (steps, val_samples:
    smaller for the tests; progress_file: where finished evaluations are kept, None: nowhere). The families of
    SPREAD_MEASURED are studied in full (CFG, N, seeds, threads), the others' CFG is swept; list SPREAD_FAMILY first
    to have it done first."""
    from bench.metrics import digits
    start, git_state = time.perf_counter(), _git_state()
    device = build.device_of(config)
    progress = Progress(progress_file, log)

    def baseline(recipe):
        return _Baseline(recipe, cache, device)
    classifier, _ = build.classifier(config, cache)
    extractor = digits.extractor(classifier)
    refs = {split: digits.features(build.real_digits(split, config)[0], extractor) for split in ("val", "heldout")}
    out = {"rules": {"cfg": f"lowest validation mini-FID among scales with accuracy >= {MIN_ACCURACY}",
                     "num_samples": f"smallest N of {list(sizes)} with sampling-seed std <= {SPREAD_FRACTION:g} x mean",
                     "tolerance": f"{TOLERANCE_SIGMAS:g} x std over training x sampling seeds + |1 vs 2 threads|"},
           "recipe": dataclasses.asdict(config), "families": {}}
    for family in families:
        model_name = FAMILY_MODELS.get(family, config.model)
        fam_config = dataclasses.replace(build.config_for(config, model_name), model=model_name)
        entry = registry.entry(model_name)
        log(f"{family}: the seed-{fam_config.seed} baseline ({model_name}), CFG sweep on the validation "
            f"{'clips' if entry.is_video else 'prompts' if entry.is_text_to_image else 'digits'}")
        base = baseline(fam_config)
        if entry.is_video:
            validation = _video_quality(config, cache)
        elif entry.is_text_to_image:
            validation = _text_to_image_quality(config, cache)
        else:
            validation = _digits_quality(extractor, refs["val"])
        sweep = []
        for scale in cfg_scales:
            spec = _spec(family, scale, val_samples, 0, steps)
            q = progress.get(_evaluation_key(base.key, spec, "val"), lambda: validation(base.model, spec))
            sweep.append({"cfg_scale": scale, **q})
            log(f"  cfg {scale:g}: validation mini-FID {q['mini_fid']:.1f}, accuracy {q['accuracy']:.3f}")
        fam = out["families"][family] = {"model": model_name, "cfg_sweep": sweep, "cfg_scale": choose_cfg(sweep),
                                         "baseline_key": base.key}
        if family in SPREAD_MEASURED:  # the spread its minis' quality claims are judged with
            heldout = _text_to_image_quality(config, cache, "heldout") if entry.is_text_to_image else \
                _digits_quality(extractor, refs["heldout"])
            fam.update(_spread(fam_config, fam["cfg_scale"], family, baseline, progress, heldout, train_seeds,
                               sampling_seeds, sizes, steps, log))
    out["provenance"] = _provenance(command, round(time.perf_counter() - start), git_state)
    return out


def _spread(config, cfg, family, baseline, progress, quality, train_seeds, sampling_seeds, sizes, steps, log) -> dict:
    """The sampling-seed spread at each N, N chosen, the training x sampling seed evaluations, 1 vs 2 threads
    and the tolerances of one family (quality(model, spec, sizes=None): on the held-out split, the chosen CFG)."""
    base = baseline(config)
    log(f"{family}: sampling-seed spread at N in {list(sizes)} (the held-out split, cfg {cfg:g})")
    prefix = {}
    for seed in sampling_seeds:
        spec = _spec(family, cfg, max(sizes), seed, steps)
        prefix[seed] = progress.get(_evaluation_key(base.key, spec, "heldout", "prefixes", *sizes),
                                    lambda: quality(base.model, spec, sizes))
    by_size = {n: [prefix[seed][str(n)]["mini_fid"] for seed in sampling_seeds] for n in sizes}
    n = choose_num_samples(by_size)
    log(f"  N = {n}: " + ", ".join(f"{k}: {np.mean(v):.1f} ± {np.std(v, ddof=1):.1f}" for k, v in by_size.items()))
    evaluations = []
    for train_seed in train_seeds:
        seeded = baseline(dataclasses.replace(config, seed=train_seed))
        for seed in sampling_seeds:
            spec = _spec(family, cfg, n, seed, steps)
            q = progress.get(_evaluation_key(seeded.key, spec, "heldout"),
                             lambda: quality(seeded.model, spec))
            evaluations.append({"train_seed": train_seed, "sampling_seed": seed, **q})
            log(f"  train seed {train_seed}, sampling seed {seed}: mini-FID {q['mini_fid']:.1f}, "
                f"accuracy {q['accuracy']:.3f}" + (f", read-back {q['readback']:.3f}" if "readback" in q else ""))
    threads = torch.get_num_threads()
    by_threads = {}
    spec = _spec(family, cfg, n, 0, steps)
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            by_threads[count] = progress.get(_evaluation_key(base.key, spec, "heldout"),
                                             lambda: quality(base.model, spec))
    finally:
        torch.set_num_threads(threads)
    log(f"  1 vs 2 threads: mini-FID {by_threads[1]['mini_fid']:.2f} vs {by_threads[2]['mini_fid']:.2f}")
    keys = [k for k in QUALITY_KEYS if k in evaluations[0]]
    return {"sampling_spread": {str(k): v for k, v in by_size.items()}, "num_samples": n,
            "evaluations": evaluations, "threads": {str(k): v for k, v in by_threads.items()},
            "tolerances": {k: tolerance([e[k] for e in evaluations], by_threads[1][k] - by_threads[2][k])
                           for k in keys},
            "baseline_mean": {k: float(np.mean([e[k] for e in evaluations])) for k in keys}}


def load(path=None) -> dict:
    """The committed study (what the suites' tolerances cite; path: SPREAD_FILE)."""
    return json.loads(Path(path or SPREAD_FILE).read_text())


def existing_study(path, config: MiniConfig) -> dict:
    """The study in `path` that a family's sweep is added to: readable, with the spread family, made for this
    recipe's static models (a UserError naming the fix otherwise)."""
    try:
        study = load(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: no readable spread study to add to ({type(e).__name__}); run "
                        f"`python -m bench mini-spread --families DiT,SiT` first") from None
    recipe = config.baseline_fields()
    if SPREAD_FAMILY not in study.get("families", {}) or \
            {k: v for k, v in study.get("recipe", {}).items() if k in recipe} != recipe:
        raise UserError(f"{path}: its {SPREAD_FAMILY} study is missing or was made for another recipe; run "
                        f"`python -m bench mini-spread --families DiT,SiT`")
    return study


def merge(existing: dict, added: dict) -> dict:
    """`existing` with the families of `added` (a study of other families, same recipe) replaced or added, each
    carrying the provenance of the run that measured it; the top-level provenance stays the spread family's."""
    merged = json.loads(json.dumps(existing))
    for family, fam in added["families"].items():
        merged["families"][family] = {**fam, "provenance": added["provenance"]}
    return merged


def carry_over(previous: dict, study: dict) -> dict:
    """`study` (a new SPREAD_FAMILY study) with the families of `previous` (the same recipe) that it did not study,
    each with the run that made it: a new DiT study does not drop FLUX's hours-long one."""
    out = dict(study, families=dict(study["families"]))
    for family, fam in previous["families"].items():
        if family not in out["families"]:
            out["families"][family] = {"provenance": previous["provenance"], **fam}
    return out


def write(study, path=SPREAD_FILE):
    write_json_atomic(study, path)
    return path

