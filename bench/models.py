"""A suite row's model, one way for every measurement: its checkpoint (plain, EMA, or adapters on their base),
the mini reproduction's model trained here, or, where the row allows it, random weights (a static model's
time does not depend on them) or random weights with calibrated routers (a dynamic model timed without its
trained routers: bench.timing.calibration).

    row_model(row, ctx, OR_CALIBRATED) -> RowModel(model, weights, calibrate)
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch.nn as nn

from bench import assets
from bench.measure.base import Context, Skip
from bench.suite import Row
from dydit import registry

# what a row without its checkpoint here gets instead
CHECKPOINT_ONLY = "checkpoint"  # nothing: Skip naming the checkpoint and where it goes
OR_RANDOM = "or-random"  # a static model: random weights (timing); a dynamic one: Skip
OR_CALIBRATED = "or-calibrated"  # a dynamic model: random standardised routers, to be calibrated; a static one: random
CALIBRATION_STEPS = 10  # timesteps over [0, 1000) calibrated routers are standardised on


@dataclass
class RowModel:
    """A row's model in eval mode on the run's device, and what its weights are."""
    model: nn.Module
    weights: str  # for the report: the checkpoint and its path, "trained here ...", or "random ..."
    calibrate: bool = False  # random routers: the caller calibrates them to the row's FLOPs fraction
    key: Optional[str] = None  # the cache key of weights trained here (their timings may be kept); None: others


def checkpoint_path(row: Row, ctx: Context) -> Path:
    """The present, checksum-verified path of a row's checkpoint; Skip saying what is missing and where it goes."""
    if not row.checkpoint:
        raise Skip(f"row {row.name!r} names no checkpoint")
    status = assets.check_asset(row.checkpoint, ctx.assets_root)
    if not status.ok:
        raise Skip(status.message)
    return status.path


def row_model(row: Row, ctx: Context, fallback: str = CHECKPOINT_ONLY) -> RowModel:
    """The model a row names, with the weights this machine has for it (see the module docstring)."""
    from dydit.checkpoints import load_model
    from dydit.models import randomize_
    entry = registry.entry(row.model)
    if entry.is_mini:  # the mini reproduction's models: trained here, cached by bench.mini.build
        from bench.mini import build
        model, info = build.row_model(ctx, row.model, row.options)
        return RowModel(model.eval().to(ctx.device), f"trained here by the mini reproduction ({info['key']})",
                        key=info["key"])
    status = assets.check_asset(row.checkpoint, ctx.assets_root) if row.checkpoint else None
    if status is not None and status.ok:
        model = load_model(row.model, status.path)
        return RowModel(model.eval().to(ctx.device), f"{row.checkpoint} ({status.path})")
    if entry.is_dynamic and fallback == OR_CALIBRATED:
        from bench.timing.calibration import schedule, standardized_dydit
        model = standardized_dydit(row.model, schedule(CALIBRATION_STEPS), ctx.device, ctx.seed)
        return RowModel(model, f"random weights, routers calibrated to {row.options.calibration_fraction:.4g} of "
                               f"DiT's FLOPs on each sampler's timed calls (no {row.checkpoint or 'checkpoint'} here)",
                        calibrate=True)
    if not entry.is_dynamic and fallback in (OR_RANDOM, OR_CALIBRATED):
        model = randomize_(registry.create_model(row.model), seed=ctx.seed)
        return RowModel(model.eval().to(ctx.device), "random (a static DiT's time does not depend on its weights)")
    if status is not None:
        raise Skip(status.message)
    raise Skip(f"row {row.name!r} names no checkpoint: " + ("DyDiT timing depends on the trained routers"
                                                           if entry.is_dynamic else "it needs trained weights"))
