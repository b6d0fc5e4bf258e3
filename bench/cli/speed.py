"""`python -m bench speed`: DiT vs DyDiT, per model call (fast and masked paths) or over whole sampling loops."""
import argparse
import json
import sys

from bench.cli import args as types
from dydit.errors import UserError

QUICK = dict(model="DyDiT-S/2", sampler="dpm-solver++", steps=10, calls=3, repeats=3, cache_gb=[2.0])
LOOP_SAMPLERS = ("ddpm", "ddim", "dpm-solver++")
MIN_CALL_REPEATS = 5  # the median of fewer is not a measurement


def register(subparsers):
    p = subparsers.add_parser("speed", help="time DiT vs DyDiT fast/masked paths; realized = speedup / FLOPs ratio")
    p.add_argument("--model", default="DyDiT-XL/2", type=types.model_name(dynamic=True), help="a DyDiT model name (default: DyDiT-XL/2)")
    p.add_argument("--flops-fraction", type=types.fraction, default=0.5, help="target dynamic FLOPs / DiT FLOPs")
    p.add_argument("--batch", type=types.positive_int, default=None, help="images per call (default: 2 per call, 1 image per loop)")
    p.add_argument("--steps", type=types.positive_int, default=None,
                   help="per call: K timesteps spread over [0, 1000) (default 10); --loop: the sampler's steps")
    p.add_argument("--repeats", type=types.positive_int, default=None, help="timed repeats (median reported; default 5, --loop 3)")
    p.add_argument("--device", type=types.device, default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--seed", type=types.non_negative_int, default=0)
    p.add_argument("--cache-gb", type=cache_budgets, default=None,
                   help="budget(s) of FastDyDiT's sliced-weight cache in GiB, comma-separated with --loop "
                        "(one fast path each: the budget -> realized curve); default 2")
    loop = p.add_argument_group("whole sampling loop (scheduler, CFG batch, VAE decode): bench/timing/loop.py")
    loop.add_argument("--loop", action="store_true", help="time whole sampling loops instead of single calls")
    loop.add_argument("--sampler", default="ddim", choices=LOOP_SAMPLERS, help="default ddim")
    loop.add_argument("--calls", type=types.positive_int, default=3, help="full calls timed per path on the schedule's timesteps")
    loop.add_argument("--deepcache", type=types.non_negative_int, default=0, metavar="N", help="DeepCache interval of every path")
    loop.add_argument("--check", action="store_true", help="also run whole loops and compare with the estimate")
    loop.add_argument("--no-vae", action="store_true", help="leave the VAE decode out of the loop")
    loop.add_argument("--quick", action="store_true",
                      help=f"a CI check in ~1-2 min on a CPU: --loop --check with {QUICK}")
    loop.add_argument("--min-realized", type=types.non_negative_float, default=None,
                      help="exit 1 when a fast path's realized speedup is below this (a CI gate)")
    p.add_argument("--compile", default=None, metavar="MODE",
                   help="calls only: torch.compile the fast path's attention core with this mode (dydit.fast."
                        "COMPILE_MODES: default, reduce-overhead = with CUDA graphs, max-autotune); default off "
                        "until a GPU has measured it")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def cache_budgets(text):
    """--cache-gb: comma-separated budgets in GiB, each finite and >= 0."""
    budgets = [types.non_negative_float(v) for v in text.split(",")]
    if not budgets:
        raise argparse.ArgumentTypeError("give one or more budgets in GiB, e.g. 0,0.5,2")
    return budgets


def _device(args):
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # as DiT's sampling scripts
        torch.backends.cudnn.allow_tf32 = True
    return device


def run(args):
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    if args.quick:
        args.loop, args.check = True, True
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.compile is not None:
        from dydit.fast import COMPILE_MODES
        if args.compile not in COMPILE_MODES:
            raise UserError(f"--compile {args.compile!r}: give one of {', '.join(COMPILE_MODES)}")
        if args.loop:
            raise UserError("--compile times single calls: drop --loop (or --quick, which times loops)")
    return run_loop(args, log) if args.loop else run_calls(args, log)


def run_loop(args, log):
    from dataclasses import asdict

    from bench.timing.speed import run_loop_speed
    cache_gbs = args.cache_gb or [2.0]
    r = run_loop_speed(args.model, args.flops_fraction, args.sampler, args.steps, args.batch or 1, args.calls,
                       args.repeats or 3, cache_gbs, args.deepcache, _device(args), args.seed, args.check,
                       not args.no_vae, log)
    if args.json:
        print(json.dumps(asdict(r)))
    else:
        print(f"{r.model} on {r.device}: whole {r.sampler}-{r.steps} loop, {r.batch} image(s) with CFG, "
              f"routers calibrated to {r.target_fraction:g}; VAE: {r.vae}")
        print(f"  {'path':<28} {'s/image':>9} {'FLOPs ratio':>12} {'speed-up':>9} {'realized':>9} {'slices GiB':>11}")
        for name, p in r.paths.items():
            print(f"  {name:<28} {p['s_per_image']:>9.3f} {p['flops_ratio']:>12.3f} {p['speedup']:>8.2f}x "
                  f"{p['realized']:>9.3f} {p['sliced_weights_gib']:>11.2f}")
        m = r.memory
        print(f"  memory: model weights {m['model_weights_gib']:.2f} GiB (DiT and the fast paths share them); "
              f"process peak RSS {m['process_peak_rss_gib']:.2f} GiB"
              + (f"; CUDA call peaks {m['cuda_call_peak_gib']}" if any(m["cuda_call_peak_gib"].values()) else ""))
        for name, c in r.check.items():
            print(f"  check {name}: whole runs {c['measured_s_per_image']:.3f} s/image, estimate "
                  f"{c['estimated_s_per_image']:.3f} ({c['rel_error']:+.1%})")
        print(f"  note: {r.note}")
    if args.min_realized is not None:
        low = {n: p["realized"] for n, p in r.paths.items() if n != "DiT" and p["realized"] < args.min_realized}
        if low:
            print(f"FAIL: realized below {args.min_realized}: {low}", file=sys.stderr)
            return 1
    return 0


def run_calls(args, log):
    from bench.timing.speed import as_dict, run_speed
    repeats = args.repeats or MIN_CALL_REPEATS
    if repeats < MIN_CALL_REPEATS:
        raise UserError(f"--repeats {repeats}: give at least {MIN_CALL_REPEATS} (the median of fewer is not a "
                        f"measurement)")
    if args.cache_gb and len(args.cache_gb) > 1:
        raise UserError("--cache-gb takes one budget per call timing; several (a curve) go with --loop")
    r = run_speed(args.model, args.flops_fraction, args.batch or 2, args.steps or 10, repeats, _device(args),
                  args.seed, (args.cache_gb or [2.0])[0], log, compile_mode=args.compile)
    if args.json:
        print(json.dumps(as_dict(r)))
        return 0
    print(f"{r.model} on {r.device}, batch {r.batch}, {r.steps} calls, median of {r.repeats}")
    print(f"  DiT            {r.dit_s:.4f} s/forward")
    print(f"  DyDiT fast     {r.dydit_s:.4f} s/forward   speedup {r.speedup:.2f}x")
    print(f"  DyDiT masked   {r.masked_s:.4f} s/forward   speedup {r.masked_speedup:.2f}x (masks multiplied, as the public code)")
    print(f"  FLOPs ratio (DiT / DyDiT, over the timed calls) {r.flops_ratio:.2f}x  (target fraction {r.target_fraction})")
    print(f"  realized = speedup / FLOPs ratio = {r.realized:.2f}")
    print(f"  fast vs masked relative difference: {r.max_rel_diff_fast_vs_masked:.1e}")
    print(f"  sliced weights cached: {r.sliced_weights_cached_gb:.2f} GiB (budget {r.cache_budget_gb:g} GiB)")
    print(f"  note: {r.note}")
    return 0
