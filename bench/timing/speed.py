"""`bench speed`'s engine: DiT vs DyDiT on one device, fast (compute-skipping) path, masked path, realized speedup.

No trained DyDiT checkpoint is reachable here, so the routers are *calibrated* (bench.timing.calibration):
random router weights, standardised so that widths vary with t and tokens vary in space, plus one bias
offset found by bisection so that the dynamic FLOPs reach the requested fraction of DiT's. The FLOPs ratio reported is
measured over the very calls that are timed, so realized = speedup / FLOPs ratio is honest whatever
the calibration reached.
"""
import contextlib
from dataclasses import asdict, dataclass

import torch

from bench.timing.calibration import (calibrate, recalibrate, run_fraction, schedule, standardize_routers,
                                      standardized_dydit)
from bench.timing.calls import interleaved_call_medians
from bench.timing.loop import LoopPath, check_estimate, picks, shared_dit, time_loops, vae_decode_gmacs, width_cost
from dydit import registry
from dydit.fast import FastDyDiT
from dydit.models import randomize_
from dydit.registry import create_model
from dydit.sampling import SamplerSpec

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


#################################################################################
#                                  Benchmark                                    #
#################################################################################

def _require_dynamic(model_name):
    """ValueError unless model_name is a dynamic model of the registry (DyDiT-*, DySiT-*)."""
    entry = registry.MODELS.get(model_name)
    if entry is None or not entry.is_dynamic:
        raise ValueError(f"--model must be a dynamic model (e.g. DyDiT-XL/2), got {model_name!r}")


def run_speed(model_name="DyDiT-XL/2", fraction=0.5, batch=2, steps=10, repeats=5, device="cpu",
              seed=0, cache_gb=2.0, log=print, timed_under=contextlib.nullcontext,
              compile_mode=None) -> SpeedResult:
    """Times DiT, DyDiT fast and DyDiT masked over the same K calls; see the module docstring. timed_under: a
    context (e.g. bf16 autocast) for the timed calls only: the routers are calibrated in fp32 either way.

    DiT is the same module with complete_model=True (the plain DiT block, routers not run): the same
    weights and code as a DiT, without a second copy of the model in memory."""
    _require_dynamic(model_name)
    torch.manual_seed(seed)
    dydit = randomize_(create_model(model_name), seed=seed).to(device).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dydit.in_channels, dydit.input_size, dydit.input_size, generator=g).to(device)
    y = torch.randint(0, dydit.y_embedder.num_classes, (batch,), generator=g).to(device)
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
    # compile_mode (dydit.fast.COMPILE_MODES): compiled on the equality check's calls below, before any timing
    fast = FastDyDiT(dydit, cache_bytes=int(cache_gb * 2**30), compile_mode=compile_mode).prepare(ts)

    t_batches = [torch.full((batch,), float(s), device=device) for s in ts]
    with torch.no_grad(), timed_under():
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
#                         Whole sampling loop (bench.timing.loop)                #
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


def timing_vae(device="cpu"):
    """(decode(latents) callable, GMACs per image, description): the SD VAE's architecture; weights random
    (a decoder's time does not depend on them)."""
    from diffusers import AutoencoderKL

    from dydit.sampling import SD_VAE_CONFIG, decode_to_uint8
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD_VAE_CONFIG).to(device).eval()
    return (lambda z: decode_to_uint8(vae, z)), vae_decode_gmacs(vae, 32), \
        "sd-vae-ft-ema architecture, random weights (decode time does not depend on them)"


def run_loop_speed(model_name="DyDiT-XL/2", fraction=0.5, sampler="ddim", steps=None, batch=1, calls=3,
                   repeats=3, cache_gbs=(2.0,), deepcache=0, device="cpu", seed=0, check=False, vae=True,
                   log=print) -> LoopSpeedResult:
    """Whole-loop s/image of DiT and the DyDiT fast path (one per slice-cache budget), interleaved."""
    from dydit.sampling import sampler_timesteps
    _require_dynamic(model_name)
    timesteps = sampler_timesteps(sampler, steps)
    log(f"calibrating routers of {model_name} to {fraction:.3f} of DiT's FLOPs on the calls that will be timed...")
    dydit = standardized_dydit(model_name, schedule(10), device, seed)
    idx = picks(len(timesteps), calls, 0, width_cost(FastDyDiT(dydit, cache_bytes=0), timesteps))
    recalibrate(dydit, fraction, [timesteps[i] for i in idx], seed)
    dit = shared_dit(dydit)
    paths = [LoopPath("DiT", dit, deepcache)]
    for gb in cache_gbs:
        paths.append(LoopPath(f"DyDiT fast, cache {gb:g} GiB", FastDyDiT(dydit, int(gb * 2**30)), deepcache))
    spec = SamplerSpec(name=sampler, steps=steps, batch_size=batch)
    if registry.entry(model_name).is_mini:  # the mini samples pixels, every channel guided (as its suites)
        decode, decode_gmacs, vae_note = None, 0.0, "none: the mini samples pixels"
        spec = SamplerSpec(name=sampler, steps=steps, batch_size=batch, guided_channels=None)
    else:
        decode, decode_gmacs, vae_note = timing_vae(device) if vae else (None, 0.0, "not timed")
    timings = time_loops(paths, spec, calls=calls,
                         repeats=repeats, decode=decode, decode_gmacs_per_image=decode_gmacs, device=device, seed=seed,
                         log=log)
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
            "estimated from K timed calls per path on the schedule's own timesteps (bench/timing/loop.py)")
    return LoopSpeedResult(model_name, _device_name(device), sampler, len(timesteps), batch, fraction, out,
                           checked, vae_note, memory, note)
