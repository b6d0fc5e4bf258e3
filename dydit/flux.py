"""DyFLUX: DyDiT's spatial-wise dynamic tokens (SDT) on diffusers' FLUX transformer (DyDiT++, text-to-image).

    from diffusers import FluxTransformer2DModel
    from dydit.flux import add_token_routers, dyflux_forward
    model = add_token_routers(FluxTransformer2DModel(**config))        # diffusers' model, a router per block
    out = dyflux_forward(model, img, txt, pooled, t, img_ids, txt_ids)  # masked reference (training, eval)
    out = dyflux_forward(model, ..., fast=True)                         # skips what the masks skip (inference)

Built on diffusers' modules (their norms, attention, feed-forwards; nothing copied): each block of
`FluxTransformer2DModel` gets a `token_selection` router, so its state dict has the public DyFLUX release's
key names (alibaba-damo-academy/DyDiT, `DyFLUX/`: diffusers' FLUX keys plus `token_selection.{linear_t, norm,
router}`) and a release checkpoint loads as it is (`load_release_checkpoint`). Which computation a mask skips
follows the release:
- double-stream block: the router reads the image and text streams after the attention residual; only the
  image FFN of a skipped token is skipped (attention and the text FFN always run);
- single-stream block: the router reads the residual stream before the block; Q/K/V and attention run for
  every token, and a skipped image token gets no update at all (its `proj_out` output, attention part
  included, is dropped: the release scatters kept rows into zeros). Text tokens always run.
Masks: hard Gumbel-sigmoid (straight-through, tau 5) in training, sigmoid > 0.5 (logit > 0) in eval; router
bias 5.0 at init (every token kept), as the release. Width routers (TDW) are not released; not here yet.
"""
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn

from dydit.models import binarize

ROUTER_BIAS_INIT = 5.0  # the release's init: sigmoid(5) = 0.993, every token kept at first


#################################################################################
#                                 Token router                                  #
#################################################################################

class FluxTokenRouter(nn.Module):
    """DyFLUX's token selection: image tokens modulated by the timestep embedding, plus the mean of the equally
    modulated text tokens, scored by one linear layer -> one logit per image token."""

    def __init__(self, dim: int, conditioning_dim: Optional[int] = None, eps: float = 1e-5):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear_t = nn.Linear(conditioning_dim or dim, 4 * dim)  # shift, scale of image; shift, scale of text
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.router = nn.Linear(dim, 1)
        self.noise = 1.0  # the training masks' Gumbel noise scale (as dydit.models.TokenRouter)
        nn.init.xavier_uniform_(self.router.weight)
        nn.init.constant_(self.router.bias, ROUTER_BIAS_INIT)

    def logits(self, img, temb, text):
        """img (B, N, D), temb (B, D), text (B, L, D) -> (B, N)."""
        shift, scale, shift_text, scale_text = self.linear_t(self.silu(temb)).chunk(4, dim=1)
        img = self.norm(img) * (1 + scale[:, None]) + shift[:, None]
        text = (self.norm(text) * (1 + scale_text[:, None]) + shift_text[:, None]).mean(dim=1, keepdim=True)
        return self.router(img + text).squeeze(-1)

    def forward(self, img, temb, text, tau=5.0):
        """0/1 masks (B, N): straight-through Gumbel-sigmoid in training, logit > 0 in eval."""
        return binarize(self.logits(img, temb, text), self.training, tau, self.noise)


def add_token_routers(model: nn.Module) -> nn.Module:
    """Gives every double- and single-stream block of a diffusers FluxTransformer2DModel a `token_selection`
    router (DyFLUX's layout). Returns the model."""
    dim = model.config.num_attention_heads * model.config.attention_head_dim
    for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
        if not hasattr(block, "token_selection"):
            block.token_selection = FluxTokenRouter(dim).to(next(block.parameters()))
    return model


def token_routers(model: nn.Module) -> List[FluxTokenRouter]:
    """Every block's router, double-stream blocks first; ValueError naming the fix where there are none."""
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    missing = [i for i, b in enumerate(blocks) if not isinstance(getattr(b, "token_selection", None), FluxTokenRouter)]
    if missing:
        raise ValueError(f"{len(missing)} FLUX block(s) have no token router: call dydit.flux.add_token_routers(model)")
    return [b.token_selection for b in blocks]


#################################################################################
#                                     Blocks                                    #
#################################################################################

@dataclass
class FluxStep:
    """What every block of one forward shares."""
    temb: torch.Tensor  # (B, D)
    rotary: tuple  # diffusers' image_rotary_emb (cos, sin) of the text + image positions
    fast: bool  # compute-skipping (gather the kept rows) or masked (multiply by the mask)
    tau: float = 5.0
    record: Optional[list] = None  # receives each block's token mask (B, N), double-stream blocks first


def _mask(block, img, temb, text, step: FluxStep, given):
    mask = block.token_selection(img, temb, text, step.tau) if given is None else given.to(img.dtype)
    if step.record is not None:
        step.record.append(mask.detach())
    return mask


def _rows(mask):
    """Kept rows of the flattened (B*N, D) image tokens: the one host synchronisation of a block."""
    return mask.flatten().nonzero().squeeze(1)


def double_block(block, img, txt, step: FluxStep, given_mask=None):
    """One double-stream block (diffusers' FluxTransformerBlock modules) with DyFLUX's image-FFN skipping;
    img (B, N, D), txt (B, L, D) -> (txt, img)."""
    norm_img, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1(img, emb=step.temb)
    norm_txt, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = block.norm1_context(txt, emb=step.temb)
    attn, txt_attn = block.attn(hidden_states=norm_img, encoder_hidden_states=norm_txt, image_rotary_emb=step.rotary)
    img = img + gate_msa.unsqueeze(1) * attn
    txt = txt + c_gate_msa.unsqueeze(1) * txt_attn
    mask = _mask(block, img, step.temb, txt, step, given_mask)  # (B, N), on the post-attention streams
    h = block.norm2(img) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    if step.fast:
        B, N, D = img.shape
        rows = _rows(mask)
        gate = gate_mlp.index_select(0, rows // N)  # (M, D): each kept row's sample's gate
        out = block.ff(h.reshape(B * N, D).index_select(0, rows)) * gate
        img = img.reshape(B * N, D).index_add(0, rows, out.to(img.dtype)).reshape(B, N, D)
    else:
        img = img + gate_mlp.unsqueeze(1) * block.ff(h) * mask.unsqueeze(-1)
    h_txt = block.norm2_context(txt) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
    txt = txt + c_gate_mlp.unsqueeze(1) * block.ff_context(h_txt)
    return txt, img


def single_block(block, img, txt, step: FluxStep, given_mask=None, update_text=True):
    """One single-stream block (diffusers' FluxSingleTransformerBlock modules): attention over every token; a
    skipped image token gets no update. img (B, N, D), txt (B, L, D) -> (txt, img). update_text=False: the text
    rows' MLP and projection are not run (the last block's feed nothing; txt comes back as it was)."""
    L = txt.shape[1]
    mask = _mask(block, img, step.temb, txt, step, given_mask)  # (B, N), on the residual stream before the block
    x = torch.cat([txt, img], dim=1)  # (B, L + N, D)
    h, gate = block.norm(x, emb=step.temb)
    attn = block.attn(hidden_states=h, image_rotary_emb=step.rotary)  # (B, L + N, D): every token attends
    gate = gate.unsqueeze(1)  # (B, 1, D)

    def update(h_part, attn_part):
        return block.proj_out(torch.cat([attn_part, block.act_mlp(block.proj_mlp(h_part))], dim=-1))

    if update_text:
        txt = txt + gate * update(h[:, :L], attn[:, :L])
    if step.fast:
        B, N, D = img.shape
        rows = _rows(mask)
        pick = lambda t: t[:, L:].reshape(B * N, -1).index_select(0, rows)  # noqa: E731  (M, D) kept image rows
        out = update(pick(h), pick(attn)) * gate[:, 0].index_select(0, rows // N)
        img = img.reshape(B * N, D).index_add(0, rows, out.to(img.dtype)).reshape(B, N, D)
    else:
        img = img + gate * update(h[:, L:], attn[:, L:]) * mask.unsqueeze(-1)
    return txt, img


#################################################################################
#                                 The transformer                               #
#################################################################################

def dyflux_forward(model, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids,
                   guidance=None, fast=False, token_masks=None, record=None, tau=5.0):
    """FluxTransformer2DModel.forward with DyFLUX's token skipping: hidden_states (B, N, C) packed latents,
    encoder_hidden_states (B, L, joint_attention_dim), pooled_projections (B, P), timestep (B,) in [0, 1],
    img_ids (N, 3), txt_ids (L, 3) -> (B, N, C). token_masks: one (B, N) mask per block (double-stream first)
    instead of the routers'; record: a list receiving each block's mask. fast: gather the kept rows (inference)."""
    if fast and model.training:
        raise RuntimeError("the fast path is for inference: call model.eval() first")
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    token_routers(model)
    if token_masks is not None and len(token_masks) != len(blocks):
        raise ValueError(f"token_masks: one (B, N) mask per block, {len(blocks)}; got {len(token_masks)}")
    img = model.x_embedder(hidden_states)
    timestep = timestep.to(img.dtype) * 1000
    temb = model.time_text_embed(timestep, pooled_projections) if guidance is None else \
        model.time_text_embed(timestep, guidance.to(img.dtype) * 1000, pooled_projections)
    txt = model.context_embedder(encoder_hidden_states)
    step = FluxStep(temb, model.pos_embed(torch.cat((txt_ids, img_ids), dim=0)), fast, tau, record)
    masks = token_masks or [None] * len(blocks)
    for i, block in enumerate(model.transformer_blocks):
        txt, img = double_block(block, img, txt, step, masks[i])
    offset, last = len(model.transformer_blocks), len(model.single_transformer_blocks) - 1
    for i, block in enumerate(model.single_transformer_blocks):  # the last one's text rows are read by nothing
        txt, img = single_block(block, img, txt, step, masks[offset + i], update_text=i < last)
    return model.proj_out(model.norm_out(img, temb))


def load_release_checkpoint(model: nn.Module, state: dict) -> nn.Module:
    """Loads the public DyFLUX release's weights (`torch.load(path, weights_only=True)["module"]`: diffusers'
    FLUX key names plus `token_selection.*` per block) into a FLUX model with token routers; every key must
    match both ways (the release loads strict=False; a silent mismatch would run random routers)."""
    add_token_routers(model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"not a DyFLUX checkpoint for this config: {len(missing)} missing key(s) (e.g. "
                         f"{missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    return model
