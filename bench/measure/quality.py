"""Quality of a suite row (FID, sFID, IS, precision, recall; FVD of a video row): sample once, evaluate once, reuse.

The row's `sampler` table says how to sample: name (ddpm, ddim, dpm-solver++), steps, cfg_scale,
guided_channels (3 = DiT's guidance, the default; "all"), num_samples (50000), labels ("uniform", as
DiT's sample_ddp.py; or "balanced"), seed, batch_size; the column's or cell's `fid_reference` (asset; default the ADM batch).
Samples go to <work_dir>/samples/<setup>/ (sharded, resumable: a killed run continues where it
stopped; a folder filled beforehand by `torchrun ... -m bench sample --out <that folder>` with the
same setup is used as is; README "Full Table 1 on a GPU runner"). The metrics of a sample set are
computed once per group (a row's cells with one sampler) and kept in metrics.json beside the samples, so
the five quality cells of a row sample and evaluate once. metrics.json is reused only for the same sampling spec, the same
samples.npz (sha256) and the same Inception weights, reference and torch-fidelity version.
"""
import dataclasses
import json
import re
from pathlib import Path

from bench import assets
from bench.assets import I3D, INCEPTION, INCEPTION_CLEANFID, VAE
from bench.definitions import METRIC_FID, METRIC_FVD, METRIC_IS, METRIC_PRECISION, METRIC_RECALL, METRIC_SFID
from bench.measure.base import Item, Measurement, Skip
from bench.metrics.evaluate import KEY_EVALUATION, evaluate_samples, evaluation_key
from dydit import registry
from dydit.fileio import write_json_atomic

# suite metric -> key of bench.metrics.fidelity's results
RESULT_KEYS = {METRIC_FID: "fid", METRIC_SFID: "sfid", METRIC_IS: "is", METRIC_PRECISION: "precision",
               METRIC_RECALL: "recall", METRIC_FVD: "fvd"}  # FVD: a video row's (Latte), against real clips' I3D
CPU_MAX_SAMPLES = 1000  # beyond this, sampling on a CPU takes days: such cells need CUDA
METRICS_FILE = "metrics.json"


def sample_spec(item: Item, ckpt_path, vae_path):
    """The SampleSpec of a row's quality cells: the cell's resolved SamplerSpec, as is."""
    from bench.sample import SampleSpec
    return SampleSpec.of(item.model, item.sampler, ckpt=str(ckpt_path), vae=str(vae_path))


def samples_dir(row_name: str, spec, ctx):
    """<work_dir>/samples/<row>-<sampler><steps>[-deepcache<N>]-cfg<scale>-g<guided>-<labels>-n<N>-seed<seed>."""
    # readable on purpose: a multi-GPU `torchrun ... bench sample --out` can fill it beforehand, and
    # run.json in it refuses any other setup (batch size, precision, checkpoint path included)
    slug = re.sub(r"[^a-z0-9.]+", "-", row_name.lower()).strip("-")
    guided = "all" if spec.guided_channels is None else spec.guided_channels
    base = Path(ctx.work_dir) if ctx.work_dir else Path("artifacts")
    cache = f"-deepcache{spec.deepcache_interval}" if spec.deepcache_interval > 1 else ""
    return base / "samples" / (f"{slug}-{spec.sampler}{spec.steps}{cache}-cfg{spec.cfg_scale:g}-g{guided}"
                               f"-{spec.labels}-n{spec.num}-seed{spec.seed}")


def _require(names, root):
    """Paths of present assets; Skip naming every missing one and where to get it."""
    statuses = [assets.check_asset(name, root) for name in names]
    problems = [s.message for s in statuses if not s.ok]
    if problems:
        raise Skip("; ".join(problems))
    return [s.path for s in statuses]


def row_results(item: Item, ctx):
    """Samples (if needed) and evaluates a row under its cell's sampler: {metric key: value, ...}."""
    if not item.row.checkpoint:
        raise Skip(f"row {item.row.name!r} names no checkpoint: quality needs trained weights")
    reference = item.cell.fid_reference
    video = registry.entry(item.model).is_video  # clips, judged by I3D features (bench.metrics.fvd)
    if video != (item.metric == METRIC_FVD):
        raise ValueError(f"{item.metric!r} on {item.model}: a video row's quality is FVD, an image row's FID, sFID, "
                         f"IS, precision and recall")
    ckpt, vae, network, ref = _require([item.row.checkpoint, VAE, I3D if video else INCEPTION, reference],
                                       ctx.assets_root)
    spec = sample_spec(item, ckpt, vae)
    if not str(ctx.device).startswith("cuda") and spec.num > CPU_MAX_SAMPLES:
        raise Skip(f"needs a CUDA device: {spec.num} samples x {spec.steps} {spec.sampler} steps of "
                   f"{spec.model} are days of CPU time")
    out = samples_dir(item.row.name, spec, ctx)
    from bench import sample
    metrics_file = out / METRICS_FILE
    if video:
        from bench.metrics import fvd
        key = fvd.evaluation_key(ref, network, out.parent)
    else:
        key = evaluation_key(ref, network, cache_dir=out.parent)
    results = reusable_metrics(metrics_file, spec, key)
    if results is None:
        path = sample.run(spec, out, device=ctx.device)
        if path is None:
            raise RuntimeError(f"sampling into {out} did not complete")
        if video:
            results = {**fvd.evaluate_clips(path, ref, network, ctx.device), KEY_EVALUATION: key}
            return _keep(results, out, path, reference, spec, metrics_file)
        # clean-fid is the optional second FID backend: its Inception is used when present
        cleanfid = assets.check_asset(INCEPTION_CLEANFID, ctx.assets_root) \
            if INCEPTION_CLEANFID in assets.load_manifest() else None
        results = evaluate_samples(path, ref, network, ctx.device,
                                   cleanfid.path if cleanfid and cleanfid.ok else None, cache_dir=out.parent)
        return _keep(results, out, path, reference, spec, metrics_file)
    return results


def _keep(results, out, path, reference, spec, metrics_file):
    """results with the samples they were computed from, written to metrics_file (reused while they match)."""
    from bench.sample import CONFIG_FILE
    config = json.loads((out / CONFIG_FILE).read_text())
    results["samples"] = {"path": str(path), "sha256": config["result"]["sha256"], "reference": reference,
                          "spec": dataclasses.asdict(spec)}
    write_json_atomic(results, metrics_file)
    return results


def reusable_metrics(metrics_file, spec, key):
    """The metrics of metrics_file if they were computed from exactly these samples (same spec, and the
    samples.npz that run.json records now) with the same Inception, reference and library; else None."""
    from bench.sample import CONFIG_FILE
    try:
        results = json.loads(Path(metrics_file).read_text())
        run = json.loads((Path(metrics_file).parent / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    same = lambda a, b: {k: v for k, v in a.items() if k != "reference"} == \
        {k: v for k, v in b.items() if k != "reference"}  # the same file may sit under another root
    recorded = results.get("samples", {})
    if (recorded.get("spec") != json.loads(json.dumps(dataclasses.asdict(spec)))
            or recorded.get("sha256") != (run.get("result") or {}).get("sha256")
            or not same({k: v for k, v in results.get(KEY_EVALUATION, {}).items() if not k.startswith("cleanfid")},
                        key)):
        return None
    return results


class Quality(Measurement):
    """FID, sFID, IS, precision, recall (FVD on a video row): a row's cells with one sampler are one sampling run,
    evaluated once."""
    METRICS = tuple(RESULT_KEYS)

    def group_key(self, item: Item):
        return item.row.name, item.sampler, item.cell.fid_reference

    def group_label(self, item: Item) -> str:
        s = item.sampler
        return f"{item.row.name} quality, {s.num_samples} samples {s.name}-{s.steps} cfg {s.cfg_scale:g}"

    def measure_group(self, items, ctx):
        for item in items:
            self.check(item)
        if ctx.profile == "smoke":
            raise Skip("quality cells run in the full profile (50,000 samples on a GPU) or the ci one (FID-5K); the "
                       "smoke profile runs the pipeline check instead")
        results = row_results(items[0], ctx)
        return {item.key: float(results[RESULT_KEYS[item.metric]]) for item in items}


MEASUREMENT = Quality
