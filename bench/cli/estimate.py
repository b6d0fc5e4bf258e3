"""`python -m bench estimate`: how long a profile takes on one GPU, estimated from FLOPs (bench/estimate.py).

    python -m bench estimate                          # the ci profile of table1, table4, table18 on an H100
    python -m bench estimate --profile full table1    # any profile, any suites
"""
CI_SUITES = ("table1", "table4", "table18")  # the suites with ci cells: what `nox -s ci-gate` runs


def register(subparsers):
    from bench.suite import PROFILES
    from bench.estimate import GPUS
    p = subparsers.add_parser("estimate", help="estimate from FLOPs how long a profile's cells take on one GPU "
                                               "(what sizes the ci profile; not a measurement)")
    p.add_argument("suites", nargs="*", default=list(CI_SUITES),
                   help=f"suite files or names (default: {' '.join(CI_SUITES)})")
    p.add_argument("--profile", choices=PROFILES, default="ci", help="default: ci")
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100", help="the GPU's data-sheet peaks (default: h100)")
    p.set_defaults(func=run)


def run(args):
    import pandas as pd
    from bench import estimate
    from bench.measure.base import Context
    from bench.runner import Machine, prepare
    from bench.suite import load_suite, suite_files

    gpu = estimate.GPUS[args.gpu]
    machine = Machine.assumed_runner()
    ctx = Context(profile=args.profile, device="cuda")
    plans = {}
    for path in suite_files(args.suites):
        suite = load_suite(path)
        plans[suite.name] = prepare(suite, args.profile, machine, ctx)[1].groups
    rows = estimate.estimate(plans, gpu)
    frame = pd.DataFrame([{"suite": r.suite, "group": r.label, "PFLOPs": r.flops / 1e15, "minutes": r.seconds / 60}
                          for r in rows])
    print(f"profile {args.profile} on one {gpu.name}, estimated from FLOPs (not measured): sustained "
          f"{estimate.ACHIEVED:.0%} of the dense peak at each cell's precision, "
          f"{estimate.GROUP_SECONDS['quality']:.0f} s per sampling or timing group and "
          f"{estimate.OTHER_GROUP_SECONDS:.0f} s per other group for loading and warm-up, dynamic rows at their "
          f"FLOPs fraction / {estimate.DYNAMIC_REALIZED}")
    if not frame.empty:
        print(frame.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print(f"total: {estimate.total_minutes(rows):.1f} min ({len(rows)} group(s))")
    other = ", ".join(f"{p} {estimate.total_minutes(estimate.estimate(plans, gpu, p)):.1f} min"
                      for p in gpu.peak_tflops)
    print(f"the same groups with every cell at one precision: {other}")
    return 0
