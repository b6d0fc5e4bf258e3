"""DyFLUX's s/image ratio on this machine (suites/dyflux.toml): diffusers' FLUX forward against DyFLUX's
compute-skipping path (dydit.flux) with calibrated token routers, at a depth and resolution this machine holds.

The release's table: DyFLUX-Lite 11.84 s and FLUX-Lite 15.23 s per image (0.777) at 21.2 and 30.0 TFLOPs (0.707).
Its 8 B checkpoint is not here, so the routers are calibrated (as bench.timing.calibration does for DyDiT): random
weights, standardised so each block's logits are ~N(0, 1) over the image tokens of one forward with every token
kept, then one bias offset shared by every block, bisected so DyFLUX's MACs are `flops_fraction` of FLUX's. What
is skipped is realistic in amount (not in pattern: the logits are random); the outputs are not images.

    python -m bench run suites/dyflux.toml        # the ratio cell runs this at SCALED (below)

The scaling (SCALED; stated in the report): FLUX-Lite's width and block types, 1 double- and 5 single-stream
blocks (8 : 38 in the release), 512 x 512 (1,024 packed image tokens), 256 text tokens (the release samples with
max_sequence_length 256), batch 1 (FLUX-Lite is guidance-distilled: no CFG batch), model calls at 3 flow times.
Excluded: the text encoders, the scheduler and the VAE decode (the same work on both paths: on the release's GPU
they pull the whole-image ratio toward 1).
"""
from dataclasses import dataclass

import numpy as np
import torch

from bench.timing.calls import interleaved_call_medians


@dataclass(frozen=True)
class FluxTimingSetup:
    """What the ratio is timed at (SCALED: the suite's)."""
    double: int = 1  # double-stream blocks
    single: int = 5  # single-stream blocks
    resolution: int = 512  # pixels: (resolution / 16)^2 packed image tokens
    text_tokens: int = 256
    batch: int = 1
    times: tuple = (0.9, 0.5, 0.1)  # flow times of the timed calls (1: noise)
    repeats: int = 5  # interleaved rounds: the ratio's median and range over them
    overrides: tuple = ()  # (key, value) pairs of the FLUX config changed besides the depth (the tests' small width)

    @property
    def image_tokens(self) -> int:
        return (self.resolution // 16) ** 2

    def describe(self) -> str:
        width = "full width" if not self.overrides else ", ".join(f"{k}={v}" for k, v in self.overrides)
        return (f"{self.double} double + {self.single} single-stream blocks at {width}, {self.resolution}² "
                f"({self.image_tokens} image tokens), {self.text_tokens} text tokens, batch {self.batch}, calls at flow "
                f"times {', '.join(f'{t:g}' for t in self.times)}, {self.repeats} interleaved rounds")


SCALED = FluxTimingSetup()


def _inputs(model, setup: FluxTimingSetup, seed: int, device):
    """Random latents, text states and ids of the setup, as FluxTransformer2DModel takes them."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    side = setup.resolution // 16
    n, b = setup.image_tokens, setup.batch
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(n, 3).float()
    return dict(hidden_states=torch.randn(b, n, c.in_channels, generator=g).to(device),
                encoder_hidden_states=torch.randn(b, setup.text_tokens, c.joint_attention_dim, generator=g).to(device),
                pooled_projections=torch.randn(b, c.pooled_projection_dim, generator=g).to(device),
                img_ids=img_ids.to(device), txt_ids=torch.zeros(setup.text_tokens, 3, device=device),
                guidance=torch.full((b,), 3.5, device=device) if c.guidance_embeds else None)


def _flux_call(model, inputs, t):
    """diffusers' own forward (FLUX): timestep and guidance in its units (flow time; guidance x 1000 inside)."""
    kw = dict(inputs)
    guidance = kw.pop("guidance")
    return model(**kw, timestep=t, guidance=guidance, return_dict=False)[0]


def _dyflux_call(model, inputs, t, record=None):
    from dydit.flux import dyflux_forward
    return dyflux_forward(model, inputs["hidden_states"], inputs["encoder_hidden_states"],
                          inputs["pooled_projections"], t, inputs["img_ids"], inputs["txt_ids"],
                          guidance=inputs["guidance"], fast=True, record=record)


def macs_fraction(model, setup: FluxTimingSetup, record) -> float:
    """DyFLUX's MACs (its token routers counted) / FLUX's, of one recorded call (mean over the batch)."""
    from dydit.flux_flops import FluxShape, flux_macs
    from dydit.flux_train import plans_from_record
    shape = FluxShape.of(model.config)
    macs = flux_macs(shape, setup.image_tokens, setup.text_tokens, plans_from_record(record), token_routers=True)
    return float(torch.as_tensor(macs, dtype=torch.float64).mean()) / flux_macs(shape, setup.image_tokens,
                                                                                 setup.text_tokens)


@torch.no_grad()
def calibrate_token_routers(model, setup: FluxTimingSetup, inputs, flops_fraction: float, seed: int = 0) -> float:
    """Random standardised token routers with one shared bias offset so that, on the logits of a forward with
    every token kept at the middle timed time, DyFLUX's MACs are flops_fraction of FLUX's; -> that offset."""
    from dydit.flux import token_routers
    from dydit.flux_flops import BlockPlan, FluxShape, flux_macs
    g = torch.Generator().manual_seed(seed + 1)
    routers = token_routers(model)
    for r in routers:
        r.router.weight.copy_(torch.randn(r.router.weight.shape, generator=g))
        r.router.bias.fill_(1e4)  # every token kept while the logits are captured
    captured = []
    hooks = [r.router.register_forward_hook(lambda m, i, o: captured.append(o.float() - 1e4)) for r in routers]
    try:
        t = torch.full((setup.batch,), setup.times[len(setup.times) // 2], device=inputs["hidden_states"].device)
        _dyflux_call(model, inputs, t)
    finally:
        for h in hooks:
            h.remove()
    standard = []
    for r, logits in zip(routers, captured):
        std, mean = logits.std().clamp_min(1e-6), logits.mean()
        r.router.weight.div_(std)
        r.router.bias.fill_(float(-mean / std))
        standard.append(((logits - mean) / std).flatten())
    shape = FluxShape.of(model.config)
    static = flux_macs(shape, setup.image_tokens, setup.text_tokens)

    def fraction(offset):
        plans = [BlockPlan(kept=float((z + offset > 0).float().mean())) for z in standard]
        return flux_macs(shape, setup.image_tokens, setup.text_tokens, plans, token_routers=True) / static
    lo, hi = -8.0, 8.0  # every token skipped .. every token kept
    if not fraction(lo) <= flops_fraction <= fraction(hi):
        raise ValueError(f"FLOPs fraction {flops_fraction:g} is out of reach at this setup: token skipping spans "
                         f"{fraction(lo):.3f}-{fraction(hi):.3f} of FLUX's MACs")
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fraction(mid) < flops_fraction else (lo, mid)
    offset = (lo + hi) / 2
    for r in routers:
        r.router.bias.add_(offset)
    return offset


@torch.no_grad()
def time_ratio(dynamic_entry, setup: FluxTimingSetup, flops_fraction: float, seed: int = 0, device="cpu") -> dict:
    """FLUX (diffusers' forward) vs DyFLUX's fast path on one model (the same weights; token routers added and
    calibrated to flops_fraction), timed call by call, interleaved: s/call of both, their ratio per round, the
    MACs fraction the timed calls reached, realized = that fraction / the time ratio."""
    from dydit.flux import add_token_routers
    from dydit.registry import entry
    torch.manual_seed(seed)
    model = entry(dynamic_entry.static).build(num_layers=setup.double, num_single_layers=setup.single, **dict(setup.overrides))
    model = add_token_routers(model).to(device).eval()
    inputs = _inputs(model, setup, seed, device)
    offset = calibrate_token_routers(model, setup, inputs, flops_fraction, seed)
    t_of = [torch.full((setup.batch,), t, device=device) for t in setup.times]
    calls = {"flux": [lambda t=t: _flux_call(model, inputs, t) for t in t_of],
             "fast": [lambda t=t: _dyflux_call(model, inputs, t) for t in t_of]}
    medians = interleaved_call_medians(calls, repeats=setup.repeats, warmup=1, device=str(device))
    reached = []
    for t in t_of:
        record = []
        _dyflux_call(model, inputs, t, record=record)
        reached.append(macs_fraction(model, setup, record))
    flux_s, fast_s = medians["flux"][0], medians["fast"][0]
    rounds = [f / s for f, s in zip(medians["fast"][1], medians["flux"][1])]
    flops = float(np.mean(reached))
    ratio = fast_s / flux_s
    return {"setup": setup.describe(), "flux_s_per_call": flux_s / len(t_of), "fast_s_per_call": fast_s / len(t_of),
            "ratio": ratio, "ratio_rounds": rounds, "flops_ratio": flops, "flops_target": flops_fraction,
            "realized": flops / ratio, "realized_rounds": [flops / r for r in rounds], "router_offset": offset}
