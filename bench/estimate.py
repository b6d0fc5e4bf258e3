"""How long a planned run takes on one GPU, estimated from FLOPs: what the `ci` profile is sized by, and what
the README states until a runner has measured it.

    python -m bench estimate --profile ci            # per group, per suite, and the total (H100, TF32)

Estimated, not measured: FLOPs of the planned work (dydit.flops' analytic count of the row's model, the SD VAE
decode, Inception) divided by an assumed sustained throughput (GPUS: the data-sheet's dense peak times
ACHIEVED), plus a fixed cost per measurement group (loading weights, warm-up, fvcore). Dynamic rows run at
their calibrated FLOPs fraction divided by DYNAMIC_REALIZED (the paper's realized speed-up / FLOPs reduction).
"""
from dataclasses import dataclass
from typing import Dict, List

from bench.definitions import METRIC_GFLOPS_DYNAMIC, QUALITY
from bench.measure.base import Group, Item
from dydit import registry

ACHIEVED = 0.40  # assumed fraction of the dense peak a DiT-XL/2 forward at the sampling batch sustains
DYNAMIC_REALIZED = 0.84  # DyDiT-XL lambda=0.5: speed-up / FLOPs reduction in the paper (V100); DiT-like is 1
LATENT_SIZE = 32  # ImageNet 256 x 256 through the SD VAE (/8)
VAE_DECODE_GMACS = 311.7  # fvcore, SD VAE decoder 32 -> 256 x 256 (bench.timing.loop.vae_decode_gmacs; NOTES.md)
INCEPTION_GMACS = 5.7  # Inception-v3 at 299 x 299 (Szegedy et al. 2016: 5.7 billion multiply-adds)
FEATURE_PASSES = 3  # Inception passes per sample: torch-fidelity, clean-fid's sFID features, precision/recall
# assumed fixed seconds per measurement group: load an XL checkpoint (2.7 GB), the VAE and Inception, warm up;
# params and FLOPs build one model and count on it
GROUP_SECONDS = {"quality": 60.0, "loop": 60.0}
OTHER_GROUP_SECONDS = 15.0
SMALL_CALL_SECONDS = 0.03  # assumed floor of one model call at batch 1 (launch-bound on any GPU)


@dataclass(frozen=True)
class Gpu:
    """A GPU's data-sheet dense peaks (TFLOPS, no sparsity) per precision."""
    name: str
    peak_tflops: Dict[str, float]

    def flops_per_second(self, precision: str) -> float:
        return self.peak_tflops[precision] * 1e12 * ACHIEVED


# NVIDIA H100 SXM5 data sheet: FP32 67, TF32 tensor 989 and BF16 1,979 with 2:4 sparsity, i.e. 494.5 and 989.5 dense
H100 = Gpu("NVIDIA H100 SXM (data sheet, dense)", {"fp32": 67.0, "tf32": 494.5, "bf16": 989.5})
GPUS = {"h100": H100}


@dataclass
class GroupEstimate:
    suite: str
    label: str
    measure: str
    flops: float
    seconds: float


def model_gmacs(item: Item) -> float:
    """GMACs of one forward of one sample of the row's model at ImageNet 256 (a dynamic row at its fraction,
    divided by DYNAMIC_REALIZED: what its time is worth in DiT-equivalent FLOPs)."""
    from dydit.flops import Arch, block_macs, outside_blocks_macs
    entry = registry.entry(item.model)
    depth, hidden, heads = registry.SIZES[entry.size]
    arch = Arch(depth, hidden, heads, (LATENT_SIZE // entry.patch) ** 2, 4 * hidden, entry.patch, 4,
                8 if entry.family == "DiT" else 4, False)
    gmacs = (outside_blocks_macs(arch) + depth * block_macs(arch)) / 1e9
    if entry.is_dynamic:
        gmacs *= (item.options.calibration_fraction or 1.0) / DYNAMIC_REALIZED
    return gmacs


def model_flops_per_image(item: Item) -> float:
    """FLOPs (2 per MAC) of the model calls of one image: every full step's forward, a CFG batch of 2."""
    s = item.sampler
    rows = 2 if s.cfg_scale != 1.0 else 1
    full_steps = s.steps if s.deepcache_interval <= 1 else -(-s.steps // s.deepcache_interval)
    return 2e9 * full_steps * rows * model_gmacs(item)


def sampling_flops_per_image(item: Item) -> float:
    """FLOPs of one evaluated image: its model calls, the VAE decode, its Inception features."""
    return model_flops_per_image(item) + 2e9 * (VAE_DECODE_GMACS + FEATURE_PASSES * INCEPTION_GMACS)


def estimate_group(suite: str, group: Group, gpu: Gpu, precision: str = "") -> GroupEstimate:
    """One measurement group's FLOPs and seconds (precision: instead of the cells' own)."""
    item = group.items[0]
    precision = precision or item.sampler.precision
    if item.cell.kind == QUALITY:  # one sampling run of num_samples images, evaluated once
        flops = item.sampler.num_samples * sampling_flops_per_image(item)
        seconds = flops / gpu.flops_per_second(precision)
    elif group.measure == "loop":  # timed calls: calls x repeats per path and kind, launch-bound at batch 1
        from bench.measure.loop import group_budget
        b = group_budget(group.items)
        calls = sum(b.calls * (b.repeats + 1) * (2 if i.sampler.deepcache_interval > 1 else 1) for i in group.items)
        flops = calls * 2e9 * 2 * max(model_gmacs(i) for i in group.items)
        seconds = max(flops / gpu.flops_per_second(precision), calls * SMALL_CALL_SECONDS)
    elif item.metric == METRIC_GFLOPS_DYNAMIC:  # a DyDiT's FLOPs averaged over sampling runs (no decode)
        from bench.measure.flops import FLOPS_RUN_IMAGES
        flops = FLOPS_RUN_IMAGES * model_flops_per_image(item)
        seconds = flops / gpu.flops_per_second(precision)
    else:  # params, static FLOPs: one forward at batch 1 or none
        flops, seconds = 0.0, 0.0
    return GroupEstimate(suite, group.label, group.measure, flops,
                         seconds + GROUP_SECONDS.get(group.measure, OTHER_GROUP_SECONDS))


def estimate(plans: Dict[str, List[Group]], gpu: Gpu = H100, precision: str = "") -> List[GroupEstimate]:
    """Every group of every suite's plan ({suite name: its groups}), in order (precision: every group at it)."""
    return [estimate_group(suite, g, gpu, precision) for suite, groups in plans.items() for g in groups]


def total_minutes(estimates: List[GroupEstimate]) -> float:
    return sum(e.seconds for e in estimates) / 60
