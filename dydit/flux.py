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
bias 5.0 at init (every token kept), as the release.

Timestep-wise dynamic width (TDW) is not released (its channel masks raise NotImplementedError there); ours follows
DyDiT and the release's figure (`add_width_routers`): per block a head router and an MLP channel-group router
(dydit.models.WidthRouter: group 0 always on, DyDiT's all-on init) on the timestep embedding plus the guidance
embedding where the model has one, *not* FLUX's pooled-text part of `temb`: widths then depend on the sampling
step alone, so one width plan serves a whole batch and every prompt (what lets the fast path slice weights once
per step). Heads mask Q/K/V of both streams and the output projections; channel groups mask the MLP hidden of
a double block's image and text FFNs (one router for both) and a single block's `proj_mlp`; `proj_out` is sliced
by both. With width routers the attention runs on diffusers' attention modules through `_attention` (their
processor computes all heads); without, through diffusers' processor itself.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from dydit.lora import TDLoRALinear, adapted_layers, unmerged_static_lora
from dydit.models import WidthRouter, binarize

ROUTER_BIAS_INIT = 5.0  # the release's init: sigmoid(5) = 0.993, every token kept at first
WIDTH_BIAS_INIT = 15.0  # DyDiT's init of its width routers (zero weights): every head and group on at first


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
            block.token_selection = FluxTokenRouter(dim).to(next(block.parameters())).train(block.training)
    return model


def add_width_routers(model: nn.Module) -> nn.Module:
    """Gives every block DyDiT's head router (`attn_rate`) and MLP channel-group router (`mlp_rate`), all on at
    init (zero weights, bias WIDTH_BIAS_INIT). Returns the model."""
    heads, dim = model.config.num_attention_heads, model.config.num_attention_heads * model.config.attention_head_dim
    for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
        for name in ("attn_rate", "mlp_rate"):
            if not hasattr(block, name):
                router = WidthRouter(dim, heads).to(next(block.parameters())).train(block.training)  # as its block
                nn.init.zeros_(router.router.weight)
                nn.init.constant_(router.router.bias, WIDTH_BIAS_INIT)
                setattr(block, name, router)
    return model


def has_width_routers(model: nn.Module) -> bool:
    return all(hasattr(b, "attn_rate") for b in [*model.transformer_blocks, *model.single_transformer_blocks])


def width_embedding(model, timestep, guidance=None):
    """What the width routers read: FLUX's timestep embedding (+ its guidance embedding), without the pooled text.
    timestep, guidance: (B,) as FluxTransformer2DModel takes them (already x 1000)."""
    embed = model.time_text_embed
    dtype = next(embed.timestep_embedder.parameters()).dtype  # (wrapped by TD-LoRA's gates: no linear_1)
    emb = embed.timestep_embedder(embed.time_proj(timestep).to(dtype))
    if guidance is not None and hasattr(embed, "guidance_embedder"):
        emb = emb + embed.guidance_embedder(embed.time_proj(guidance).to(dtype))
    return emb


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
    fast: bool  # compute-skipping (gather the kept rows, slice the active heads / groups) or masked (multiply)
    tau: float = 5.0
    width_emb: Optional[torch.Tensor] = None  # (B, D) what width routers read; None: no width routers
    record: Optional[list] = None  # receives each block's FluxMasks (with the masks' gradients), double-stream first
    td_lora: bool = False  # TD-LoRA's gated experts in the blocks (dydit.lora): gathered rows need their gates


@dataclass
class FluxMasks:
    """One block's masks: image tokens (B, N); heads and MLP channel groups (B, H), None without width routers."""
    tokens: torch.Tensor
    heads: Optional[torch.Tensor] = None
    groups: Optional[torch.Tensor] = None


def _widths(block, step: FluxStep, given: Optional[FluxMasks]):
    """(heads, groups) masks (B, H) of a block, or (None, None) without width routers."""
    if given is not None and given.heads is not None:
        return given.heads, given.groups
    if step.width_emb is None:
        return None, None
    training = block.attn_rate.router.training
    return block.attn_rate(step.width_emb, training), block.mlp_rate(step.width_emb, training)


def _tokens(block, img, text, step: FluxStep, given: Optional[FluxMasks]):
    if given is not None:
        return given.tokens.to(img.dtype)
    return block.token_selection(img, step.temb, text, step.tau)


def _active(mask) -> Optional[tuple]:
    """Active indices of a width mask shared by the batch (None: all on); the fast path needs it shared."""
    if mask is None:
        return None
    if not bool((mask == mask[:1]).all()):
        raise ValueError("the fast path needs width masks shared by the batch (they depend on the step only)")
    on = tuple(mask[0].nonzero().flatten().tolist())
    return None if len(on) == mask.shape[1] else on


def _channels(active, size, device) -> torch.Tensor:
    """The channels of the active heads / groups of `size` channels each."""
    return torch.cat([torch.arange(a * size, (a + 1) * size) for a in active]).to(device)


def _rows(mask):
    """Kept rows of the flattened (B*N, D) image tokens: the one host synchronisation of a block's tokens."""
    return mask.flatten().nonzero().squeeze(1)


def _linear(layer, x, rows=None, cols=None):
    """layer(x) computing only output `rows` and reading only input `cols` (None: all); a TD-LoRA layer's experts
    sliced the same way."""
    if rows is None and cols is None:  # the layer itself: an adapter wrapping it (peft's LoRA) runs too
        return layer(x)
    base = layer.base if isinstance(layer, TDLoRALinear) else layer
    weight, bias = base.weight, base.bias
    if rows is not None:
        weight, bias = weight.index_select(0, rows), None if bias is None else bias.index_select(0, rows)
    if cols is not None:
        weight = weight.index_select(1, cols)
    out = F.linear(x, weight, bias)
    if isinstance(layer, TDLoRALinear):
        a = layer.lora_a if cols is None else layer.lora_a.index_select(1, cols)
        b = layer.lora_b if rows is None else layer.lora_b.index_select(0, rows)
        out = out + layer.adapter(x, a, b)
    return out


@contextmanager
def _row_gates(block, sample_of, td_lora=True):
    """TD-LoRA's expert gates (one row per sample) given one row per gathered token while the block computes on
    the fast path's kept rows (sample_of: each row's sample); a no-op without TD-LoRA (td_lora False)."""
    layers = adapted_layers(block) if td_lora else []
    kept = [layer.gates for layer in layers]
    for layer in layers:
        layer.gates = layer.gates.index_select(0, sample_of)
    try:
        yield
    finally:
        for layer, gates in zip(layers, kept):
            layer.gates = gates


def _attention(attn, h, txt_h, rotary, head_mask=None, heads=None):
    """diffusers' FluxAttnProcessor computed on its modules, heads maskable: head_mask (B, H) zeroes the masked
    heads' outputs (masked path); heads: only these are projected and attended (fast path). A single block's
    (txt_h None) output is before projection (B, T, k hd); a double block's is projected: (image, text)."""
    from diffusers.models.embeddings import apply_rotary_emb
    hd = attn.head_dim
    rows = None if heads is None else _channels(heads, hd, h.device)
    q, k, v = (_linear(layer, h, rows).unflatten(-1, (-1, hd)) for layer in (attn.to_q, attn.to_k, attn.to_v))
    q, k = attn.norm_q(q), attn.norm_k(k)  # (B, N, k, hd): RMSNorm per head
    if txt_h is not None:
        tq, tk, tv = (_linear(layer, txt_h, rows).unflatten(-1, (-1, hd))
                      for layer in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
        q, k, v = torch.cat([attn.norm_added_q(tq), q], 1), torch.cat([attn.norm_added_k(tk), k], 1), torch.cat([tv, v], 1)
    if rotary is not None:
        q, k = apply_rotary_emb(q, rotary, sequence_dim=1), apply_rotary_emb(k, rotary, sequence_dim=1)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    if head_mask is not None:
        o = o * head_mask[:, None, :, None].to(o.dtype)
    o = o.flatten(2)  # (B, T, k hd)
    if txt_h is None:
        return o
    L = txt_h.shape[1]
    return _linear(attn.to_out[0], o[:, L:], cols=rows), _linear(attn.to_add_out, o[:, :L], cols=rows)


def _ffn(ff, h, H, group_mask=None, groups=None):
    """diffusers' FeedForward (GELU-tanh projection, dropout, linear) over all, the masked or only the active
    channel groups of its hidden (H groups)."""
    proj, out = ff.net[0].proj, ff.net[2]
    if groups is None:
        hidden = ff.net[0](h)
        return out(ff.net[1](hidden if group_mask is None else hidden * _expand(group_mask, hidden)))
    rows = _channels(groups, proj.out_features // H, h.device)
    return _linear(out, ff.net[1](ff.net[0].gelu(_linear(proj, h, rows))), cols=rows)


def _expand(group_mask, hidden):
    """(B, H) group mask -> (B, 1, hidden) or (B, hidden) to multiply a (B, ..., H * size) hidden."""
    size = hidden.shape[-1] // group_mask.shape[1]
    mask = group_mask.repeat_interleave(size, dim=1).to(hidden.dtype)
    return mask[:, None] if hidden.dim() == 3 else mask


def double_block(block, img, txt, step: FluxStep, given: Optional[FluxMasks] = None):
    """One double-stream block (diffusers' FluxTransformerBlock modules) with DyFLUX's image-FFN skipping and,
    with width routers, DyDiT's heads and channel groups; img (B, N, D), txt (B, L, D) -> (txt, img)."""
    H = block.attn.heads
    head_mask, group_mask = _widths(block, step, given)
    heads, groups = (_active(head_mask), _active(group_mask)) if step.fast else (None, None)
    norm_img, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.norm1(img, emb=step.temb)
    norm_txt, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = block.norm1_context(txt, emb=step.temb)
    if head_mask is None:
        attn, txt_attn = block.attn(hidden_states=norm_img, encoder_hidden_states=norm_txt,
                                    image_rotary_emb=step.rotary)
    else:
        attn, txt_attn = _attention(block.attn, norm_img, norm_txt, step.rotary,
                                    None if step.fast else head_mask, heads)
    img = img + gate_msa.unsqueeze(1) * attn
    txt = txt + c_gate_msa.unsqueeze(1) * txt_attn
    tokens = _tokens(block, img, txt, step, given)  # (B, N), on the post-attention streams
    if step.record is not None:
        step.record.append(FluxMasks(tokens, head_mask, group_mask))  # with their gradients: the FLOPs loss
    h = block.norm2(img) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    masked_groups = None if step.fast else group_mask
    if step.fast:
        B, N, D = img.shape
        rows = _rows(tokens)
        gate = gate_mlp.index_select(0, rows // N)  # (M, D): each kept row's sample's gate
        with _row_gates(block.ff, rows // N, step.td_lora):
            out = _ffn(block.ff, h.reshape(B * N, D).index_select(0, rows), H, groups=groups) * gate
        img = img.reshape(B * N, D).index_add(0, rows, out.to(img.dtype)).reshape(B, N, D)
    else:
        img = img + gate_mlp.unsqueeze(1) * _ffn(block.ff, h, H, masked_groups) * tokens.unsqueeze(-1)
    h_txt = block.norm2_context(txt) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
    txt = txt + c_gate_mlp.unsqueeze(1) * _ffn(block.ff_context, h_txt, H, masked_groups, groups)
    return txt, img


def single_block(block, img, txt, step: FluxStep, given: Optional[FluxMasks] = None, update_text=True):
    """One single-stream block (diffusers' FluxSingleTransformerBlock modules): attention over every token; a
    skipped image token gets no update. img (B, N, D), txt (B, L, D) -> (txt, img). update_text=False: the text
    rows' MLP and projection are not run (the last block's feed nothing; txt comes back as it was)."""
    L, H = txt.shape[1], block.attn.heads
    head_mask, group_mask = _widths(block, step, given)
    heads, groups = (_active(head_mask), _active(group_mask)) if step.fast else (None, None)
    tokens = _tokens(block, img, txt, step, given)  # (B, N), on the residual stream before the block
    if step.record is not None:
        step.record.append(FluxMasks(tokens, head_mask, group_mask))  # with their gradients: the FLOPs loss
    x = torch.cat([txt, img], dim=1)  # (B, L + N, D)
    h, gate = block.norm(x, emb=step.temb)
    if head_mask is None:
        attn = block.attn(hidden_states=h, image_rotary_emb=step.rotary)  # (B, L + N, D): every token attends
    else:
        attn = _attention(block.attn, h, None, step.rotary, None if step.fast else head_mask, heads)
    gate = gate.unsqueeze(1)  # (B, 1, D)
    D = x.shape[-1]
    size = block.proj_mlp.out_features // H
    mlp_rows = None if groups is None else _channels(groups, size, x.device)
    attn_cols = None if heads is None else _channels(heads, block.attn.head_dim, x.device)
    out_cols = None if mlp_rows is None and attn_cols is None else torch.cat([
        torch.arange(D, device=x.device) if attn_cols is None else attn_cols,
        D + (torch.arange(block.proj_mlp.out_features, device=x.device) if mlp_rows is None else mlp_rows)])

    def update(h_part, attn_part):  # (B, T, D) rows of the normed stream and their attention output
        mlp = block.act_mlp(_linear(block.proj_mlp, h_part, mlp_rows))
        if group_mask is not None and not step.fast:
            mlp = mlp * _expand(group_mask, mlp)
        return _linear(block.proj_out, torch.cat([attn_part, mlp], dim=-1), cols=out_cols)

    if update_text:
        txt = txt + gate * update(h[:, :L], attn[:, :L])
    if step.fast:
        B, N, _ = img.shape
        rows = _rows(tokens)
        pick = lambda t: t[:, L:].reshape(B * N, -1).index_select(0, rows)  # noqa: E731  (M, .) kept image rows
        with _row_gates(block, rows // N, step.td_lora):
            out = update(pick(h), pick(attn)) * gate[:, 0].index_select(0, rows // N)
        img = img.reshape(B * N, D).index_add(0, rows, out.to(img.dtype)).reshape(B, N, D)
    else:
        img = img + gate * update(h[:, L:], attn[:, L:]) * tokens.unsqueeze(-1)
    return txt, img


#################################################################################
#                                 The transformer                               #
#################################################################################

def dyflux_forward(model, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids,
                   guidance=None, fast=False, masks: Optional[List[FluxMasks]] = None, record=None, tau=5.0):
    """FluxTransformer2DModel.forward with DyFLUX's token skipping (and DyDiT's widths where the model has width
    routers): hidden_states (B, N, C) packed latents, encoder_hidden_states (B, L, joint_attention_dim),
    pooled_projections (B, P), timestep (B,) in [0, 1], img_ids (N, 3), txt_ids (L, 3) -> (B, N, C).
    masks: one FluxMasks per block (double-stream first) instead of the routers'; record: a list receiving each
    block's FluxMasks. fast: gather the kept rows and slice the active heads and groups (inference)."""
    if fast and model.training:
        raise RuntimeError("the fast path is for inference: call model.eval() first")
    unmerged = unmerged_static_lora(model) if fast else []
    if unmerged:  # the fast path slices layer.weight: an unmerged adapter would be dropped
        raise ValueError(f"the fast path slices plain linear weights, and {len(unmerged)} layer(s) are unmerged LoRA "
                         f"(e.g. {unmerged[0]}): call dydit.lora.merge_static_lora")
    blocks = [*model.transformer_blocks, *model.single_transformer_blocks]
    token_routers(model)
    if masks is not None and len(masks) != len(blocks):
        raise ValueError(f"masks: one FluxMasks per block, {len(blocks)}; got {len(masks)}")
    if guidance is not None and not model.config.guidance_embeds:
        raise ValueError("guidance given, but this FLUX has no guidance embedder (guidance_embeds=False)")
    img_ids, txt_ids = (ids[0] if ids.ndim == 3 else ids for ids in (img_ids, txt_ids))  # diffusers' old 3-D ids
    img = model.x_embedder(hidden_states)
    timestep = timestep.to(img.dtype) * 1000
    guidance = None if guidance is None else guidance.to(img.dtype) * 1000
    width_emb = None
    if has_width_routers(model):  # diffusers' temb is (timestep + guidance) + pooled text: the first part computed once
        width_emb = width_embedding(model, timestep, guidance)
        temb = width_emb + model.time_text_embed.text_embedder(pooled_projections)
    else:
        temb = model.time_text_embed(timestep, pooled_projections) if guidance is None else \
            model.time_text_embed(timestep, guidance, pooled_projections)
    txt = model.context_embedder(encoder_hidden_states)
    step = FluxStep(temb, model.pos_embed(torch.cat((txt_ids, img_ids), dim=0)), fast, tau, width_emb, record,
                    td_lora=hasattr(model, "td_lora_gates"))
    given = masks or [None] * len(blocks)
    for i, block in enumerate(model.transformer_blocks):
        txt, img = double_block(block, img, txt, step, given[i])
    offset, last = len(model.transformer_blocks), len(model.single_transformer_blocks) - 1
    for i, block in enumerate(model.single_transformer_blocks):  # the last one's text rows are read by nothing
        txt, img = single_block(block, img, txt, step, given[offset + i], update_text=i < last)
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
