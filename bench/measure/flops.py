"""GFLOPs (multiply-accumulates, as the paper): static with fvcore, or DyDiT's average over a sampling run.

Static: one forward of batch 1, no CFG doubling, fused attention counted (dydit.flops.fvcore_macs).
Dynamic: DyDiT's FLOPs depend on what its trained routers switch off at each step, so they need the
trained checkpoint and a sampling run; the paper's 84.33 / 57.88 G are such averages.
"""
import warnings

from bench.definitions import METRIC_GFLOPS, METRIC_GFLOPS_DYNAMIC
from bench.measure.base import Item, Measurement, Skip
from bench.models import CHECKPOINT_ONLY, checkpoint_path, row_model
from dydit.flops import dynamic_macs, fvcore_macs, run_average_gmacs
from dydit.registry import create_model

# images sampled to average the dynamic FLOPs (token masks depend on the image; widths on t only)
FLOPS_RUN_IMAGES, FLOPS_RUN_BATCH = 256, 32


def static_gflops(model_name: str) -> float:
    """fvcore GMACs of one forward at full size; a Latte's per clip, counted from its architecture
    (dydit.latte_flops: equal to fvcore on small configs, tests/dydit/test_latte.py; fvcore would trace 16 frames
    of a 674 M model here)."""
    from dydit import registry
    if registry.entry(model_name).family == "Latte":
        import torch
        from dydit.latte_flops import latte_macs
        with torch.device("meta"):
            return latte_macs(create_model(model_name)) / 1e9
    # fvcore traces real CPU tensors (it fails on meta); the model is dropped once counted
    model = create_model(model_name).eval()
    with warnings.catch_warnings():  # fvcore's import warns that torch.jit.script is deprecated
        warnings.simplefilter("ignore", FutureWarning)
        return fvcore_macs(model) / 1e9


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


def dynamic_gflops(item: Item, ctx) -> float:
    """Average GMACs per sample and step over a sampling run of the row's trained DyDiT (its checkpoint)."""
    if not item.row.checkpoint:
        raise ValueError(f"row {item.row.name!r} names no checkpoint: dynamic FLOPs need the trained routers")
    checkpoint_path(item.row, ctx)  # Skip naming the missing checkpoint before anything else
    if ctx.device != "cuda":
        raise Skip(f"dynamic FLOPs sample {FLOPS_RUN_IMAGES} images with {item.model}: needs a CUDA GPU")
    model = row_model(item.row, ctx, CHECKPOINT_ONLY).model
    return average_run_gmacs(model, item.sampler, FLOPS_RUN_IMAGES, FLOPS_RUN_BATCH, ctx.seed)


def average_run_gmacs(model, sampler, images: int, batch: int, seed=0) -> float:
    """GMACs per sample and model call of a DyDiT over sampling runs of `images` images (fast path)."""
    from dydit.fast import FastDyDiT
    from dydit.sampling import labels_for, noise_for, sample_latents
    meter = MacsMeter(FastDyDiT(model))
    device = model.pos_embed.device
    shape = (model.in_channels, model.input_size, model.input_size)
    for start in range(0, images, batch):
        idx = list(range(start, min(start + batch, images)))
        noise, gens = noise_for(idx, seed, shape)
        sample_latents(meter, sampler.name, noise.to(device), labels_for(idx, seed),
                       steps=sampler.steps, generators=gens, cfg_scale=sampler.cfg_scale)
    return run_average_gmacs(meter.per_call)


class Flops(Measurement):
    """Static GFLOPs (one group per model: counted once) or a row's dynamic GFLOPs (one group per row)."""
    METRICS = (METRIC_GFLOPS, METRIC_GFLOPS_DYNAMIC)
    ONE_VALUE_PER_GROUP = True

    def group_key(self, item: Item):
        return (item.metric, item.model) if item.metric == METRIC_GFLOPS else (item.metric, item.row.name,
                                                                                   item.sampler)

    def group_label(self, item: Item) -> str:
        return f"{item.model} static FLOPs" if item.metric == METRIC_GFLOPS else f"{item.row.name} dynamic FLOPs"

    def measure(self, item: Item, ctx) -> float:
        return static_gflops(item.model) if item.metric == METRIC_GFLOPS else dynamic_gflops(item, ctx)


MEASUREMENT = Flops
