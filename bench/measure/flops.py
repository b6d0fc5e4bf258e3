"""GFLOPs (multiply-accumulates, as the paper): static with fvcore, or DyDiT's average over a sampling run.

Static: one forward of batch 1, no CFG doubling, fused attention counted (dydit.flops.fvcore_macs).
Dynamic: DyDiT's FLOPs depend on what its trained routers switch off at each step, so they need the
trained checkpoint and a sampling run; the paper's 84.33 / 57.88 G are such averages.
"""
import warnings

from dydit.flops import fvcore_macs
from dydit.models import create_model

from bench.measure.base import Skip
from bench.suite import METRIC_GFLOPS, METRIC_GFLOPS_DYNAMIC

NO_PIPELINE = "dynamic FLOPs over a sampling run need the sampling pipeline (issue 4): dydit.fast.average_run_macs"


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


def dynamic_gflops(row, ctx) -> float:
    """Average GMACs per sample over a sampling run of the trained DyDiT named by row["checkpoint"]."""
    from bench import assets
    if not row.get("checkpoint"):
        raise ValueError(f"row {row['name']!r} names no checkpoint: dynamic FLOPs need the trained routers")
    status = assets.check_asset(row["checkpoint"], ctx.assets_root)
    if status.status != assets.PRESENT:
        raise Skip(status.message)
    import dydit.fast
    average_run_macs = getattr(dydit.fast, "average_run_macs", None)
    if average_run_macs is None:
        raise Skip(NO_PIPELINE)
    macs = average_run_macs(model_name=row["model"], checkpoint=status.path, sampler=row.get("sampler", {}),
                            seed=ctx.seed, device=ctx.device)
    return float(macs) / 1e9


def measure(row, metric, ctx):
    if metric == METRIC_GFLOPS:
        return static_gflops(row["model"], ctx)
    if metric == METRIC_GFLOPS_DYNAMIC:
        return dynamic_gflops(row, ctx)
    raise ValueError(f"bench.measure.flops measures {METRIC_GFLOPS!r} or {METRIC_GFLOPS_DYNAMIC!r}, not {metric!r}")
