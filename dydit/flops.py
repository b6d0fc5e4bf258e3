"""Params and FLOPs. Convention (DiT issue #14, the paper): "FLOPs" are multiply-accumulates (MACs),
one forward of batch 1, no CFG doubling. fvcore is the measurement; the analytic count is the
cross-check and the only way to count a dynamic plan without running it.
"""
import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from dydit.models import BlockMasks, DiT, DyDiT


def count_params(model: nn.Module) -> int:
    """All parameters, the frozen sin-cos pos_embed included (as DiT reports 675M)."""
    return sum(p.numel() for p in model.parameters())


#################################################################################
#                                 fvcore                                        #
#################################################################################

def _sdpa_macs(inputs, outputs):
    """fvcore handle for aten::scaled_dot_product_attention: Q K^T and A V, as MACs."""
    from fvcore.nn.jit_handles import get_shape
    q, k, v = (get_shape(inputs[i]) for i in range(3))
    *batch, n, d = q
    s, dv = k[-2], v[-1]
    prod = 1
    for b in batch:
        prod *= b
    return prod * n * s * (d + dv)


class _Call(nn.Module):
    """Wraps a callable so fvcore can trace it as a module: fvcore(module, inputs) calls module(*inputs)."""

    def __init__(self, fn, owner: nn.Module):
        super().__init__()
        self.fn = fn
        self.owner = owner  # registered so fvcore sees the parameters

    def forward(self, *inputs):
        return self.fn(*inputs)


def example_inputs(model: DiT, batch=1, t=500, seed=0):
    """Real CPU inputs (fvcore cannot trace on the meta device): latents, timesteps, labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.in_channels, model.input_size, model.input_size, generator=g)
    return x, torch.full((batch,), float(t)), torch.zeros(batch, dtype=torch.long)


def fvcore_macs(model: nn.Module, inputs=None, forward=None) -> int:
    """fvcore's count (MACs) of one call, with fused attention counted; forward defaults to model."""
    from fvcore.nn import FlopCountAnalysis
    inputs = example_inputs(model) if inputs is None else inputs
    target = model if forward is None else _Call(forward, model)
    with torch.no_grad():
        analysis = FlopCountAnalysis(target, inputs)
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        return int(analysis.total())


#################################################################################
#                               Analytic count                                  #
#################################################################################

@dataclass
class Arch:
    """The shapes that decide FLOPs."""
    depth: int
    hidden: int
    heads: int
    tokens: int
    mlp_hidden: int
    patch: int
    in_channels: int
    out_channels: int
    dynamic: bool

    @classmethod
    def of(cls, model: DiT):
        return cls(len(model.blocks), model.hidden_size, model.num_heads, model.x_embedder.num_patches,
                   model.blocks[0].mlp.fc1.out_features, model.patch_size, model.in_channels,
                   model.out_channels, isinstance(model, DyDiT) and not model.complete_model)


def attention_macs(a: Arch, heads_on=None):
    """qkv + Q K^T + A V + proj of one sample, scaled by the heads computed: 4ND^2 + 2N^2D at full width."""
    full = 4 * a.tokens * a.hidden ** 2 + 2 * a.tokens ** 2 * a.hidden
    return full if heads_on is None else full * heads_on / a.heads


def mlp_macs(a: Arch, groups_on=None, tokens_on=None):
    """fc1 + fc2 of one sample over the tokens and channel groups computed: 8ND^2 at full width."""
    groups = a.heads if groups_on is None else groups_on
    tokens = a.tokens if tokens_on is None else tokens_on
    return 2 * tokens * a.hidden * a.mlp_hidden * groups / a.heads


def router_macs(a: Arch):
    """Head + channel routers on t_emb and the token router on every token, one block, one sample."""
    width = 2 * a.hidden * (a.heads - 1)
    token = a.tokens * (a.hidden * (a.hidden // 16) + a.hidden // 16)
    return width + token


def block_macs(a: Arch, heads_on=None, groups_on=None, tokens_on=None, routers=True):
    """One block, one sample: adaLN, both LayerNorms (fvcore counts 4 per element), attention, MLP
    and, for a DyDiT with routers=True, its routers."""
    tokens = a.tokens if tokens_on is None else tokens_on
    norms = 4 * a.tokens * a.hidden + 4 * tokens * a.hidden
    macs = 6 * a.hidden ** 2 + norms + attention_macs(a, heads_on) + mlp_macs(a, groups_on, tokens_on)
    return macs + (router_macs(a) if a.dynamic and routers else 0)


def outside_blocks_macs(a: Arch):
    """Patch embedding, timestep MLP (256 -> D -> D) and the final layer."""
    patch = a.tokens * a.hidden * a.in_channels * a.patch ** 2
    t_mlp = 256 * a.hidden + a.hidden ** 2
    final = 2 * a.hidden ** 2 + 4 * a.tokens * a.hidden + a.tokens * a.hidden * a.patch ** 2 * a.out_channels
    return patch + t_mlp + final


def analytic_macs(model: DiT) -> int:
    """Static count of one sample at full width (routers included for a DyDiT, not complete_model)."""
    a = Arch.of(model)
    return int(outside_blocks_macs(a) + a.depth * block_macs(a))


def dit_macs(model: DiT) -> int:
    """Static count of the DiT of the same shape (a DyDiT at full width, routers not counted): what a
    DyDiT's dynamic FLOPs are compared with."""
    a = dataclasses.replace(Arch.of(model), dynamic=False)
    return int(outside_blocks_macs(a) + a.depth * block_macs(a))


def active_counts(masks: BlockMasks):
    """Per-sample (heads on, channel groups on, tokens on), each a (B,) tensor, from one block's masks."""
    return masks.heads.sum(-1), masks.channels.sum(-1), masks.tokens.sum(-1)


def dynamic_macs(model: DiT, record: Sequence[BlockMasks], routers=True) -> torch.Tensor:
    """Per-sample MACs (B,) of one forward whose block masks are `record` (one BlockMasks per block).

    routers=False leaves out the routers' own cost, for masks imposed from outside. The width routers
    run once per timestep for the whole batch; counting them per sample overstates by < 0.01 %.
    """
    a = Arch.of(model)
    assert len(record) == a.depth, f"need masks for {a.depth} blocks, got {len(record)}"
    total = torch.full_like(record[0].tokens[:, 0], float(outside_blocks_macs(a)), dtype=torch.float64)
    for masks in record:
        heads, groups, tokens = (c.double() for c in active_counts(masks))
        total += block_macs(a, heads, groups, tokens, routers)
    return total


def block_flops_ratio(model: DiT, record: Sequence[BlockMasks]) -> torch.Tensor:
    """DyDiT's training ratio F_dyn / F_static per sample (B,): attention and MLP of the blocks only."""
    a = Arch.of(model)
    static = a.depth * (attention_macs(a) + mlp_macs(a))
    dyn = 0
    for masks in record:
        heads, groups, tokens = active_counts(masks)
        dyn = dyn + attention_macs(a, heads) + mlp_macs(a, groups, tokens)
    return dyn / static


def gflops(macs) -> float:
    return float(macs) / 1e9


def run_average_gmacs(per_step: List[torch.Tensor]) -> float:
    """Average GMACs per sample over a sampling run: mean over steps of the per-sample mean."""
    return float(torch.stack([s.double().mean() for s in per_step]).mean()) / 1e9


def describe(model: DiT, name: Optional[str] = None, use_fvcore=True) -> dict:
    """Name, params, static GFLOPs (fvcore and analytic) and, for DyDiT, the complete-model GFLOPs."""
    out = {"model": name or type(model).__name__, "params": count_params(model),
           "gflops_analytic": round(gflops(analytic_macs(model)), 4)}
    if use_fvcore:
        out["gflops"] = round(gflops(fvcore_macs(model)), 4)
    if isinstance(model, DyDiT):
        model.complete_model = True
        out["complete_gflops_analytic"] = round(gflops(analytic_macs(model)), 4)
        if use_fvcore:
            out["complete_gflops"] = round(gflops(fvcore_macs(model)), 4)
        model.complete_model = False
    return out
