"""`python -m bench device-check`: in a few minutes on one CUDA GPU, what this project's CPUs cannot tell.

    python -m bench device-check                          # CUDA: DyDiT-XL/2 (README: how long it takes)
    python -m bench device-check --device cpu --quick     # the same code at tiny size (the tests run it)
    nox -s device-check                                   # with the install

Parts, each isolated (a failure is recorded in its part, the others still run):
- calls: DiT vs DyDiT's compute-skipping path vs its masked path (what the public code runs), routers
  calibrated to each λ (bench.timing.calibration, as `bench speed`), at batch 1 and at the paper's sampling batch
  with CFG, in each precision: s/call (CUDA events after a warm-up), the FLOPs ratio of the same calls, the
  speed-up, realized = speed-up / FLOPs ratio, the peak memory of the calls;
- loop: the whole DDIM-50 loop (scheduler, CFG, VAE decode) of DiT and the fast path, ratio per λ;
- compile: the fast path eager vs torch.compile of its attention core (default; reduce-overhead = CUDA graphs)
  at λ=0.5, the sampling batch, bf16 (CUDA only): what the option's default is to be chosen by;
- samplers: every sampler runs a few images on the device (finite latents);
- mini training: DiT-Mini trains a few hundred steps on the device (steps/s, finite loss).
Written to OUT/device.json and OUT/device.html (linked from the index) with the machine's fingerprint.
"""
import dataclasses
import json
import math
import platform
import time
import traceback
from dataclasses import dataclass
from typing import Callable, List, Tuple

import torch

from dydit import sampler_spec
from dydit.sampling import precision as sampling_precision

LAMBDAS = (0.5, 0.7)
PRECISIONS = sampler_spec.PRECISIONS  # fp32, TF32 matmuls (CUDA), bf16 autocast (dydit.sampling.precision)
DEVICE_JSON, DEVICE_HTML = "device.json", "device.html"


@dataclass(frozen=True)
class CheckSize:
    """How big the check runs (FULL on a GPU, QUICK for the tests and a CPU)."""
    model: str  # the DyDiT whose DiT path is the baseline
    batches: Tuple[int, ...]  # model-call rows: 1, and the paper's sampling batch with CFG
    call_steps: int  # timesteps per timed run of calls, spread over [0, 1000)
    repeats: int  # interleaved rounds
    loop_steps: int  # DDIM steps of the whole-loop part
    loop_vae: bool  # decode with the SD VAE's architecture in the loop (seconds per image on a CPU)
    sampler_steps: int
    mini_steps: int


# DiT's sample_ddp.py samples 32 images per GPU, 64 rows with CFG. Time on one GPU, estimated (never run on one):
# 12 call configurations (3 precisions x 2 λ x 2 batches) of 5 timesteps x 5 rounds x 3 paths, the batch-64 ones
# ~0.3 s per fp32 XL call (118.7 GMACs x 64 rows at ~50 TFLOP/s): ~3 min; the loop, samplers and mini: ~1 min; compile
# (3 runs at batch 64 in bf16, inductor compiling the attention core twice): ~1-2 min
FULL = CheckSize("DyDiT-XL/2", (1, 64), call_steps=5, repeats=5, loop_steps=50, loop_vae=True, sampler_steps=10,
                 mini_steps=300)
QUICK = CheckSize("DyDiT-S/8", (1, 4), call_steps=3, repeats=2, loop_steps=4, loop_vae=False, sampler_steps=2,
                  mini_steps=3)


def fingerprint(device: str) -> dict:
    """The machine the numbers are from."""
    from bench.results import device_name, git_state
    cuda = torch.device(device).type == "cuda"
    return {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
            "gpus": torch.cuda.device_count() if cuda else 0, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "git": git_state(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _isolated(part: Callable[[], list], log) -> list:
    """A part's rows, or one row saying how it failed."""
    try:
        return part()
    except Exception as e:  # noqa: BLE001 -- one part's failure is that part's
        log(f"  failed: {type(e).__name__}: {e}")
        return [{"error": f"{type(e).__name__}: {e}", "where": traceback.format_exc(limit=-2).strip().splitlines()[-3:]}]


def _peak(device: str):
    """(reset, read) of the peak memory in GiB: CUDA's allocator peak, or the process's peak RSS on a CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.reset_peak_memory_stats, lambda: torch.cuda.max_memory_allocated() / 2**30
    import resource
    return (lambda: None), (lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)


def calls_part(size: CheckSize, device: str, log) -> list:
    """DiT vs fast vs masked per (λ, batch, precision): bench.timing.speed.run_speed under each precision."""
    from bench.timing.speed import run_speed
    rows = []
    reset, read = _peak(device)
    for precision in PRECISIONS:
        if precision == "tf32" and torch.device(device).type != "cuda":
            rows.append({"precision": precision, "skipped": "TF32 is a CUDA matmul mode"})
            continue
        for lam in LAMBDAS:
            for batch in size.batches:
                log(f"  calls: λ={lam}, batch {batch}, {precision}")
                reset()
                try:
                    r = run_speed(size.model, lam, batch, size.call_steps, size.repeats, device, log=lambda *a: None,
                                  timed_under=lambda: sampling_precision(precision, device))
                except Exception as e:  # noqa: BLE001 -- one precision may not run where others do
                    rows.append({"precision": precision, "lambda": lam, "batch": batch,
                                 "error": f"{type(e).__name__}: {e}"})
                    continue
                rows.append({"precision": precision, "lambda": lam, "batch": batch, "dit_s": r.dit_s,
                             "fast_s": r.dydit_s, "masked_s": r.masked_s, "flops_ratio": 1 / r.flops_ratio,
                             "speedup": r.speedup, "realized": r.realized, "masked_speedup": r.masked_speedup,
                             "fast_vs_masked_rel_diff": r.max_rel_diff_fast_vs_masked, "peak_gib": read()})
    return rows


def loop_part(size: CheckSize, device: str, log) -> list:
    """The whole DDIM loop (scheduler, CFG, VAE decode) per λ: bench.timing.speed.run_loop_speed."""
    from bench.timing.speed import run_loop_speed
    rows = []
    for lam in LAMBDAS:
        log(f"  loop: DDIM-{size.loop_steps}, λ={lam}")
        r = run_loop_speed(size.model, lam, "ddim", size.loop_steps, batch=1, repeats=size.repeats, device=device,
                           vae=size.loop_vae, log=lambda *a: None)
        fast = next(p for name, p in r.paths.items() if name != "DiT")
        rows.append({"lambda": lam, "sampler": f"ddim-{size.loop_steps}", "dit_s_per_image": r.paths["DiT"]["s_per_image"],
                     "fast_s_per_image": fast["s_per_image"], "ratio": fast["s_per_image"] / r.paths["DiT"]["s_per_image"],
                     "flops_ratio": fast["flops_ratio"], "realized": fast["realized"], "vae": r.vae})
    return rows


def compile_part(size: CheckSize, device: str, log) -> list:
    """The fast path eager and with each compile mode (dydit.fast.COMPILE_MODES; reduce-overhead adds CUDA graphs)
    at λ=0.5, the largest batch, bf16: what chooses the default, off until this has run on a GPU."""
    from bench.timing.speed import run_speed
    from dydit.fast import COMPILE_MODES
    if torch.device(device).type != "cuda":
        return [{"compile_mode": "-", "skipped": "measured on CUDA only (inductor on a CPU compiles C++ kernels "
                                                 "for minutes; the tests check the compiled path equals the plain)"}]
    rows = []
    for mode in (None, *COMPILE_MODES[:2]):
        log(f"  compile: {mode or 'eager'}, λ=0.5, batch {size.batches[-1]}, bf16")
        try:
            r = run_speed(size.model, 0.5, size.batches[-1], size.call_steps, size.repeats, device,
                          log=lambda *a: None, timed_under=lambda: sampling_precision("bf16", device), compile_mode=mode)
        except Exception as e:  # noqa: BLE001 -- one mode may fail where others run
            rows.append({"compile_mode": mode or "eager", "error": f"{type(e).__name__}: {e}"})
            continue
        rows.append({"compile_mode": mode or "eager", "dit_s": r.dit_s, "fast_s": r.dydit_s, "speedup": r.speedup,
                     "realized": r.realized, "fast_vs_masked_rel_diff": r.max_rel_diff_fast_vs_masked})
    return rows


def samplers_part(size: CheckSize, device: str, log) -> list:
    """Every sampler, a few images of a small random model on the device: finite latents."""
    from bench.sections.pipeline_check import sampler_rows
    log(f"  samplers on {device}")
    return [{"sampler": r["name"].split(" (")[0], "ok": r["ok"], "s_per_image": r["value"]}
            for r in sampler_rows(device=device, steps=size.sampler_steps)]


def mini_training_part(size: CheckSize, device: str, log, work) -> list:
    """DiT-Mini trained on the digits on the device: steps/s and a finite loss."""
    from bench import data
    from dydit.train import train
    from dydit.train_config import TrainConfig
    log(f"  mini training: {size.mini_steps} steps on {device}")
    config = TrainConfig(model="DiT-Mini/2", data="digits", max_steps=size.mini_steps, global_batch_size=64, lr=1e-3,
                         log_every=max(1, size.mini_steps // 3), ckpt_every=size.mini_steps, device=device)
    start = time.perf_counter()
    result = train(config, data.digits("train"), work / "mini-training", progress=False)
    seconds = time.perf_counter() - start
    logged = [json.loads(line) for line in (result.run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    loss = logged[-1]["loss"] if logged else None
    return [{"steps": result.step, "seconds": seconds, "steps_per_s": result.step / seconds, "device": device,
             "final_loss": loss, "ok": loss is not None and math.isfinite(loss)}]


def run_check(device: str, quick: bool, work, log=print) -> dict:
    """Every part on `device` (QUICK or FULL size) -> the dict written as device.json."""
    size = QUICK if quick else FULL
    start = time.perf_counter()
    out = {"schema": "dydit-device-check/1", "fingerprint": fingerprint(device), "size": dataclasses.asdict(size),
           "quick": quick, "parts": {}}
    parts: List[Tuple[str, Callable[[], list]]] = [
        ("calls", lambda: calls_part(size, device, log)), ("loop", lambda: loop_part(size, device, log)),
        ("compile", lambda: compile_part(size, device, log)), ("samplers", lambda: samplers_part(size, device, log)),
        ("mini_training", lambda: mini_training_part(size, device, log, work))]
    for name, part in parts:
        log(f"{name}...")
        t0 = time.perf_counter()
        out["parts"][name] = {"rows": _isolated(part, log), "seconds": round(time.perf_counter() - t0, 1)}
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out
