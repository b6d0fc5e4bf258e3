"""Router calibration for timing without trained routers: random router weights standardised (widths vary
with t, tokens vary in space), then one bias offset bisected so the dynamic FLOPs reach a target fraction
of DiT's. What a calibrated DyDiT skips is realistic in amount and pattern; its outputs are not images.
"""
import numpy as np
import torch

from dydit.fast import FastDyDiT
from dydit.flops import analytic_macs, dynamic_macs
from dydit.models import DyDiT, randomize_
from dydit.registry import create_model


def schedule(steps: int):
    """K timesteps spread over [0, 1000), from noisy to clean, as a sampler visits them."""
    return np.linspace(999, 0, steps).round().tolist()


@torch.no_grad()
def standardize_routers(model: DyDiT, timesteps, x, y, seed=0):
    """Random router weights scaled so each router logit is ~N(0, 1): over t (width), over tokens."""
    g = torch.Generator().manual_seed(seed + 1)
    device = model.pos_embed.device
    t_emb = model.t_embedder(torch.as_tensor(timesteps, dtype=torch.float32, device=device))  # (S, D)
    for block in model.blocks:
        for router in (block.attn_rate.router, block.mlp_rate.router):
            router.weight.copy_(torch.randn(router.weight.shape, generator=g).to(device))
            logits = t_emb @ router.weight.T  # (S, H-1)
            std, mean = logits.std(0).clamp_min(1e-6), logits.mean(0)
            router.weight.div_(std[:, None])
            router.bias.copy_(-mean / std)
        head = block.token_selection.mlp_head
        for layer in (head[0], head[2]):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g).to(device) / layer.in_features ** 0.5)
            layer.bias.zero_()
    # token logits: standardise over the tokens of one full-width forward at a mid timestep
    captured = []
    hooks = [b.token_selection.mlp_head.register_forward_hook(lambda m, i, o: captured.append(o)) for b in model.blocks]
    saved = [(b.token_selection.mlp_head[2].bias.clone()) for b in model.blocks]
    for b in model.blocks:
        b.token_selection.mlp_head[2].bias.fill_(1e4)  # everything on while capturing
    t_mid = torch.full((x.shape[0],), float(timesteps[len(timesteps) // 2]), device=device)
    model(x, t_mid, y)
    for h in hooks:
        h.remove()
    for block, logits, bias in zip(model.blocks, captured, saved):
        last = block.token_selection.mlp_head[2]
        logits = logits - 1e4
        std, mean = logits.std().clamp_min(1e-6), logits.mean()
        last.weight.div_(std)
        last.bias.copy_(bias - mean / std)
    model.router_base = [[r.bias.clone() for r in _router_biases(b)] for b in model.blocks]


def _router_biases(block):
    return [block.attn_rate.router, block.mlp_rate.router, block.token_selection.mlp_head[2]]


@torch.no_grad()
def set_offset(model: DyDiT, offset: float):
    """One bias offset for every router: larger keeps more heads, groups and tokens."""
    for block, base in zip(model.blocks, model.router_base):
        for router, b in zip(_router_biases(block), base):
            router.bias.copy_(b + offset)
    model.router_offset = offset


@torch.no_grad()
def run_fraction(fast: FastDyDiT, timesteps, x, y) -> float:
    """Dynamic MACs / DiT MACs over the calls of a schedule (routers and all non-block work counted)."""
    model = fast.model
    model.complete_model = True
    static = analytic_macs(model) * x.shape[0] * len(timesteps)
    model.complete_model = False
    fast.prepare(timesteps)  # set_offset moved the routers: the plan noticed and starts afresh
    total = 0.0
    for s in timesteps:
        record = []
        fast(x, torch.full((x.shape[0],), float(s), device=x.device), y, record=record)
        total += float(dynamic_macs(model, record).sum())
    return total / static


def calibrate(fast: FastDyDiT, timesteps, x, y, fraction, iters=12, tol=0.01, bracket=(-6.0, 6.0)):
    """Bisection on the router offset so the run's FLOPs fraction reaches `fraction`; returns it."""
    return bisect_offset(fast.model, lambda: run_fraction(fast, timesteps, x, y), fraction, iters, tol, bracket)


def bisect_offset(model, measure, fraction, iters=12, tol=0.01, bracket=(-6.0, 6.0)):
    """Bisection on the routers' shared offset (set_offset) until measure() -> the FLOPs fraction reached is within
    tol of `fraction` (it grows with the offset); returns the last one reached."""
    lo, hi = bracket
    achieved = None
    for _ in range(iters):
        mid = (lo + hi) / 2
        set_offset(model, mid)
        achieved = measure()
        if abs(achieved - fraction) < tol:
            break
        lo, hi = (mid, hi) if achieved < fraction else (lo, mid)
    return achieved


def calibrated_dydit(model_name, fraction, timesteps, device="cpu", seed=0, log=print) -> DyDiT:
    """A random-weight DyDiT whose routers are calibrated to `fraction` of DiT's FLOPs over `timesteps`."""
    log(f"calibrating routers of {model_name} to {fraction:.3f} of DiT's FLOPs on {len(timesteps)} timesteps...")
    dydit = standardized_dydit(model_name, timesteps, device, seed)
    recalibrate(dydit, fraction, timesteps, seed)
    return dydit


def standardized_dydit(model_name, timesteps, device="cpu", seed=0) -> DyDiT:
    """A random-weight DyDiT with standardised routers (offset 0: about half of everything on)."""
    torch.manual_seed(seed)
    dydit = randomize_(create_model(model_name), seed=seed).to(device).eval()
    x, y = _one_input(dydit, seed)
    standardize_routers(dydit, timesteps, x, y, seed)
    return dydit


def recalibrate(dydit: DyDiT, fraction, timesteps, seed=0) -> float:
    """Moves the routers' one offset so the FLOPs over `timesteps` reach `fraction` again (e.g. on the
    timesteps a sampler's timing will call); returns the fraction reached."""
    x, y = _one_input(dydit, seed)
    fast = FastDyDiT(dydit, cache_bytes=0)  # no slice cache: see run_speed
    previous = getattr(dydit, "router_offset", None)
    if previous is not None:  # start around the last offset (another sampler's calls): fewer steps
        reached = calibrate(fast, timesteps, x, y, fraction, bracket=(previous - 1.0, previous + 1.0))
        if abs(reached - fraction) < 0.01:
            return reached
    return calibrate(fast, timesteps, x, y, fraction)


def _one_input(model, seed):
    g = torch.Generator().manual_seed(seed)
    device = model.pos_embed.device
    x = torch.randn(1, model.in_channels, model.input_size, model.input_size, generator=g).to(device)
    return x, torch.randint(0, model.y_embedder.num_classes, (1,), generator=g).to(device)
