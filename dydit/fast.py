"""The compute-skipping DyDiT path for inference. Numerically the masked path of models.py.

The public DyDiT code multiplies by masks, so it runs every FLOP of DiT. Here:
- heads: only the active heads are projected and attended (qkv rows and proj columns sliced);
- MLP: only the active channel groups are computed (fc1 rows and fc2 columns sliced);
- tokens: only the kept tokens go through the MLP (gather, compute, scatter-add), per sample.
Width masks depend on t alone, so they are the same for the whole batch and both CFG halves: the plan
for a schedule is computed once. Weights, measured on one DiT-XL block (CPU, batch 2):
- contiguous copies of the active rows/columns (one GEMM per layer) run at the FLOPs-ideal time. They
  are cached per (block, pattern) within `cache_bytes` (default 2 GiB, so a GPU that holds the model,
  the VAE and the batch has room), with no eviction: a schedule cycles through its patterns, where LRU
  would miss every time. `prepare(timesteps)` picks which: the patterns the schedule uses most often
  first, so what is cached does not depend on call order (and the sampled calls of
  bench.timing.loop see the cache a whole run would).
- past the budget, the MLP uses strided *views* of fc1/fc2 per contiguous run of active channel
  groups (GEMM takes them as they are; partial fc2 outputs summed): 0-15 % over ideal, cheaper than
  a copy per call. Attention copies per call: its narrow per-run GEMMs ran ~25 % over ideal.
The plan and the copies are stamped with the parameters they came from (Stamp), dropped at the next
call once those change (load_state_dict, `p.data = ...`, .to(dtype/device)). Contents are never read:
after writes the version counter misses (`p.data.copy_(...)`), call clear_cache().
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef

from dydit.lora import TDLoRALinear, unmerged_static_lora
from dydit.models import BlockMasks, DiTBlock, DyDiT, cfg_forward

# per block: (active head indices, active MLP channel-group indices), each a sorted tuple of ints
Widths = List[Tuple[Tuple[int, ...], Tuple[int, ...]]]

DEFAULT_CACHE_BYTES = 2 << 30  # sliced weights kept beyond the model's own (bench speed --cache-gb: the curve)
# torch.compile modes of the attention core (its shapes are fixed by the width plan; the token MLP's row count is
# data-dependent and stays eager). "reduce-overhead" is inductor with CUDA graphs. Off by default: no GPU has
# measured them yet (bench speed --compile, bench device-check).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
TRAIN_MODE_ERROR = ("FastDyDiT is an inference path: call model.eval() first (train mode drops labels at random "
                    "and samples Gumbel masks)")


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
#                     Stamps: what derived tensors depend on                    #
#################################################################################

class Stamp:
    """Per parameter: identity, version counter, storage, address, dtype, device (contents never read).

    The storages are weakly referenced while the stamp lives: their memory can be freed, but no new
    storage can take their place (a freed and reused address would otherwise look unchanged)."""

    def __init__(self, params):
        params = list(params)
        self.key = self.of(params)
        self._pins = [StorageWeakRef(p.untyped_storage()) for p in params]

    @staticmethod
    def of(params) -> tuple:
        return tuple((id(p), p._version, p.untyped_storage()._cdata, p.data_ptr(), p.dtype, p.device) for p in params)

    def matches(self, params) -> bool:
        return self.of(params) == self.key


#################################################################################
#                               Fast DyDiT                                      #
#################################################################################

class FastDyDiT(nn.Module):
    """Inference wrapper of a DyDiT that skips inactive heads, channel groups and tokens."""

    def __init__(self, model: DyDiT, cache_bytes: int = DEFAULT_CACHE_BYTES, compile_mode: Optional[str] = None,
                 compile_backend: str = "inductor"):
        """compile_mode: torch.compile the attention core (COMPILE_MODES; None: eager); compile_backend: the
        torch.compile backend (inductor; the tests use aot_eager, which traces the same graph without codegen)."""
        super().__init__()
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile_mode {compile_mode!r}; known: {', '.join(COMPILE_MODES)} or None")
        unmerged = unmerged_static_lora(model)
        if unmerged:  # the fast path slices nn.Linear weights: an unmerged LoRA's update would be dropped
            raise ValueError(f"static LoRA is not merged ({unmerged[0]}, ...): call dydit.lora.merge_static_lora("
                             f"model) before FastDyDiT")
        self.model = model
        self.in_channels = model.in_channels
        self.cache_bytes = cache_bytes
        self._plan: Dict[float, Widths] = {}
        self._plan_stamp: Optional[Stamp] = None
        self._cache: Dict[tuple, Tuple[torch.Tensor, ...]] = {}  # (id(module), active) -> sliced weights
        self._stamps: Dict[int, Stamp] = {}  # id(module) -> the weights its cached slices were made from
        self._cached_bytes = 0
        self._chosen: Optional[set] = None  # after prepare(): the (id(module), active) keys to cache
        self.compile_mode = compile_mode
        # dynamic=True: one graph for every head count (a symbolic k), not one compile per width pattern
        self._attention_core = attention_core if compile_mode is None else torch.compile(
            attention_core, mode=compile_mode, dynamic=True, fullgraph=True, backend=compile_backend)

    @property
    def plan(self) -> Dict[float, Widths]:
        """Widths per timestep planned so far, emptied first if t_embedder or a width router changed."""
        model = self.model
        params = list(model.t_embedder.parameters())
        params += [p for b in model.blocks for router in (b.attn_rate, b.mlp_rate) for p in router.parameters()]
        if self._plan_stamp is None or not self._plan_stamp.matches(params):
            self._plan.clear()
            self._chosen = None  # chosen for the old plan's patterns
            self._plan_stamp = Stamp(params)
        return self._plan

    def prepare(self, timesteps: Sequence[float]):
        """Computes the width plan for a whole schedule at once (otherwise each new t is planned lazily)
        and chooses the slices to cache for it: most used first, within the budget."""
        plan = self.plan
        plan.update(width_plan(self.model, timesteps))
        uses, size = {}, {}
        for step in timesteps:
            for block, (heads, groups) in zip(self.model.blocks, plan[float(step)]):
                for module, active in ((block.attn, heads), (block.mlp, groups)):
                    if len(active) < self.model.num_heads:
                        key = (id(module), active)
                        uses[key] = uses.get(key, 0) + 1
                        size[key] = _slice_bound(module, active, self.model.num_heads)
        chosen, total = set(), 0
        for key in sorted(uses, key=lambda k: (-uses[k], size[k])):
            if total + size[key] <= self.cache_bytes:
                chosen.add(key)
                total += size[key]
        self._chosen = chosen
        for key in [key for key in self._cache if key not in chosen]:  # slices of an earlier schedule
            self._cached_bytes -= _nbytes(self._cache.pop(key))
        return self

    @torch.no_grad()
    def forward(self, x, t, y, widths: Optional[Widths] = None, token_masks=None, record=None, branches=None):
        """x (B, C, H, W), t (B,) one shared timestep, y (B,); widths/token_masks ((B, T) per block) override.
        branches: a list that receives each block's pre-gate (attention, MLP) outputs (dydit.deepcache).
        With model.complete_model, the plain DiT path as DyDiT.forward (widths, masks, record unused)."""
        model = self.model
        if model.training or any(b.training or b.token_selection.training for b in model.blocks):
            raise RuntimeError(TRAIN_MODE_ERROR)  # the training flags DyDiT.forward reads
        complete = model.complete_model  # the plain DiT path, as DyDiT.forward
        if not complete:
            widths = self._widths_for(t) if widths is None else widths
            self._drop_stale_slices()
        x, c, _ = model.embed(x, t, y)
        for i, block in enumerate(model.blocks):
            if complete:  # full width, routers not run
                x = DiTBlock.forward(block, x, c)
                continue
            tokens = None if token_masks is None else token_masks[i]
            heads, groups = widths[i]
            x = fast_block(block, x, c, widths[i], tokens, record,
                           self._sliced(block.attn, heads, sliced_attention_weights, always=True),
                           self._sliced(block.mlp, groups, sliced_mlp_weights), branches,
                           None if self.compile_mode is None else self._attention_core)
        return model.unpatchify(model.final_layer(x, c))

    def forward_with_cfg(self, x, t, y, cfg_scale, guided_channels=3):
        """CFG on a [cond; uncond] batch: both halves share one width plan (it depends on t only)."""
        return cfg_forward(self, x, t, y, cfg_scale, guided_channels)

    def _sliced(self, module, active, make, always=False):
        """Sliced weights of the `active` heads/groups of an attention or MLP module, from the cache or
        made now (kept while the budget allows); None at full width, or past the budget unless `always`."""
        num_groups = module.num_heads if hasattr(module, "num_heads") else self.model.num_heads
        if len(active) == num_groups:
            return None
        key = (id(module), active)
        if key in self._cache:  # made from the current weights: _drop_stale_slices ran this call
            return self._cache[key]
        chosen = self._chosen is None or key in self._chosen
        fits = chosen and self._cached_bytes + _slice_bound(module, active, num_groups) <= self.cache_bytes
        if not fits and not always:
            return None
        weights = make(module, active, num_groups)
        if fits:
            if id(module) not in self._stamps:
                self._stamps[id(module)] = Stamp(module.parameters())
            self._cache[key] = weights
            self._cached_bytes += _nbytes(weights)
        return weights

    def _drop_stale_slices(self):
        """Frees the cached slices, all patterns, of each attention / MLP whose weights have changed."""
        stale = set()
        for block in self.model.blocks:
            for module in (block.attn, block.mlp):
                stamp = self._stamps.get(id(module))
                if stamp is not None and not stamp.matches(module.parameters()):
                    stale.add(id(module))
                    del self._stamps[id(module)]
        for key in [key for key in self._cache if key[0] in stale]:
            self._cached_bytes -= _nbytes(self._cache.pop(key))

    def clear_cache(self):
        """Frees every sliced copy and forgets the plan (after weight writes the stamps cannot see)."""
        self._cache.clear()
        self._stamps.clear()
        self._cached_bytes = 0
        self._chosen = None
        self._plan.clear()

    def _widths_for(self, t) -> Widths:
        # the forward's other host synchronisation (besides one nonzero() per block): t read once, to look up the
        # width plan (widths depend on t only, and slicing needs them on the host) and check it is one timestep
        values = t.tolist()
        step = float(values[0])
        if any(v != values[0] for v in values):
            raise ValueError("the fast path runs one timestep per batch (width depends on t); got several")
        plan = self.plan
        if step not in plan:
            plan.update(width_plan(self.model, [step]))
        return plan[step]


def _slice_bound(module, active, num_groups) -> int:
    """An upper bound of a slice's bytes (the output bias is counted, not copied); exact ones are booked."""
    return sum(p.numel() * p.element_size() for p in module.parameters()) * len(active) // num_groups


def _nbytes(tensors) -> int:
    return sum(w.numel() * w.element_size() for w in tensors)


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


def fast_block(block, x, c, widths, tokens=None, record=None, attention_weights=None, mlp_weights=None,
               branches=None, core=None):
    """A DyDiT block on x (B, T, D) that computes only active heads, channel groups and tokens.

    attention_weights / mlp_weights: sliced_*_weights of the active heads / groups, if the caller
    keeps them cached (otherwise attention slices per call and the MLP uses views). branches: a list
    that receives (attention, MLP) outputs before their gates: attention (B, T, D); the MLP's (B, T, D),
    or (row indices of the flattened (B*T, D), outputs (M, D)) when tokens were skipped. core: a compiled
    attention_core, for every head count (full width too); None: eager, the module itself at full width."""
    heads, groups = widths
    H = block.attn.num_heads  # the MLP hidden is split into H channel groups
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.adaLN_modulation(c).chunk(6, dim=1)
    # addcmul: modulate and gated residual in one pass each (x * (1 + scale) + shift; x + gate * out)
    h = torch.addcmul(shift_msa.unsqueeze(1), block.norm1(x), 1 + scale_msa.unsqueeze(1))
    attn = active_attention(block.attn, h, heads, attention_weights, core)
    if core is not None and branches is not None:  # a CUDA-graph output is overwritten by the next replay: DeepCache
        attn = attn.clone()  # keeps this one for later steps
    x = torch.addcmul(x, gate_msa.unsqueeze(1), attn)

    # token selection on the post-attention residual; the MLP runs on kept tokens only
    keep = block.token_selection.mlp_head(x).squeeze(-1) > 0 if tokens is None else tokens.bool()  # (B, T)
    if record is not None:
        record.append(_record(block, heads, groups, keep))
    B, T, D = x.shape
    # The one host synchronisation of a block: nonzero() sizes the kept rows on the host (the gather's shape).
    # Its count also says whether anything is skipped, so no second sync (keep.all()) is needed for that.
    idx = keep.flatten().nonzero().squeeze(1)  # (M,) rows of the flattened (B*T, D)
    if idx.numel() == B * T:  # nothing skipped: no gather
        h = torch.addcmul(shift_mlp.unsqueeze(1), block.norm2(x), 1 + scale_mlp.unsqueeze(1))
        mlp = active_mlp(block.mlp, h, groups, H, mlp_weights)
        if branches is not None:
            branches.append((attn, mlp))
        return torch.addcmul(x, gate_mlp.unsqueeze(1), mlp)
    if idx.numel() == 0:
        if branches is not None:
            branches.append((attn, (idx, x.new_zeros(0, D))))
        return x
    # per kept row, its sample's (shift, 1 + scale, gate): one gather instead of three
    shift, scale, gate = torch.stack([shift_mlp, 1 + scale_mlp, gate_mlp], 1).index_select(0, idx // T).unbind(1)
    rows = x.reshape(B * T, D).index_select(0, idx)  # (M, D)
    out = active_mlp(block.mlp, torch.addcmul(shift, block.norm2(rows), scale), groups, H, mlp_weights, idx // T)
    if branches is not None:  # the pre-gate MLP output of the kept rows only: (rows of (B*T, D), outputs)
        branches.append((attn, (idx, out)))
        out = out * gate
    else:
        out.mul_(gate)
    # x is this block's own tensor; under autocast (bf16) the MLP's rows come back in the autocast dtype
    return x.reshape(B * T, D).index_add_(0, idx, out.to(x.dtype)).reshape(B, T, D)


#################################################################################
#             Adapted layers (dydit.lora: TD-LoRA; static LoRA is merged)         #
#################################################################################

def _base(layer) -> nn.Linear:
    """The nn.Linear whose weights are sliced: the layer, or a TD-LoRA layer's frozen base."""
    return layer.base if isinstance(layer, TDLoRALinear) else layer


def _adapted(layer, x, out, rows=None, cols=None, sample_of=None):
    """out + a TD-LoRA layer's adapter on x, its B sliced to the output `rows` and its A to the input `cols`
    (the active heads / groups); sample_of: x's rows' samples (gathered tokens) for their gates."""
    if not isinstance(layer, TDLoRALinear):
        return out
    gates = None if sample_of is None else layer.gates.index_select(0, sample_of)
    a = layer.lora_a if cols is None else layer.lora_a.index_select(1, cols)
    b = layer.lora_b if rows is None else layer.lora_b.index_select(0, rows)
    return out + layer.adapter(x, a, b, gates)


def _head_indices(attn, heads):
    """(qkv rows, proj columns) of the active heads."""
    hd, D = attn.head_dim, attn.num_heads * attn.head_dim
    cols = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads]).to(_base(attn.qkv).weight.device)
    return torch.cat([cols + s * D for s in range(3)]), cols  # the q, k and v rows of those heads


def sliced_attention_weights(attn, heads, num_heads=None):
    """(qkv weight, qkv bias, proj weight) of the active heads only, as contiguous copies."""
    rows, cols = _head_indices(attn, heads)
    qkv, proj = _base(attn.qkv), _base(attn.proj)
    return qkv.weight.index_select(0, rows), qkv.bias.index_select(0, rows), proj.weight.index_select(1, cols)


def attention_core(h, qkv_w, qkv_b, proj_w, proj_b, head_dim: int):
    """Attention over the heads whose weights are given (sliced or whole), h (B, T, D) -> (B, T, D): tensors
    only, its shapes fixed by the width plan (what FastDyDiT's compile_mode compiles)."""
    B, T, _ = h.shape
    k = qkv_w.shape[0] // (3 * head_dim)
    qkv = F.linear(h, qkv_w, qkv_b).reshape(B, T, 3, k, head_dim).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(B, T, k * head_dim)
    return F.linear(o, proj_w, proj_b)


def active_attention(attn, h, heads, weights=None, core=None):
    """Attention of the active heads only, h (B, T, D) -> (B, T, D); weights from sliced_attention_weights.
    core: a compiled attention_core to run the non-adapted cases with (full width included)."""
    adapted = isinstance(attn.qkv, TDLoRALinear)
    full = len(heads) == attn.num_heads
    if core is not None and not adapted:
        qkv, proj = _base(attn.qkv), _base(attn.proj)
        qkv_w, qkv_b, proj_w = (qkv.weight, qkv.bias, proj.weight) if full else \
            weights if weights is not None else sliced_attention_weights(attn, heads)
        return core(h, qkv_w, qkv_b, proj_w, proj.bias, attn.head_dim)
    if full:
        return attn(h)
    qkv_w, qkv_b, proj_w = weights if weights is not None else sliced_attention_weights(attn, heads)
    if not adapted:
        return attention_core(h, qkv_w, qkv_b, proj_w, _base(attn.proj).bias, attn.head_dim)
    B, T, _ = h.shape
    k, hd = len(heads), attn.head_dim
    rows, cols = _head_indices(attn, heads)
    qkv = _adapted(attn.qkv, h, F.linear(h, qkv_w, qkv_b), rows=rows)
    qkv = qkv.reshape(B, T, 3, k, hd).permute(2, 0, 3, 1, 4)
    o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(B, T, k * hd)  # (B, T, k hd)
    return _adapted(attn.proj, o, F.linear(o, proj_w, _base(attn.proj).bias), cols=cols)


def _group_indices(mlp, groups, num_groups):
    """The hidden channels (fc1 rows, fc2 columns) of the active groups."""
    size = mlp.fc1.out_features // num_groups
    return torch.cat([torch.arange(g * size, (g + 1) * size) for g in groups]).to(_base(mlp.fc1).weight.device)


def sliced_mlp_weights(mlp, groups, num_groups):
    """(fc1 weight, fc1 bias, fc2 weight) of the active channel groups only, as contiguous copies."""
    rows = _group_indices(mlp, groups, num_groups)
    fc1, fc2 = _base(mlp.fc1), _base(mlp.fc2)
    return fc1.weight.index_select(0, rows), fc1.bias.index_select(0, rows), fc2.weight.index_select(1, rows)


def active_mlp(mlp, h, groups, num_groups, weights=None, sample_of=None):
    """MLP over the active channel groups only, h (..., D) -> (..., D): one GEMM per layer on sliced
    weights when given, else strided views of fc1/fc2 per contiguous run of groups (no copy).
    sample_of: for gathered token rows h (M, D), each row's sample (a TD-LoRA adapter's gates)."""
    fc1, fc2 = _base(mlp.fc1), _base(mlp.fc2)
    adapted = isinstance(mlp.fc1, TDLoRALinear)
    if len(groups) == num_groups and not adapted:
        return mlp(h)
    if adapted or weights is not None:
        if len(groups) == num_groups:
            channels, fc1_w, fc1_b, fc2_w = None, fc1.weight, fc1.bias, fc2.weight
        else:
            channels = _group_indices(mlp, groups, num_groups)
            fc1_w, fc1_b, fc2_w = weights if weights is not None else sliced_mlp_weights(mlp, groups, num_groups)
        hidden = mlp.act(_adapted(mlp.fc1, h, F.linear(h, fc1_w, fc1_b), rows=channels, sample_of=sample_of))
        return _adapted(mlp.fc2, hidden, F.linear(hidden, fc2_w, fc2.bias), cols=channels, sample_of=sample_of)
    size = fc1.out_features // num_groups
    out = None
    for a, z in runs(groups):
        cols = slice(a * size, z * size)
        part = F.linear(mlp.act(F.linear(h, fc1.weight[cols], fc1.bias[cols])), fc2.weight[:, cols])
        out = part if out is None else out + part
    return out + fc2.bias


def _record(block, heads, groups, keep) -> BlockMasks:
    """BlockMasks (for FLOPs accounting) of what one block computed."""
    B, H = keep.shape[0], block.attn.num_heads
    head_mask = torch.zeros(B, H, device=keep.device)
    head_mask[:, list(heads)] = 1
    group_mask = torch.zeros(B, H, device=keep.device)
    group_mask[:, list(groups)] = 1
    return BlockMasks(head_mask, group_mask, keep.float())
