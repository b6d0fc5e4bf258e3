"""FLOPs of Latte and DyLatte (dydit/latte.py), analytic, in dydit.flops' convention (MACs, one clip, what fvcore
counts): a spatial block runs F sequences of T patch tokens, a temporal block T sequences of F tokens; the
conditioning is repeated per sequence, so each sequence pays its block's adaLN; the final layer runs per frame.
tests/dydit/test_latte.py checks it against fvcore.

    latte_macs(model)                    # Latte, one clip (a DyLatte at full width with its routers)
    latte_macs(model, record)            # per clip (B,), the masks of one DyLatte forward
"""
import dataclasses
from typing import Optional, Sequence

import torch

from dydit.flops import Arch, attention_macs, block_macs, mlp_macs, outside_blocks_macs
from dydit.models import BlockMasks


def sequence_archs(model):
    """(spatial, temporal) Arch: one sequence of T patch tokens, one of F frames."""
    a = Arch.of(model)
    return a, dataclasses.replace(a, tokens=model.num_frames)


def _per_clip(values: torch.Tensor, clips: int) -> torch.Tensor:
    """(clips x sequences,) per-sequence values -> (clips,) sums."""
    return values.reshape(clips, -1).sum(1)


def latte_macs(model, record: Optional[Sequence[BlockMasks]] = None, routers=True, static=False):
    """MACs of one clip (an int), or per clip (B,) from a DyLatte forward's record; static: the Latte of the same
    shape (routers not counted, full width): what a DyLatte's FLOPs are compared with."""
    spatial, temporal = sequence_archs(model)
    if static:
        spatial, temporal = (dataclasses.replace(a, dynamic=False) for a in (spatial, temporal))
    F, T, depth = model.num_frames, spatial.tokens, len(model.blocks)
    one_frame = outside_blocks_macs(spatial) - (256 * spatial.hidden + spatial.hidden ** 2)  # patch embed + final
    outside = F * one_frame + 256 * spatial.hidden + spatial.hidden ** 2  # + the timestep MLP, once per clip
    if record is None:
        blocks = sum((F * block_macs(spatial) if i % 2 == 0 else T * block_macs(temporal)) for i in range(depth))
        return int(outside + blocks)
    assert len(record) == depth, f"need masks for {depth} blocks, got {len(record)}"
    clips = record[0].heads.shape[0] // F
    total = torch.full((clips,), float(outside), dtype=torch.float64, device=record[0].tokens.device)
    for i, masks in enumerate(record):
        a = spatial if i % 2 == 0 else temporal
        heads, groups, tokens = (m.sum(-1).double() for m in (masks.heads, masks.channels, masks.tokens))
        total += _per_clip(block_macs(a, heads, groups, tokens, routers), clips)
    return total


def block_flops_ratio(model, record: Sequence[BlockMasks]) -> torch.Tensor:
    """DyDiT's training ratio F_dyn / F_static per clip (B,): the blocks' attention and MLP only (as
    dydit.flops.block_flops_ratio), differentiable through the masks."""
    spatial, temporal = sequence_archs(model)
    F, T = model.num_frames, spatial.tokens
    static = sum((F if i % 2 == 0 else T) * (attention_macs(a) + mlp_macs(a))
                 for i, a in enumerate([spatial, temporal] * (len(model.blocks) // 2)))
    clips = record[0].heads.shape[0] // F
    dyn = 0
    for i, masks in enumerate(record):
        a = spatial if i % 2 == 0 else temporal
        per_sequence = attention_macs(a, masks.heads.sum(-1)) + mlp_macs(a, masks.channels.sum(-1), masks.tokens.sum(-1))
        dyn = dyn + _per_clip(per_sequence, clips)
    return dyn / static
