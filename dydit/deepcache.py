"""DeepCache for DiT and DyDiT: a full forward every `interval` sampling steps, cached blocks in between.

No public code shows how the paper applied DeepCache (a U-Net method) to DiT, so this is our design,
after DeepCache (full network every N steps), FORA (reuse every block's attention / MLP outputs
between full steps) and learning-to-cache (reuse sub-layer outputs *before* the adaLN gate):

- Full step (sampling steps 0, N, 2N, ...): the model runs as usual and keeps, per block, the attention
  and the MLP branch outputs *before* their adaLN gates. For a DyDiT the kept MLP output is the token-
  masked one (a skipped token's is 0), and both carry the heads/channel groups of that step's widths.
- Cached step (every other step): the embedders, each block's two adaLN *gates* and the final layer
  run on the current t and y; each block adds gate_msa(c) * attn + gate_mlp(c) * mlp with the kept
  branches. Why before the gates: the gates depend on t (adaLN), so recomputing them keeps the step's
  timestep conditioning for 2D^2 MACs a block. No attention, MLP, LayerNorm or shift/scale runs.
- Routers: none runs on a cached step; the kept branches carry the last full step's widths and tokens.
- FLOPs: a full step counts as the model's own (DiT static, DyDiT its recorded masks); a cached step
  counts `cached_step_macs` (patch embedding, timestep MLP, 2D^2 gate MACs per block, final layer),
  equal to fvcore's count of `DeepCache.cached` (tests/dydit/test_deepcache.py).
- interval 0 or 1: every step is full and nothing is kept: exactly the model without cache.

A DeepCache lives for one sampling run of one batch (dydit.sampling makes one per call): `prepare`
(called by the sampler with the schedule) restarts its step count and forgets the kept branches.
"""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from dydit.fast import FastDyDiT
from dydit.flops import Arch, outside_blocks_macs
from dydit.models import DiT, DyDiT

# the design in one paragraph, for reports (the module docstring says it in full)
DESIGN = ("DeepCache (our design: no public code applies it to DiT): the whole model runs at sampling steps 0, N, "
          "2N, ...; in between, every block reuses the attention and MLP outputs of the last full step *before* "
          "their adaLN gates, and the gates, embedders and final layer run on the current t and y (a DyDiT's "
          "routers do not run on a cached step; the reused outputs carry the last full step's heads, channel "
          "groups and tokens). FLOPs of a cached step: patch embedding, timestep MLP, 2·D² gate MACs per block "
          "and the final layer.")

# per block, pre-gate: (attention (N, T, D), MLP (N, T, D)); FastDyDiT gives the MLP's of kept tokens only,
# as (row indices of the flattened (N*T, D), outputs (M, D)), so neither step writes a dense copy
Branches = List[Tuple[torch.Tensor, Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]]]


def cached_step_macs(model: DiT) -> int:
    """MACs of one cached step of one sample: embedders, final layer and the two gates of every block."""
    a = Arch.of(model)
    return int(outside_blocks_macs(a) + a.depth * 2 * a.hidden ** 2)


def is_full_step(step: int, interval: int) -> bool:
    """Whether sampling step `step` (0-based) runs the whole model."""
    return interval <= 1 or step % interval == 0


class DeepCache:
    """model_fn(x, t, y) for a sampler: DiT, DyDiT (masked) or FastDyDiT with cached steps in between."""

    def __init__(self, model_fn, interval: int):
        if interval < 0:
            raise ValueError(f"DeepCache interval must be >= 0 (0 or 1: no cache), got {interval}")
        if not isinstance(model_fn, (DiT, FastDyDiT)):
            raise TypeError(f"DeepCache wraps a DiT, a DyDiT or a FastDyDiT, not {type(model_fn).__name__}")
        self.model_fn = model_fn
        self.model: DiT = model_fn.model if isinstance(model_fn, FastDyDiT) else model_fn
        self.interval = interval
        self.step = 0
        self.branches: Optional[Branches] = None
        self.full_steps = self.cached_steps = 0  # how the calls so far were run

    def prepare(self, timesteps):
        """A new run: step 0 is next; FastDyDiT's width plan for the schedule."""
        self.step, self.branches = 0, None
        if hasattr(self.model_fn, "prepare"):
            self.model_fn.prepare(timesteps)
        return self

    def next_is_full(self) -> bool:
        """Whether the next call runs the whole model."""
        return is_full_step(self.step, self.interval) or self.branches is None

    def __call__(self, x, t, y, **kwargs):
        """The next sampling step: full or cached by its index. kwargs (e.g. FastDyDiT's record) go to
        full steps; a cached step leaves a given `record` empty (no block ran)."""
        full = self.next_is_full()
        self.step += 1
        if full:
            self.full_steps += 1
            return self.full(x, t, y, keep=self.interval > 1, **kwargs)
        self.cached_steps += 1
        return self.cached(x, t, y)

    @torch.no_grad()
    def full(self, x, t, y, keep=True, **kwargs):
        """The model's own forward; with keep, its blocks' pre-gate branches are kept for cached steps."""
        if not keep:
            return self.model_fn(x, t, y, **kwargs)
        # the last full step's branches go first: kept alive through this forward, they doubled the memory it
        # holds (2 x depth x rows x tokens x D floats) and left its allocations fresh pages on a CPU
        self.branches = None
        branches: Branches = []
        if isinstance(self.model_fn, FastDyDiT) and not self.model.complete_model:
            out = self.model_fn(x, t, y, branches=branches, **kwargs)
        else:
            with _BranchHooks(self.model) as hooks:
                out = self.model_fn(x, t, y, **kwargs)
            branches = hooks.branches()
        self.branches = branches
        return out

    @torch.no_grad()
    def cached(self, x, t, y):
        """A cached step: (N, C, H, W) from the embedders, every block's gates and the final layer."""
        model = self.model
        if model.training:
            raise RuntimeError("DeepCache is for sampling: call model.eval() first")
        if self.branches is None:
            raise RuntimeError("DeepCache.cached needs a full step first (nothing is kept yet)")
        x, c, _ = model.embed(x, t, y)  # (N, T, D), (N, D)
        if self.branches[0][0].shape != x.shape:
            raise ValueError(f"the kept branches are for a batch of {tuple(self.branches[0][0].shape)}, this "
                             f"step's tokens are {tuple(x.shape)}: one DeepCache serves one batch's run")
        silu_c = F.silu(c)
        N, T, D = x.shape
        for block, (attn, mlp) in zip(model.blocks, self.branches):
            linear = block.adaLN_modulation[-1]  # rows: shift, scale, gate (msa), shift, scale, gate (mlp)
            gate_msa = F.linear(silu_c, linear.weight[2 * D:3 * D], linear.bias[2 * D:3 * D])
            gate_mlp = F.linear(silu_c, linear.weight[5 * D:], linear.bias[5 * D:])
            x = torch.addcmul(x, gate_msa.unsqueeze(1), attn)
            if isinstance(mlp, tuple):  # kept tokens only: add their gated rows
                idx, rows = mlp
                gated = (rows * gate_mlp.index_select(0, idx // T)).to(x.dtype)  # autocast: rows may be bf16
                x = x.reshape(N * T, D).index_add(0, idx, gated).reshape(N, T, D)
            else:
                x = torch.addcmul(x, gate_mlp.unsqueeze(1), mlp)
        return model.unpatchify(model.final_layer(x, c))


class _BranchHooks:
    """Forward hooks that keep each block's attention and MLP outputs (and a DyDiT's token mask)."""

    def __init__(self, model: DiT):
        self.model = model
        self.kept = [{} for _ in model.blocks]
        self.handles = []

    def __enter__(self):
        for kept, block in zip(self.kept, self.model.blocks):
            self.handles.append(block.attn.register_forward_hook(_keep(kept, "attn")))
            self.handles.append(block.mlp.register_forward_hook(_keep(kept, "mlp")))
            if isinstance(self.model, DyDiT):  # not called on the complete-model path
                self.handles.append(block.token_selection.register_forward_hook(_keep(kept, "tokens")))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def branches(self) -> Branches:
        out = []
        for kept in self.kept:
            mlp = kept["mlp"] if "tokens" not in kept else kept["tokens"].unsqueeze(-1) * kept["mlp"]
            out.append((kept["attn"], mlp))
        return out


def _keep(store: dict, name: str):
    def hook(module: nn.Module, inputs, output):
        store[name] = output
    return hook
