"""FLOPs of FLUX and DyFLUX (dydit/flux.py), analytic: what fvcore counts (MACs, batch 1, dydit.flops' convention),
computed from the config alone, so FLUX-dev (12 B) and FLUX-Lite (8 B) are counted without their weights.
tests/dydit/test_flux.py checks it against fvcore on a small config, with and without skipped tokens.

    from dydit.flux_flops import BlockPlan, FluxShape, flux_macs
    flux_macs(FluxShape.of(model.config), image_tokens=4096, text_tokens=256)              # FLUX
    flux_macs(shape, 4096, 256, [BlockPlan(kept=0.6)] * 46, token_routers=True)             # DyFLUX

Counted as fvcore does: linear layers, fused attention (Q K^T and A V), LayerNorm (4 MACs per element, 5 with an
affine); not counted: RMSNorm (q/k norms), activations, rotary embeddings, elementwise adds and products. The last
single-stream block's text rows feed nothing: dydit.flux does not run their MLP and projection, and neither FLUX
nor DyFLUX is counted with them (diffusers runs them: its fvcore count is LAST_TEXT_MACS higher).
"""
from dataclasses import dataclass
from typing import Optional, Sequence

TIME_PROJ = 256  # diffusers' Timesteps(num_channels=256) before each timestep / guidance embedder


@dataclass(frozen=True)
class FluxShape:
    """The shapes of a FluxTransformer2DModel config that decide its FLOPs."""
    double: int  # num_layers: double-stream blocks
    single: int  # num_single_layers
    dim: int  # heads x head dim
    in_channels: int
    out_channels: int
    joint_attention_dim: int  # the text encoder's width
    pooled_projection_dim: int
    guidance: bool  # guidance_embeds (FLUX-dev, the Lite models)
    mlp_ratio: float = 4.0

    @classmethod
    def of(cls, config) -> "FluxShape":
        """From a diffusers FluxTransformer2DModel config (model.config, or the dict of its config.json)."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        dim = get("num_attention_heads") * get("attention_head_dim")
        in_channels = get("in_channels")
        out = get("out_channels") or in_channels
        return cls(get("num_layers"), get("num_single_layers"), dim, in_channels,
                   get("patch_size", 1) ** 2 * out, get("joint_attention_dim"), get("pooled_projection_dim"),
                   bool(get("guidance_embeds", False)))


def _layer_norm(elements: int, affine=False) -> int:
    return elements * (5 if affine else 4)


def _router(s: FluxShape, n: int, text: int) -> int:
    """DyFLUX's token router of one block: linear_t on temb, one LayerNorm (affine) over image and text tokens,
    the linear scorer on the image tokens."""
    return s.dim * 4 * s.dim + _layer_norm((n + text) * s.dim, affine=True) + n * s.dim


def _width_routers(s: FluxShape, heads: int) -> int:
    """The head and channel-group routers of one block (dydit.models.WidthRouter: H - 1 outputs each)."""
    return 2 * s.dim * (heads - 1)


@dataclass(frozen=True)
class BlockPlan:
    """What one block computes: the fractions of image tokens kept, of heads and of MLP channel groups on. Floats
    for a count, or (B,) tensors carrying the masks' straight-through gradients (the FLOPs loss)."""
    kept: object = 1.0
    heads: object = 1.0
    groups: object = 1.0


def _double_terms(s: FluxShape, n: int, text: int, plan: BlockPlan):
    """(attention, MLP, the rest) MACs of one double-stream block: the plan's heads in both streams' attention,
    its channel groups in both FFNs, its kept image tokens through the image FFN."""
    d, t = s.dim, n + text
    width, hidden = plan.heads * d, plan.groups * s.dim * s.mlp_ratio  # active head / MLP channels
    attn = 3 * t * d * width + 2 * t * t * width + t * width * d  # q/k/v of both streams, attention, outputs
    mlp = 2 * hidden * d * (plan.kept * n + text)  # ff (kept image rows) + ff_context
    rest = 2 * 6 * d * d + 2 * _layer_norm(t * d)  # norm1 / norm1_context (linear on temb, LayerNorm), norm2s
    return attn, mlp, rest


def _single_terms(s: FluxShape, n: int, text: int, plan: BlockPlan, update_text=True):
    """(attention, MLP, the rest) MACs of one single-stream block: attention over every token (the plan's heads);
    proj_mlp and proj_out over the text (update_text) and the kept image tokens."""
    d, t = s.dim, n + text
    width = plan.heads * d
    attn = 3 * t * d * width + 2 * t * t * width
    mlp = _single_mlp_macs(s, plan.kept * n + (text if update_text else 0), plan)
    return attn, mlp, 3 * d * d + _layer_norm(t * d)


def _single_mlp_macs(s: FluxShape, rows, plan: BlockPlan = BlockPlan()):
    """proj_mlp and proj_out (over the attention output and the MLP's) of `rows` tokens."""
    width, hidden = plan.heads * s.dim, plan.groups * s.dim * s.mlp_ratio
    return rows * (s.dim * hidden + (width + hidden) * s.dim)


def last_text_macs(s: FluxShape, text: int) -> int:
    """What diffusers' last single-stream block spends on text rows that feed nothing (not counted here)."""
    return int(_single_mlp_macs(s, text))


def block_terms(s: FluxShape, n: int, text: int, plans: Sequence[BlockPlan]):
    """(attention, MLP, rest) of every block, double-stream first (the last single block's text rows not run)."""
    if len(plans) != s.double + s.single:
        raise ValueError(f"plans: one BlockPlan per block ({s.double + s.single}), got {len(plans)}")
    single = plans[s.double:]
    return ([_double_terms(s, n, text, p) for p in plans[:s.double]]
            + [_single_terms(s, n, text, p, update_text=i < len(single) - 1) for i, p in enumerate(single)])


def flops_ratio(s: FluxShape, n: int, text: int, plans: Sequence[BlockPlan]):
    """DyDiT's training ratio F_dyn / F_static over the blocks' attention and MLP (as dydit.flops.block_flops_ratio):
    per sample where the plans hold (B,) tensors, differentiable through them."""
    dynamic = sum(a + m for a, m, _ in block_terms(s, n, text, plans))
    static = sum(a + m for a, m, _ in block_terms(s, n, text, [BlockPlan()] * len(plans)))
    return dynamic / static


def outside_blocks_macs(s: FluxShape, n: int, text: int) -> int:
    """Embedders (image, text, timestep, guidance, pooled text) and the output layer."""
    embed = n * s.in_channels * s.dim + text * s.joint_attention_dim * s.dim
    cond = (TIME_PROJ * s.dim + s.dim * s.dim) * (2 if s.guidance else 1) + s.pooled_projection_dim * s.dim + s.dim ** 2
    out = 2 * s.dim * s.dim + _layer_norm(n * s.dim) + n * s.dim * s.out_channels
    return embed + cond + out


def flux_macs(s: FluxShape, image_tokens: int, text_tokens: int, plans: Optional[Sequence[BlockPlan]] = None,
              token_routers: bool = False, width_routers: int = 0) -> int:
    """MACs of one forward of one sample; plans: one BlockPlan per block (double-stream first; None: everything
    on), of floats (an int back) or of (B,) tensors (a (B,) tensor back, per sample); token_routers: count
    DyFLUX's token routers; width_routers: the head count H of DyDiT's width routers to count (0: none)."""
    blocks = s.double + s.single
    plans = [BlockPlan()] * blocks if plans is None else list(plans)
    n, text = image_tokens, text_tokens
    routers = (_router(s, n, text) if token_routers else 0) + (_width_routers(s, width_routers) if width_routers else 0)
    total = outside_blocks_macs(s, n, text) + blocks * routers
    total += sum(sum(terms) for terms in block_terms(s, n, text, plans))
    if hasattr(total, "shape"):  # per-sample plans (a sampling run's recorded masks)
        return total
    return int(round(total))  # fractions of whole heads, groups and tokens: integral up to float rounding
