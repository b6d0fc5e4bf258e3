"""DiT vs DyDiT speed on one device: fast (compute-skipping) path, masked path, realized speedup.

No trained DyDiT checkpoint is reachable here, so the routers are *calibrated*: random router weights,
standardised so that widths vary with t and tokens vary in space, plus one bias offset found by
bisection so that the dynamic FLOPs reach the requested fraction of DiT's. The FLOPs ratio reported is
measured over the very calls that are timed, so realized = speedup / FLOPs ratio is honest whatever
the calibration reached.
"""
from dataclasses import asdict, dataclass

import numpy as np
import torch

from bench.timing import interleaved_call_medians
from dydit.fast import FastDyDiT
from dydit.flops import analytic_macs, dynamic_macs
from dydit.models import DyDiT, create_model, randomize_

# result keys (the JSON of `python -m bench speed --json`)
DIT_S, DYDIT_S, MASKED_S = "dit_s", "dydit_s", "masked_s"
FLOPS_RATIO, SPEEDUP, REALIZED = "flops_ratio", "speedup", "realized"


@dataclass
class SpeedResult:
    model: str
    device: str
    batch: int
    steps: int
    repeats: int
    target_fraction: float
    calibrated_fraction: float
    dit_s: float
    dydit_s: float
    masked_s: float
    flops_ratio: float
    speedup: float
    realized: float
    masked_speedup: float
    max_rel_diff_fast_vs_masked: float
    sliced_weights_cached_gb: float  # FastDyDiT's cache of sliced weights after the run
    cache_budget_gb: float
    note: str


def schedule(steps: int):
    """K timesteps spread over [0, 1000), from noisy to clean, as a sampler visits them."""
    return np.linspace(999, 0, steps).round().tolist()


#################################################################################
#                            Router calibration                                 #
#################################################################################

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
    lo, hi = bracket
    achieved = None
    for _ in range(iters):
        mid = (lo + hi) / 2
        set_offset(fast.model, mid)
        achieved = run_fraction(fast, timesteps, x, y)
        if abs(achieved - fraction) < tol:
            break
        lo, hi = (mid, hi) if achieved < fraction else (lo, mid)
    return achieved


#################################################################################
#                                  Benchmark                                    #
#################################################################################

def run_speed(model_name="DyDiT-XL/2", fraction=0.5, batch=2, steps=10, repeats=5, device="cpu",
              seed=0, cache_gb=2.0, log=print) -> SpeedResult:
    """Times DiT, DyDiT fast and DyDiT masked over the same K calls; see the module docstring.

    DiT is the same module with complete_model=True (the plain DiT block, routers not run): the same
    weights and code as a DiT, without a second copy of the model in memory."""
    if not model_name.startswith("DyDiT-"):
        raise ValueError(f"--model must be a DyDiT model (e.g. DyDiT-XL/2), got {model_name!r}")
    torch.manual_seed(seed)
    dydit = randomize_(create_model(model_name), seed=seed).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dydit.in_channels, dydit.input_size, dydit.input_size, generator=g).to(device)
    y = torch.randint(0, 1000, (batch,), generator=g).to(device)
    ts = schedule(steps)
    log(f"calibrating routers of {model_name} to {fraction:.2f} of DiT's FLOPs (random weights, bisection)...")
    standardize_routers(dydit, ts, x[:1], y[:1], seed)
    # calibrate without a slice cache: cached trial patterns churn ~12 GB through the allocator; with
    # them cached then freed in this process, the timed XL fast path ran 1.63 s/call, against 1.38-1.48
    # without (NOTES.md); the timed path gets a fresh cache of its own patterns only
    trial = FastDyDiT(dydit, cache_bytes=0)
    calibrate(trial, ts, x[:1], y[:1], fraction)
    measured = run_fraction(trial, ts, x, y)  # over the timed batch itself
    log(f"  dynamic FLOPs over the timed calls: {measured:.3f} of DiT")
    fast = FastDyDiT(dydit, cache_bytes=int(cache_gb * 2**30)).prepare(ts)

    t_batches = [torch.full((batch,), float(s), device=device) for s in ts]
    with torch.no_grad():
        rel = max(float((fast(x, t, y) - dydit(x, t, y)).norm() / dydit(x, t, y).norm()) for t in t_batches[:2])

        def dit_call(t):
            def call():
                dydit.complete_model = True
                try:
                    return dydit(x, t, y)
                finally:
                    dydit.complete_model = False
            return call
        log(f"timing {steps} calls x {repeats} repeats (+1 warm-up), batch {batch}, on {device}, "
            "DiT/fast/masked interleaved call by call...")
        med = interleaved_call_medians({"dit": [dit_call(t) for t in t_batches],
                                        "fast": [lambda t=t: fast(x, t, y) for t in t_batches],
                                        "masked": [lambda t=t: dydit(x, t, y) for t in t_batches]},
                                       repeats=repeats, warmup=1, device=device)
    dit_s, fast_s, masked_s = (med[k][0] / steps for k in ("dit", "fast", "masked"))
    flops_ratio = 1.0 / measured
    speedup = dit_s / fast_s
    note = ("routers calibrated (random weights + one bisected bias offset): widths vary with t, tokens vary "
            "in space; not a trained DyDiT")
    return SpeedResult(model_name, _device_name(device), batch, steps, repeats, fraction, measured,
                       dit_s, fast_s, masked_s, flops_ratio, speedup, speedup / flops_ratio,
                       dit_s / masked_s, rel, fast._cached_bytes / 2**30, cache_gb, note)


def _device_name(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def as_dict(result: SpeedResult) -> dict:
    return asdict(result)


#################################################################################
#                         Whole sampling loop (bench.loop_speed)                #
#################################################################################

@dataclass
class LoopSpeedResult:
    model: str
    device: str
    sampler: str
    steps: int
    batch: int
    target_fraction: float
    paths: dict  # name -> LoopTiming.to_dict() + flops_ratio, speedup, realized (against "DiT")
    check: dict  # name -> whole-run check of the estimate (empty without --check)
    vae: str
    memory: dict  # model weights, per path sliced weights (+ CUDA call peaks), the process's peak RSS
    note: str


def shared_dit(dydit: DyDiT):
    """A DiT whose parameters *are* the DyDiT's (no second copy in memory): the DiT path of the same weights."""
    from dydit.models import DiT
    dit = DiT(input_size=dydit.input_size, patch_size=dydit.patch_size, in_channels=dydit.in_channels,
              hidden_size=dydit.hidden_size, depth=len(dydit.blocks), num_heads=dydit.num_heads,
              mlp_ratio=dydit.mlp_ratio, num_classes=dydit.y_embedder.embedding_table.num_embeddings - 1,
              learn_sigma=dydit.learn_sigma)
    dit.load_state_dict({k: v for k, v in dydit.state_dict().items() if k in dit.state_dict()}, assign=True)
    return dit.eval()


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
    return x, torch.randint(0, 1000, (1,), generator=g).to(device)


def timing_vae(device="cpu"):
    """(decode(latents) callable, GMACs per image, description): the SD VAE's architecture; weights random
    (a decoder's time does not depend on them)."""
    from diffusers import AutoencoderKL

    from bench.loop_speed import vae_decode_gmacs
    from dydit.sampling import SD_VAE_CONFIG, decode_to_uint8
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD_VAE_CONFIG).to(device).eval()
    return (lambda z: decode_to_uint8(vae, z)), vae_decode_gmacs(vae, 32), \
        "sd-vae-ft-ema architecture, random weights (decode time does not depend on them)"


def run_loop_speed(model_name="DyDiT-XL/2", fraction=0.5, sampler="ddim", steps=None, batch=1, calls=3,
                   repeats=3, cache_gbs=(2.0,), deepcache=0, device="cpu", seed=0, check=False, vae=True,
                   log=print) -> LoopSpeedResult:
    """Whole-loop s/image of DiT and the DyDiT fast path (one per slice-cache budget), interleaved."""
    from bench.loop_speed import LoopPath, check_estimate, picks, time_loops, width_cost
    from dydit.sampling import sampler_timesteps
    if not model_name.startswith("DyDiT-"):
        raise ValueError(f"--model must be a DyDiT model (e.g. DyDiT-XL/2), got {model_name!r}")
    timesteps = sampler_timesteps(sampler, steps)
    log(f"calibrating routers of {model_name} to {fraction:.3f} of DiT's FLOPs on the calls that will be timed...")
    dydit = standardized_dydit(model_name, schedule(10), device, seed)
    idx = picks(len(timesteps), calls, 0, width_cost(FastDyDiT(dydit, cache_bytes=0), timesteps))
    recalibrate(dydit, fraction, [timesteps[i] for i in idx], seed)
    dit = shared_dit(dydit)
    paths = [LoopPath("DiT", dit, deepcache)]
    for gb in cache_gbs:
        paths.append(LoopPath(f"DyDiT fast, cache {gb:g} GiB", FastDyDiT(dydit, int(gb * 2**30)), deepcache))
    decode, decode_gmacs, vae_note = timing_vae(device) if vae else (None, 0.0, "not timed")
    timings = time_loops(paths, sampler, steps, batch, calls=calls, repeats=repeats, decode=decode,
                         decode_gmacs_per_image=decode_gmacs, device=device, seed=seed, log=log)
    base = timings["DiT"]
    out = {}
    for name, t in timings.items():
        ratio = t.gmacs_per_image / base.gmacs_per_image
        speedup = base.s_per_image / t.s_per_image
        out[name] = {**t.to_dict(), "flops_ratio": ratio, "speedup": speedup, "realized": speedup * ratio}
    checked = {}
    if check:
        log(f"  checking the estimate against whole {sampler}-{len(timesteps)} runs...")
        checked = check_estimate(paths, timings, repeats=2, decode=decode, device=device, seed=seed)
    import resource
    memory = {"model_weights_gib": sum(p.numel() * p.element_size() for p in dydit.parameters()) / 2**30,
              "sliced_weights_gib": {n: p["sliced_weights_gib"] for n, p in out.items()},
              "cuda_call_peak_gib": {n: p["call_peak_gib"] for n, p in out.items()},
              "process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    note = ("routers calibrated (random weights + one bisected bias offset), not a trained DyDiT; s/image "
            "estimated from K timed calls per path on the schedule's own timesteps (bench/loop_speed.py)")
    return LoopSpeedResult(model_name, _device_name(device), sampler, len(timesteps), batch, fraction, out,
                           checked, vae_note, memory, note)
