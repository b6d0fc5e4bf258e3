"""`python -m bench speed`: DiT vs DyDiT (fast and masked paths) over the calls of a short schedule."""
import json


def register(subparsers):
    p = subparsers.add_parser("speed", help="time DiT vs DyDiT fast/masked paths; realized = speedup / FLOPs ratio")
    p.add_argument("--model", default="DyDiT-XL/2", help="a DyDiT model name (default: DyDiT-XL/2)")
    p.add_argument("--flops-fraction", type=float, default=0.5, help="target dynamic FLOPs / DiT FLOPs")
    p.add_argument("--batch", type=int, default=2, help="batch size of each model call")
    p.add_argument("--steps", type=int, default=10, help="K timesteps spread over [0, 1000)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of the K calls (median reported)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-gb", type=float, default=12.0,
                   help="budget of FastDyDiT's sliced-weight cache (past it: views / per-call slices)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args):
    import sys

    import torch

    from bench.speed import as_dict, run_speed
    if args.repeats < 5:
        raise SystemExit("error: --repeats must be at least 5 (the median of fewer is not a measurement)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # as DiT's sampling scripts
        torch.backends.cudnn.allow_tf32 = True
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    r = run_speed(args.model, args.flops_fraction, args.batch, args.steps, args.repeats, device, args.seed,
                  args.cache_gb, log)
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
