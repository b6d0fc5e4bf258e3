"""DyLatte's s/image ratio on this machine (suites/latte.toml): Latte's forward against DyLatte's compute-skipping
path (dydit.latte.FastDyLatte) on the same random weights, routers calibrated, at a size this machine holds.

No DyLatte is trained at full size (DyDiT++'s video weights are not public), so the routers are calibrated as
bench.timing.calibration does for DyDiT: random weights standardised (widths vary with t, tokens across the
clip's patches), then one bias offset shared by every router, bisected so DyLatte's MACs over the timed calls are
`flops_fraction` of Latte's. What is skipped is realistic in amount, not in pattern; the outputs are not videos.

    python -m bench run suites/latte.toml          # the ratio cells run this at SCALED (below)

The scaling (SCALED; stated in the report): Latte-XL/2's width and its 16 frames of 32 x 32 latents (256 x 256
video), one spatial and one temporal block (28 in Latte-XL), a CFG batch of 2 (one clip), model calls at three
DDPM timesteps. Excluded: the scheduler and the VAE decode (the same on both paths).
"""
from dataclasses import dataclass

import torch

from bench.timing.calibration import bisect_offset, standardize_routers
from bench.timing.calls import interleaved_call_medians


@dataclass(frozen=True)
class LatteTimingSetup:
    """What the ratio is timed at (SCALED: the suite's)."""
    depth: int = 2  # one spatial and one temporal block
    frames: int = 16
    latent: int = 32  # latent side: 256 x 256 video through the SD VAE
    batch: int = 2  # [cond; uncond] of one clip
    timesteps: tuple = (900.0, 500.0, 100.0)
    repeats: int = 5  # interleaved rounds: the ratio's median and range over them
    overrides: tuple = ()  # (key, value) pairs of the model's constructor changed (the tests' small width)

    def describe(self) -> str:
        width = "the model's width" if not self.overrides else ", ".join(f"{k}={v}" for k, v in self.overrides)
        return (f"{self.depth} blocks (spatial and temporal) at {width}, {self.frames} frames of {self.latent}² "
                f"latents, batch {self.batch} (CFG), calls at t = {', '.join(f'{t:g}' for t in self.timesteps)}, "
                f"{self.repeats} interleaved rounds")


SCALED = LatteTimingSetup()


@torch.no_grad()
def run_fraction(fast, x, t_of, y) -> float:
    """DyLatte's MACs over the calls / Latte's (routers and all non-block work counted)."""
    from dydit.latte_flops import latte_macs
    model = fast.model
    total = 0.0
    for t in t_of:
        record = []
        fast(x, t, y, record=record)
        total += float(latte_macs(model, record).mean())
    return total / (len(t_of) * latte_macs(model, static=True))


@torch.no_grad()
def calibrate(fast, x, t_of, y, fraction) -> float:
    """The routers' shared offset bisected until the calls' FLOPs fraction is within 0.005 of `fraction`."""
    return bisect_offset(fast.model, lambda: run_fraction(fast, x, t_of, y), fraction, iters=14, tol=0.005)


@torch.no_grad()
def time_ratio(dynamic_entry, setup: LatteTimingSetup, flops_fraction: float, seed: int = 0, device="cpu") -> dict:
    """Latte vs DyLatte's fast path on the same weights (routers calibrated to flops_fraction), timed call by call,
    interleaved: s/call of both, the ratio per round, the FLOPs fraction reached, realized = fraction / ratio."""
    from dydit.latte import FastDyLatte
    from dydit.models import randomize_
    from dydit.registry import entry
    if len(setup.timesteps) < 2:  # the width routers are standardised over the timesteps
        raise ValueError(f"calibrating widths needs two timesteps or more, got {setup.timesteps}")
    torch.manual_seed(seed)
    kwargs = dict(depth=setup.depth, num_frames=setup.frames, input_size=setup.latent, **dict(setup.overrides))
    dylatte = randomize_(dynamic_entry.build(**kwargs), seed=seed).to(device).eval()
    latte = entry(dynamic_entry.static).build(**kwargs).to(device).eval()
    latte.load_state_dict(dylatte.state_dict(), strict=False)  # the same weights, without the routers
    g = torch.Generator().manual_seed(seed)
    clip = torch.randn(1, setup.frames, dylatte.in_channels, setup.latent, setup.latent, generator=g)
    x = clip.repeat(setup.batch, 1, 1, 1, 1).to(device)
    num_classes = dylatte.y_embedder.embedding_table.num_embeddings - 1
    y = torch.tensor([i % num_classes if i < setup.batch // 2 else num_classes for i in range(setup.batch)],
                     device=device)  # conditional rows, then the null class
    standardize_routers(dylatte, list(setup.timesteps), x, y, seed)
    fast = FastDyLatte(dylatte, cache_bytes=0)  # slices made per call, as FastDyDiT past its budget
    t_of = [torch.full((setup.batch,), t, device=device) for t in setup.timesteps]
    reached = calibrate(fast, x, t_of, y, flops_fraction)
    calls = {"latte": [lambda t=t: latte(x, t, y) for t in t_of], "fast": [lambda t=t: fast(x, t, y) for t in t_of]}
    medians = interleaved_call_medians(calls, repeats=setup.repeats, warmup=1, device=str(device))
    rounds = [f / s for f, s in zip(medians["fast"][1], medians["latte"][1])]
    ratio = medians["fast"][0] / medians["latte"][0]
    return {"setup": setup.describe(), "latte_s_per_call": medians["latte"][0] / len(t_of),
            "fast_s_per_call": medians["fast"][0] / len(t_of), "ratio": ratio, "ratio_rounds": rounds,
            "flops_ratio": reached, "flops_target": flops_fraction, "realized": reached / ratio,
            "realized_rounds": [reached / r for r in rounds]}
