"""`python -m bench baseline check|accept|fingerprint`: the regression gate of a GPU runner (bench/baseline.py)."""


def register(subparsers):
    p = subparsers.add_parser("baseline", help="compare reports/ with the stored baseline of this hardware "
                                                "(exit 1 on a regression), or accept reports/ as the baseline")
    p.add_argument("action", choices=("check", "accept", "fingerprint"),
                   help="check: compare; accept: copy reports/*.json to the baseline folder; fingerprint: print it")
    p.add_argument("--reports", default="reports", help="folder of result JSON (default: reports)")
    p.add_argument("--baselines", default="baselines", help="baseline root, one folder per fingerprint (default: "
                                                             "baselines)")
    p.add_argument("--require", action="store_true", help="check: fail when a suite has no baseline yet, or a baseline has no current result")
    p.set_defaults(func=run)


def run(args):
    from bench import baseline
    from bench.results import load_result, result_files
    if args.action == "fingerprint":
        for path in result_files(args.reports):
            print(f"{path.name}: {baseline.fingerprint(load_result(path))}")
        return 0
    if args.action == "accept":
        for path in baseline.accept(args.reports, args.baselines):
            print(f"accepted {path}")
        print(f"commit {args.baselines}/ to keep it as the baseline")
        return 0
    result = baseline.check(args.reports, args.baselines)
    print("\n".join(result.lines + [f"missing    {m}" for m in result.missing]
                    + [f"unmeasured {m}" for m in result.unmeasured]))
    print(f"baseline check: {result.compared_suites} suite(s) compared, {result.regressions} regression(s), "
          f"{len(result.missing)} without a baseline, {len(result.unmeasured)} baseline(s) without a current result")
    if not result.ok:
        return 1
    return 1 if args.require and (result.missing or result.unmeasured) else 0
