"""The compute-skipping DyDiT path for inference. Numerically the masked path of models.py.

The public DyDiT code multiplies by masks, so it runs every FLOP of DiT. Here:
- heads: only the active heads are projected and attended (qkv rows and proj columns sliced);
- MLP: only the active channel groups are computed (fc1 rows and fc2 columns sliced);
- tokens: only the kept tokens go through the MLP (gather, compute, scatter-add), per sample.
Width masks depend on t alone, so they are the same for the whole batch and both CFG halves: the plan
for a schedule is computed once. Weights, measured on one DiT-XL block (CPU, batch 2):
- contiguous copies of the active rows/columns (one GEMM per layer) run at the FLOPs-ideal time. They
  are cached per (block, pattern) until `cache_bytes` is used up, with no eviction: a schedule cycles
  through its patterns, where LRU would miss every time.
- past the budget, the MLP uses strided *views* of fc1/fc2 per contiguous run of active channel
  groups (GEMM takes them as they are; partial fc2 outputs summed): 0-15 % over ideal, cheaper than
  a copy per call. Attention copies per call: its narrow per-run GEMMs ran ~25 % over ideal.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dydit.models import BlockMasks, DyDiT, cfg_forward

# per block: (active head indices, active MLP channel-group indices), each a sorted tuple of ints
Widths = List[Tuple[Tuple[int, ...], Tuple[int, ...]]]


#################################################################################
#                                 Width plan                                    #
#################################################################################

@torch.no_grad()
def width_plan(model: DyDiT, timesteps: Sequence[float]) -> Dict[float, Widths]:
    """Active heads and channel groups of every block for each timestep (eval rule: logit > 0)."""
    device = model.pos_embed.device
    t = torch.as_tensor([float(s) for s in timesteps], device=device)
    t_emb = model.t_embedder(t)  # (S, D)
    per_block = []
    for block in model.blocks:
        heads = torch.cat([torch.ones_like(t[:, None], dtype=torch.bool), block.attn_rate.router(t_emb) > 0], 1)
        groups = torch.cat([torch.ones_like(t[:, None], dtype=torch.bool), block.mlp_rate.router(t_emb) > 0], 1)
        per_block.append((heads.cpu(), groups.cpu()))  # (S, H) each
    plan = {}
    for s, step in enumerate(t.tolist()):
        plan[step] = [(_indices(h[s]), _indices(g[s])) for h, g in per_block]
    return plan


def _indices(mask: torch.Tensor) -> Tuple[int, ...]:
    return tuple(mask.nonzero().flatten().tolist())


def widths_from_masks(masks: Sequence[BlockMasks]) -> Widths:
    """Widths of a list of BlockMasks whose heads/channels are the same for every sample."""
    out = []
    for m in masks:
        heads, channels = m.heads.bool(), m.channels.bool()
        if not (heads == heads[:1]).all() or not (channels == channels[:1]).all():
            raise ValueError("the fast path needs width masks shared by the whole batch (they depend on t only)")
        out.append((_indices(heads[0]), _indices(channels[0])))
    return out


#################################################################################
#                               Fast DyDiT                                      #
#################################################################################

class FastDyDiT(nn.Module):
    """Inference wrapper of a DyDiT that skips inactive heads, channel groups and tokens."""

    def __init__(self, model: DyDiT, cache_bytes: int = 4 << 30):
        super().__init__()
        self.model = model
        self.in_channels = model.in_channels
        self.plan: Dict[float, Widths] = {}
        self.cache_bytes = cache_bytes
        self._cache: Dict[tuple, Tuple[torch.Tensor, ...]] = {}
        self._cached_bytes = 0

    def prepare(self, timesteps: Sequence[float]):
        """Computes the width plan for a whole schedule at once (otherwise each new t is planned lazily)."""
        self.plan.update(width_plan(self.model, timesteps))
        return self

    @torch.no_grad()
    def forward(self, x, t, y, widths: Optional[Widths] = None, token_masks=None, record=None):
        """x (B, C, H, W), t (B,) one shared timestep, y (B,); widths/token_masks ((B, T) per block) override."""
        model = self.model
        if widths is None:
            widths = self._widths_for(t)
        x, c, _ = model.embed(x, t, y)
        for i, block in enumerate(model.blocks):
            tokens = None if token_masks is None else token_masks[i]
            heads, groups = widths[i]
            x = fast_block(block, x, c, widths[i], tokens, record,
                           self._sliced(block.attn, heads, sliced_attention_weights, always=True),
                           self._sliced(block.mlp, groups, sliced_mlp_weights))
        return model.unpatchify(model.final_layer(x, c))

    def forward_with_cfg(self, x, t, y, cfg_scale, guided_channels=3):
        """CFG on a [cond; uncond] batch: both halves share one width plan (it depends on t only)."""
        return cfg_forward(self, x, t, y, cfg_scale, guided_channels)

    def _sliced(self, module, active, make, always=False):
        """Sliced weights of the `active` heads/groups of an attention or MLP module, from the cache or
        made now (kept while the budget allows); None at full width, or past the budget unless `always`.
        The key holds the parameters' versions: in-place weight updates invalidate it."""
        num_groups = module.num_heads if hasattr(module, "num_heads") else self.model.num_heads
        if len(active) == num_groups:
            return None
        key = (id(module), active) + tuple(p._version for p in module.parameters())
        if key in self._cache:
            return self._cache[key]
        size = sum(p.numel() * p.element_size() for p in module.parameters()) * len(active) // num_groups
        fits = self._cached_bytes + size <= self.cache_bytes
        if not fits and not always:
            return None
        weights = make(module, active, num_groups)
        if fits:
            self._cache[key] = weights
            self._cached_bytes += size
        return weights

    def clear_cache(self):
        self._cache.clear()
        self._cached_bytes = 0

    def _widths_for(self, t) -> Widths:
        step = float(t[0])
        if not bool((t == t[0]).all()):
            raise ValueError("the fast path runs one timestep per batch (width depends on t); got several")
        if step not in self.plan:
            self.plan.update(width_plan(self.model, [step]))
        return self.plan[step]


#################################################################################
#                     One block, computing only what is active                  #
#################################################################################

def runs(indices: Sequence[int]) -> List[Tuple[int, int]]:
    """Contiguous runs [(start, stop), ...] of sorted indices: (0, 1, 2, 5) -> [(0, 3), (5, 6)]."""
    out = []
    for i in indices:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def fast_block(block, x, c, widths, tokens=None, record=None, attention_weights=None, mlp_weights=None):
    """A DyDiT block on x (B, T, D) that computes only active heads, channel groups and tokens.

    attention_weights / mlp_weights: sliced_*_weights of the active heads / groups, if the caller
    keeps them cached (otherwise attention slices per call and the MLP uses views)."""
    heads, groups = widths
    H = block.attn.num_heads  # the MLP hidden is split into H channel groups
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.adaLN_modulation(c).chunk(6, dim=1)
    # addcmul: modulate and gated residual in one pass each (x * (1 + scale) + shift; x + gate * out)
    h = torch.addcmul(shift_msa.unsqueeze(1), block.norm1(x), 1 + scale_msa.unsqueeze(1))
    x = torch.addcmul(x, gate_msa.unsqueeze(1), active_attention(block.attn, h, heads, attention_weights))

    # token selection on the post-attention residual; the MLP runs on kept tokens only
    keep = block.token_selection.mlp_head(x).squeeze(-1) > 0 if tokens is None else tokens.bool()  # (B, T)
    if record is not None:
        record.append(_record(block, heads, groups, keep))
    if bool(keep.all()):  # nothing skipped: no gather
        h = torch.addcmul(shift_mlp.unsqueeze(1), block.norm2(x), 1 + scale_mlp.unsqueeze(1))
        return torch.addcmul(x, gate_mlp.unsqueeze(1), active_mlp(block.mlp, h, groups, H, mlp_weights))
    B, T, D = x.shape
    idx = keep.flatten().nonzero().squeeze(1)  # (M,) rows of the flattened (B*T, D)
    if idx.numel() == 0:
        return x
    # per kept row, its sample's (shift, 1 + scale, gate): one gather instead of three
    shift, scale, gate = torch.stack([shift_mlp, 1 + scale_mlp, gate_mlp], 1).index_select(0, idx // T).unbind(1)
    rows = x.reshape(B * T, D).index_select(0, idx)  # (M, D)
    out = active_mlp(block.mlp, torch.addcmul(shift, block.norm2(rows), scale), groups, H, mlp_weights).mul_(gate)
    return x.reshape(B * T, D).index_add_(0, idx, out).reshape(B, T, D)  # x is this block's own tensor


def sliced_attention_weights(attn, heads, num_heads=None):
    """(qkv weight, qkv bias, proj weight) of the active heads only, as contiguous copies."""
    hd, D = attn.head_dim, attn.num_heads * attn.head_dim
    cols = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads]).to(attn.qkv.weight.device)
    rows = torch.cat([cols + s * D for s in range(3)])  # the q, k and v rows of those heads
    return (attn.qkv.weight.index_select(0, rows), attn.qkv.bias.index_select(0, rows),
            attn.proj.weight.index_select(1, cols))


def active_attention(attn, h, heads, weights=None):
    """Attention of the active heads only, h (B, T, D) -> (B, T, D); weights from sliced_attention_weights."""
    if len(heads) == attn.num_heads:
        return attn(h)
    qkv_w, qkv_b, proj_w = weights if weights is not None else sliced_attention_weights(attn, heads)
    B, T, _ = h.shape
    k, hd = len(heads), attn.head_dim
    qkv = F.linear(h, qkv_w, qkv_b).reshape(B, T, 3, k, hd).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, k, T, hd)
    return F.linear(o.transpose(1, 2).reshape(B, T, k * hd), proj_w, attn.proj.bias)


def sliced_mlp_weights(mlp, groups, num_groups):
    """(fc1 weight, fc1 bias, fc2 weight) of the active channel groups only, as contiguous copies."""
    size = mlp.fc1.out_features // num_groups
    rows = torch.cat([torch.arange(g * size, (g + 1) * size) for g in groups]).to(mlp.fc1.weight.device)
    return (mlp.fc1.weight.index_select(0, rows), mlp.fc1.bias.index_select(0, rows),
            mlp.fc2.weight.index_select(1, rows))


def active_mlp(mlp, h, groups, num_groups, weights=None):
    """MLP over the active channel groups only, h (..., D) -> (..., D): one GEMM per layer on sliced
    weights when given, else strided views of fc1/fc2 per contiguous run of groups (no copy)."""
    if len(groups) == num_groups:
        return mlp(h)
    if weights is not None:
        fc1_w, fc1_b, fc2_w = weights
        return F.linear(mlp.act(F.linear(h, fc1_w, fc1_b)), fc2_w, mlp.fc2.bias)
    size = mlp.fc1.out_features // num_groups
    out = None
    for a, z in runs(groups):
        cols = slice(a * size, z * size)
        part = F.linear(mlp.act(F.linear(h, mlp.fc1.weight[cols], mlp.fc1.bias[cols])), mlp.fc2.weight[:, cols])
        out = part if out is None else out + part
    return out + mlp.fc2.bias


def _record(block, heads, groups, keep) -> BlockMasks:
    """BlockMasks (for FLOPs accounting) of what one block computed."""
    B, H = keep.shape[0], block.attn.num_heads
    head_mask = torch.zeros(B, H, device=keep.device)
    head_mask[:, list(heads)] = 1
    group_mask = torch.zeros(B, H, device=keep.device)
    group_mask[:, list(groups)] = 1
    return BlockMasks(head_mask, group_mask, keep.float())
