"""Latte (Vchitect/Latte, models/latte.py) and DyLatte: DyDiT's routers on the video backbone (DyDiT++).

    model = create_model("Latte-XL/2", num_frames=16, num_classes=101)   # the official UCF-101 layout
    out = model(x, t, y)                  # x (B, F, C, H, W) latents -> (B, F, out_channels, H, W)
    fast = FastDyLatte(dylatte.eval())    # the compute-skipping path; equals dylatte(x, t, y)

Latte is DiT's adaLN-Zero blocks on video latents: one list of blocks, the even ones attending within a frame
(spatial: F sequences of T patch tokens per clip) and the odd ones across frames at one patch position
(temporal: T sequences of F tokens). The timestep (+ class) conditioning is repeated per sequence; a fixed 1-D
sin-cos temporal embedding `temp_embed` is added once, after the first spatial block; the final layer and the
unpatchify run per frame. The state-dict keys are the official ones (DiT's plus `temp_embed`; no `y_embedder`
for the unconditional checkpoints, num_classes=0), so an official checkpoint (`torch.load(path)["ema"]`) loads
through dydit.checkpoints.

DyLatte is ours (DyDiT++'s video code is not public). Decisions:
- Width (TDW): every block, spatial and temporal, gets DyDiT's head and MLP channel-group routers on the timestep
  embedding, so widths depend on t alone and one width plan serves the batch, as in DyDiT.
- Tokens (SDT): a token is one patch of one frame in both block types; the router scores it after the block's
  attention and the MLP skips it. Not a position's whole frame sequence in a temporal block: the MLP is per token
  in both block types, and a digit crossing a position in one frame would keep all F frames of it computing.
"""
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.nn as nn

from dydit.fast import FastDyDiT, TRAIN_MODE_ERROR, fast_block, sliced_attention_weights, sliced_mlp_weights
from dydit.models import BlockMasks, DiT, DiTBlock, DyDiT, DyDiTBlock, get_1d_sincos_pos_embed_from_grid


#################################################################################
#                                     Latte                                     #
#################################################################################

class Latte(DiT):
    """Latte: DiT's blocks alternating spatial (within a frame) and temporal (across frames) attention."""

    def __init__(self, *args, num_frames=16, **kwargs):
        unconditional = kwargs.get("num_classes") == 0  # the FaceForensics / SkyTimelapse / Taichi-HD checkpoints
        super().__init__(*args, **kwargs)
        if len(self.blocks) % 2:
            raise ValueError(f"Latte pairs a spatial and a temporal block: depth must be even, got {len(self.blocks)}")
        self.num_frames = num_frames
        # fixed, stored as a frozen parameter: the official checkpoints hold it
        self.temp_embed = nn.Parameter(torch.zeros(1, num_frames, self.hidden_size), requires_grad=False)
        frames = get_1d_sincos_pos_embed_from_grid(self.hidden_size, np.arange(num_frames, dtype=np.float32))
        self.temp_embed.data.copy_(torch.from_numpy(frames).float().unsqueeze(0))
        if unconditional:  # no label embedder, and no key for one
            self.y_embedder = None

    def embed(self, x, t, y):
        """Patch tokens of every frame (B F, T, D), conditioning c = t_emb (+ y_emb) (B, D) and t_emb (B, D)."""
        x = self.x_embedder(x) + self.pos_embed
        t_emb = self.t_embedder(t)
        c = t_emb if self.y_embedder is None else t_emb + self.y_embedder(y, self.training)
        return x, c, t_emb

    def run(self, x, t, y, block_fn: Callable):
        """The Latte forward with block_fn(i, block, h, c, t_emb) -> h for each block on its sequences (c and t_emb
        repeated per sequence, sample-major): x (B, F, C, H, W) -> (B, F, out_channels, H, W)."""
        B, F = x.shape[:2]
        if F != self.num_frames:
            raise ValueError(f"this Latte takes clips of {self.num_frames} frames, got {F}")
        h, c, t_emb = self.embed(x.flatten(0, 1), t, y)  # (B F, T, D), (B, D), (B, D)
        T = h.shape[1]
        per_frame = c.repeat_interleave(F, 0), t_emb.repeat_interleave(F, 0)  # (B F, D): spatial blocks, final
        per_patch = c.repeat_interleave(T, 0), t_emb.repeat_interleave(T, 0)  # (B T, D): temporal blocks
        for i, block in enumerate(self.blocks):
            if i % 2 == 0:  # spatial: (B F, T, D)
                h = block_fn(i, block, h, *per_frame)
                continue
            h = h.unflatten(0, (B, F)).transpose(1, 2).flatten(0, 1)  # (B F, T, D) -> (B T, F, D)
            if i == 1:
                h = h + self.temp_embed
            h = block_fn(i, block, h, *per_patch)
            h = h.unflatten(0, (B, T)).transpose(1, 2).flatten(0, 1)  # back to (B F, T, D)
        out = self.unpatchify(self.final_layer(h, per_frame[0]))  # (B F, out_channels, H, W)
        return out.unflatten(0, (B, F))

    def forward(self, x, t, y):
        return self.run(x, t, y, lambda i, block, h, c, t_emb: block(h, c))

    def forward_with_cfg(self, x, t, y, cfg_scale, guided_channels=None):
        """CFG on a [cond; uncond] batch of clips; guided_channels None: every latent channel (as Latte)."""
        half = x[: len(x) // 2]
        out = self(torch.cat([half, half]), t, y)
        C = guided_channels or self.in_channels
        eps, rest = out[:, :, :C], out[:, :, C:]
        cond, uncond = eps.chunk(2)
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([torch.cat([guided, guided]), rest], dim=2)


class DyLatte(Latte, DyDiT):
    """Latte with DyDiT's width and token routers in every block (the decisions in the module docstring)."""

    block_class = DyDiTBlock

    def forward(self, x, t, y, masks: Optional[List[BlockMasks]] = None, record=None):
        """As Latte.forward; masks (one BlockMasks per block, rows per sequence) override the routers; record
        collects each block's masks: heads / groups (sequences, H), tokens (sequences, tokens of a sequence)."""
        B = x.shape[0]

        def block_fn(i, block, h, c, t_emb):
            if self.complete_model:  # the plain block: full width, routers not run
                return DiTBlock.forward(block, h, c)
            given = masks[i] if masks is not None else BlockMasks(None, None, None)
            if given.heads is None or given.channels is None:  # widths per clip (one draw each), shared by its sequences
                rows = len(h) // B
                heads, channels = (m.repeat_interleave(rows, 0) for m in block.width_masks(t_emb[:: len(t_emb) // B]))
                given = BlockMasks(heads if given.heads is None else given.heads,
                                   channels if given.channels is None else given.channels, given.tokens)
            return block(h, c, t_emb, given, record)
        return self.run(x, t, y, block_fn)

    def training_flops_ratio(self, record, y=None):
        """Per clip F_dyn / F_static over the blocks' attention and MLP (dydit.latte_flops), (B,)."""
        from dydit.latte_flops import block_flops_ratio
        return block_flops_ratio(self, record)


#################################################################################
#                          The compute-skipping path                            #
#################################################################################

class FastDyLatte(FastDyDiT):
    """DyLatte's inference path: FastDyDiT's sliced heads and channel groups and gathered tokens, block by block,
    on Latte's spatial and temporal sequences (its width plan and slice cache: the same model API)."""

    def forward(self, x, t, y, token_masks=None, record=None):
        """x (B, F, C, H, W), t (B,) one shared timestep, y (B,); token_masks: (sequences, tokens) per block."""
        model = self.model
        if model.training or any(b.training or b.token_selection.training for b in model.blocks):
            raise RuntimeError(TRAIN_MODE_ERROR)
        if model.complete_model:
            return model(x, t, y)
        widths = self._widths_for(t)
        self._drop_stale_slices()

        def block_fn(i, block, h, c, t_emb):
            heads, groups = widths[i]
            return fast_block(block, h, c, widths[i], None if token_masks is None else token_masks[i], record,
                              self._sliced(block.attn, heads, sliced_attention_weights, always=True),
                              self._sliced(block.mlp, groups, sliced_mlp_weights))
        return model.run(x, t, y, block_fn)

    def forward_with_cfg(self, x, t, y, cfg_scale, guided_channels=None):
        return Latte.forward_with_cfg(self, x, t, y, cfg_scale, guided_channels)


class ChannelsFirst(nn.Module):
    """A Latte (or FastDyLatte) as dydit.sampling's model_fn: clips as (B, C, F, H, W), so the samplers and CFG find
    the channels (and the learned sigma) on dim 1, as for images; Latte itself takes (B, F, C, H, W)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def prepare(self, timesteps):
        """FastDyLatte's width plan for exactly these timesteps (nothing for a plain Latte)."""
        if hasattr(self.model, "prepare"):
            self.model.prepare(timesteps)
        return self

    def forward(self, x, t, y):
        return self.model(x.transpose(1, 2), t, y).transpose(1, 2)
