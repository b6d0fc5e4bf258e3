"""Seconds per image of sampling (model + sampler + CFG), end to end; VAE decoding timed separately.

One timed run samples a whole batch through every step of the row's sampler (CFG batched as 2B, as in
sampling for FID); s/image = median over repeats / batch size, after a warm-up run, with CUDA events
between synchronisations (bench.timing). The paper's s/image are GPU numbers and hardware-bound: the
suite compares ratios on one device. Batch size, precision, repeats, every timing and the VAE's
s/image are written to <work_dir>/latency/<row>.json and kept in ctx.cache.
"""
import json
import re
from pathlib import Path

from bench import assets
from bench.measure.base import Skip
from bench.definitions import METRIC_S_PER_IMAGE

REPEATS, WARMUP_STEPS = 3, 5


def _model_fn(row, spec_device, ctx):
    """(model_fn, weights note): the row's checkpoint, or random weights for a static DiT (timing only)."""
    from dydit.models import DyDiT, create_model, randomize_
    model = create_model(row["model"])
    status = assets.check_asset(row["checkpoint"], ctx.assets_root) if row.get("checkpoint") else None
    if status is not None and status.ok:
        from dydit.checkpoints import load_checkpoint
        load_checkpoint(model, status.path)
        weights = f"{row['checkpoint']} ({status.path})"
    elif isinstance(model, DyDiT):  # what a DyDiT skips depends on its trained routers
        raise Skip(status.message if status else f"row {row['name']!r} names no checkpoint: DyDiT timing "
                                                  "depends on the trained routers")
    else:  # a static DiT does the same work whatever its weights
        randomize_(model, seed=ctx.seed)
        weights = "random (a static DiT's time does not depend on its weights)"
    model = model.eval().to(spec_device)
    if isinstance(model, DyDiT):
        from dydit.fast import FastDyDiT
        return FastDyDiT(model), weights
    return model, weights


def seconds_per_image(row, ctx):
    """Times the row's sampling setup; returns the provenance dict (s_per_image, vae_s_per_image, ...)."""
    import torch
    from bench.sample import precision as tf32_mode
    from bench.timing import median_seconds
    from dydit import sampling
    s = row["sampler"]  # the suite's resolved SamplerConfig: every value given, no defaults here
    if s["name"] not in sampling.SAMPLERS:
        raise Skip(f"sampler {s['name']!r} is not implemented here (implemented: {', '.join(sampling.SAMPLERS)})")
    name, cfg, steps, batch = s["name"], s["cfg_scale"], s["steps"], s["batch_size"]
    precision, guided = s["precision"], s["guided_channels"]
    device = ctx.device
    model_fn, weights = _model_fn(row, device, ctx)
    size = model_fn.input_size if hasattr(model_fn, "input_size") else model_fn.model.input_size
    indices = range(batch)
    labels = sampling.labels_for(indices, ctx.seed)
    noise, _ = sampling.noise_for(indices, ctx.seed, (4, size, size))
    noise = noise.to(device)

    def run(n_steps):
        generators = [sampling.index_generator(ctx.seed, i) for i in indices]
        return sampling.sample_latents(model_fn, name, noise, labels, n_steps, generators, cfg, guided,
                                       deepcache_interval=s["deepcache_interval"])

    vae = _vae(ctx, device)
    with tf32_mode(precision):
        run(min(steps, WARMUP_STEPS))  # warm-up: kernels, allocator, (FastDyDiT) sliced-weight cache
        median, times = median_seconds(lambda: run(steps), repeats=REPEATS, warmup=0, device=device)
        latents = run(1)
        vae_median, _ = median_seconds(lambda: sampling.decode_to_uint8(vae, latents), repeats=REPEATS, warmup=1,
                                       device=device) if vae is not None else (None, None)
    return {"s_per_image": median / batch, "seconds": times, "batch_size": batch, "steps": steps, "sampler": name,
            "cfg_scale": cfg, "cfg_batched": cfg != 1.0, "deepcache_interval": s["deepcache_interval"], "guided_channels": guided, "precision": precision,
            "repeats": REPEATS, "device": str(device), "weights": weights,
            "gpu": torch.cuda.get_device_name() if str(device).startswith("cuda") else None,
            "vae_s_per_image": None if vae_median is None else vae_median / batch}


def _vae(ctx, device):
    status = assets.check_asset("vae-ft-ema", ctx.assets_root)
    if not status.ok:
        return None  # VAE time is reported beside s/image; its absence does not block the model timing
    from dydit.sampling import load_vae
    return load_vae(status.path).to(device)


def measure(row, metric, ctx):
    if metric != METRIC_S_PER_IMAGE:
        raise ValueError(f"bench.measure.latency measures {METRIC_S_PER_IMAGE!r}, not {metric!r}")
    if not str(ctx.device).startswith("cuda"):
        raise Skip("needs a CUDA device: s/image is hardware-bound and the paper's are GPU timings "
                   "(CPU speed comparisons: python -m bench speed)")
    key = ("latency", row["name"], json.dumps(row.get("sampler") or {}, sort_keys=True))
    if key not in ctx.cache:
        result = seconds_per_image(row, ctx)
        if ctx.work_dir:
            slug = re.sub(r"[^a-z0-9.]+", "-", f"{row['name']}-{row.get('column', '')}".lower()).strip("-")
            path = Path(ctx.work_dir) / "latency" / f"{slug}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))
        ctx.cache[key] = result
    return ctx.cache[key]["s_per_image"]
