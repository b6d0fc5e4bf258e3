"""FLOPs of FLUX and DyFLUX (dydit/flux.py), analytic: what fvcore counts (MACs, batch 1, dydit.flops' convention),
computed from the config alone, so FLUX-dev (12 B) and FLUX-Lite (8 B) are counted without their weights.
tests/dydit/test_flux.py checks it against fvcore on a small config, with and without skipped tokens.

    from dydit.flux_flops import FluxShape, flux_macs
    flux_macs(FluxShape.of(model.config), image_tokens=4096, text_tokens=256)              # FLUX
    flux_macs(shape, 4096, 256, kept=[0.6] * 46, routers=True)                             # DyFLUX

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


def double_block_macs(s: FluxShape, n: int, text: int, kept: float = 1.0, routers=False) -> int:
    """One double-stream block, one sample: n image and `text` text tokens, a fraction `kept` of the image
    tokens through the image FFN."""
    d, t = s.dim, n + text
    hidden = int(s.dim * s.mlp_ratio)
    ada = 2 * 6 * d * d + _layer_norm(t * d)  # norm1 and norm1_context: linear on temb, LayerNorm on the tokens
    attn = 3 * t * d * d + 2 * t * t * d + t * d * d  # q/k/v of both streams, attention, to_out + to_add_out
    ffn = _layer_norm(t * d) + 2 * hidden * d * (round(kept * n) + text)  # norm2 + norm2_context, ff + ff_context
    return ada + attn + ffn + (_router(s, n, text) if routers else 0)


def _single_mlp_macs(s: FluxShape, rows: int) -> int:
    """proj_mlp and proj_out (over the attention output and the MLP's) of `rows` tokens."""
    hidden = int(s.dim * s.mlp_ratio)
    return rows * (s.dim * hidden + (s.dim + hidden) * s.dim)


def last_text_macs(s: FluxShape, text: int) -> int:
    """What diffusers' last single-stream block spends on text rows that feed nothing (not counted here)."""
    return _single_mlp_macs(s, text)


def single_block_macs(s: FluxShape, n: int, text: int, kept: float = 1.0, routers=False, update_text=True) -> int:
    """One single-stream block, one sample: attention over every token; proj_mlp and proj_out over the text
    (update_text) and the kept image tokens."""
    d, t = s.dim, n + text
    rows = round(kept * n) + (text if update_text else 0)
    macs = 3 * d * d + _layer_norm(t * d) + 3 * t * d * d + 2 * t * t * d + _single_mlp_macs(s, rows)
    return macs + (_router(s, n, text) if routers else 0)


def outside_blocks_macs(s: FluxShape, n: int, text: int) -> int:
    """Embedders (image, text, timestep, guidance, pooled text) and the output layer."""
    embed = n * s.in_channels * s.dim + text * s.joint_attention_dim * s.dim
    cond = (TIME_PROJ * s.dim + s.dim * s.dim) * (2 if s.guidance else 1) + s.pooled_projection_dim * s.dim + s.dim ** 2
    out = 2 * s.dim * s.dim + _layer_norm(n * s.dim) + n * s.dim * s.out_channels
    return embed + cond + out


def flux_macs(s: FluxShape, image_tokens: int, text_tokens: int, kept: Optional[Sequence[float]] = None,
              routers: bool = False) -> int:
    """MACs of one forward of one sample; kept: per block (double-stream first) the fraction of image tokens
    kept (None: every one); routers: count DyFLUX's token routers."""
    blocks = s.double + s.single
    kept = [1.0] * blocks if kept is None else list(kept)
    if len(kept) != blocks:
        raise ValueError(f"kept: one fraction per block ({blocks}), got {len(kept)}")
    n, text = image_tokens, text_tokens
    total = outside_blocks_macs(s, n, text)
    total += sum(double_block_macs(s, n, text, k, routers) for k in kept[:s.double])
    single = kept[s.double:]
    total += sum(single_block_macs(s, n, text, k, routers, update_text=i < len(single) - 1)
                 for i, k in enumerate(single))
    return total
