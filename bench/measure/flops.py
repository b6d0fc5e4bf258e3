"""GFLOPs (multiply-accumulates, as the paper): static with fvcore, or DyDiT's average over a sampling run.

Static: one forward of batch 1, no CFG doubling, fused attention counted (dydit.flops.fvcore_macs).
Dynamic: DyDiT's FLOPs depend on what its trained routers switch off at each step, so they need the
trained checkpoint and a sampling run; the paper's 84.33 / 57.88 G are such averages.
"""
import warnings

from dydit.flops import dynamic_macs, fvcore_macs, run_average_gmacs
from dydit.models import create_model

from bench.measure.base import Skip
from bench.definitions import METRIC_GFLOPS, METRIC_GFLOPS_DYNAMIC

# images sampled to average the dynamic FLOPs (token masks depend on the image; widths on t only)
FLOPS_RUN_IMAGES, FLOPS_RUN_BATCH = 256, 32


def static_gflops(model_name, ctx) -> float:
    """fvcore GMACs of one forward at full size; each model is built once per run (counts cached)."""
    key = (METRIC_GFLOPS, model_name)
    if key not in ctx.cache:
        # fvcore traces real CPU tensors (it fails on meta); the model is dropped once counted
        model = create_model(model_name).eval()
        with warnings.catch_warnings():  # fvcore's import warns that torch.jit.script is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            ctx.cache[key] = fvcore_macs(model) / 1e9
        del model
    return ctx.cache[key]


class MacsMeter:
    """A model_fn for the sampling loop that runs FastDyDiT and adds up the per-sample MACs it computed."""

    def __init__(self, fast):
        self.fast, self.per_call = fast, []

    def prepare(self, timesteps):
        self.fast.prepare(timesteps)

    def __call__(self, x, t, y):
        record = []
        out = self.fast(x, t, y, record=record)
        self.per_call.append(dynamic_macs(self.fast.model, record))  # (B,): each CFG half counts once
        return out


def dynamic_gflops(row, ctx) -> float:
    """Average GMACs per sample and step over a sampling run of the trained DyDiT of row["checkpoint"]."""
    from bench import assets
    if not row.get("checkpoint"):
        raise ValueError(f"row {row['name']!r} names no checkpoint: dynamic FLOPs need the trained routers")
    status = assets.check_asset(row["checkpoint"], ctx.assets_root)
    if status.status != assets.PRESENT:
        raise Skip(status.message)
    if ctx.device != "cuda":
        raise Skip(f"dynamic FLOPs sample {FLOPS_RUN_IMAGES} images with {row['model']}: needs a CUDA GPU")
    from dydit.checkpoints import load_checkpoint
    model = create_model(row["model"])
    load_checkpoint(model, status.path)
    return average_run_gmacs(model.to(ctx.device).eval(), row["sampler"], FLOPS_RUN_IMAGES,
                             FLOPS_RUN_BATCH, ctx.seed)


def average_run_gmacs(model, sampler: dict, images: int, batch: int, seed=0) -> float:
    """GMACs per sample and model call of a DyDiT over sampling runs of `images` images (fast path)."""
    from dydit.fast import FastDyDiT
    from dydit.sampling import labels_for, noise_for, sample_latents
    meter = MacsMeter(FastDyDiT(model))
    device = model.pos_embed.device
    shape = (model.in_channels, model.input_size, model.input_size)
    for start in range(0, images, batch):
        idx = list(range(start, min(start + batch, images)))
        noise, gens = noise_for(idx, seed, shape)
        sample_latents(meter, sampler["name"], noise.to(device), labels_for(idx, seed),
                       steps=sampler["steps"], generators=gens, cfg_scale=sampler["cfg_scale"])
    return run_average_gmacs(meter.per_call)


def measure(row, metric, ctx):
    if metric == METRIC_GFLOPS:
        return static_gflops(row["model"], ctx)
    if metric == METRIC_GFLOPS_DYNAMIC:
        return dynamic_gflops(row, ctx)
    raise ValueError(f"bench.measure.flops measures {METRIC_GFLOPS!r} or {METRIC_GFLOPS_DYNAMIC!r}, not {metric!r}")
