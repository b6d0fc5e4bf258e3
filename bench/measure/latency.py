"""Seconds per image of sampling (model + sampler + CFG), end to end; VAE decoding timed separately.

One timed run samples a whole batch through every step of the row's sampler (CFG batched as 2B, as in
sampling for FID); s/image = median over repeats / batch size, after a warm-up run, with CUDA events
between synchronisations (bench.timing). The paper's s/image are GPU numbers and hardware-bound: the
suite compares ratios on one device. Batch size, precision, repeats, every timing and the VAE's
s/image are written to <work_dir>/latency/<row>.json.
"""
import json
import re
from pathlib import Path

from bench import assets
from bench.definitions import METRIC_S_PER_IMAGE
from bench.measure.base import Item, Measured, Measurement, Skip
from bench.models import OR_RANDOM, row_model
from dydit import registry

REPEATS, WARMUP_STEPS = 3, 5


def seconds_per_image(item: Item, ctx):
    """Times the row's sampling setup; returns the provenance dict (s_per_image, vae_s_per_image, ...)."""
    import torch
    from bench.timing.calls import median_seconds
    from dydit import sampling
    from dydit.fast import FastDyDiT
    s = item.sampler  # the suite's resolved SamplerSpec: every value given, no defaults here
    name, cfg, steps, batch = s.name, s.cfg_scale, s.steps, s.batch_size
    precision, guided = s.precision, s.guided_channels
    device = ctx.device
    loaded = row_model(item.row, ctx, OR_RANDOM)
    model_fn, weights = loaded.model, loaded.weights
    if registry.entry(item.model).is_dynamic:
        model_fn = FastDyDiT(model_fn)
    size = model_fn.input_size if hasattr(model_fn, "input_size") else model_fn.model.input_size
    indices = range(batch)
    labels = sampling.labels_for(indices, ctx.seed)
    noise, _ = sampling.noise_for(indices, ctx.seed, (4, size, size))
    noise = noise.to(device)

    def run(n_steps):
        generators = [sampling.index_generator(ctx.seed, i) for i in indices]
        return sampling.sample_latents(model_fn, name, noise, labels, n_steps, generators, cfg, guided,
                                       deepcache_interval=s.deepcache_interval)

    vae = _vae(ctx, device)
    with sampling.precision(precision, device):
        run(min(steps, WARMUP_STEPS))  # warm-up: kernels, allocator, (FastDyDiT) sliced-weight cache
        median, times = median_seconds(lambda: run(steps), repeats=REPEATS, warmup=0, device=device)
        latents = run(1)
        vae_median, _ = median_seconds(lambda: sampling.decode_to_uint8(vae, latents), repeats=REPEATS, warmup=1,
                                       device=device) if vae is not None else (None, None)
    return {"s_per_image": median / batch, "seconds": times, "batch_size": batch, "steps": steps, "sampler": name,
            "cfg_scale": cfg, "cfg_batched": cfg != 1.0, "deepcache_interval": s.deepcache_interval,
            "guided_channels": guided, "precision": precision,
            "repeats": REPEATS, "device": str(device), "weights": weights,
            "gpu": torch.cuda.get_device_name() if str(device).startswith("cuda") else None,
            "vae_s_per_image": None if vae_median is None else vae_median / batch}


def _vae(ctx, device):
    status = assets.check_asset("vae-ft-ema", ctx.assets_root)
    if not status.ok:
        return None  # VAE time is reported beside s/image; its absence does not block the model timing
    from dydit.sampling import load_vae
    return load_vae(status.path).to(device)


class Latency(Measurement):
    """s/image of a row's sampling setup: its cells with the same sampler are one timing."""
    METRICS = (METRIC_S_PER_IMAGE,)
    ONE_VALUE_PER_GROUP = True

    def group_key(self, item: Item):
        return item.row.name, item.sampler

    def group_label(self, item: Item) -> str:
        return f"{item.row.name} s/image, {item.sampler.name}-{item.sampler.steps}"

    def measure(self, item: Item, ctx) -> float:
        if not str(ctx.device).startswith("cuda"):
            raise Skip("needs a CUDA device: s/image is hardware-bound and the paper's are GPU timings "
                       "(CPU speed comparisons: python -m bench speed)")
        result = seconds_per_image(item, ctx)
        if ctx.work_dir:
            slug = re.sub(r"[^a-z0-9.]+", "-", f"{item.row.name}-{item.cell.column}".lower()).strip("-")
            path = Path(ctx.work_dir) / "latency" / f"{slug}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))
        batch = result["batch_size"]
        return Measured.of_rounds([t / batch for t in result["seconds"]], value=result["s_per_image"])


MEASUREMENT = Latency
