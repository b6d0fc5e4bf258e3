"""`python -m bench baseline check|accept|calibrate|fingerprint`: the regression gate of a GPU runner
(bench/baseline.py).

    python -m bench baseline accept                 # reports/*.json become this hardware's baseline
    python -m bench baseline calibrate              # the ci profile's FID-5K cells again with seeds 1 and 2
    python -m bench baseline check --require        # the gate: exit 1 on a regression
"""
import dataclasses

from bench.cli import args as types


def register(subparsers):
    p = subparsers.add_parser("baseline", help="compare reports/ with the stored baseline of this hardware "
                                                "(exit 1 on a regression), accept reports/ as the baseline, or "
                                                "calibrate the spread of its measured (FID-5K) cells")
    p.add_argument("action", choices=("check", "accept", "calibrate", "fingerprint"),
                   help="check: compare; accept: copy reports/*.json to the baseline folder; calibrate: run the "
                        "baseline's measured cells with more sampling seeds and store their spread beside it; "
                        "fingerprint: print it")
    p.add_argument("--reports", default="reports", help="folder of result JSON (default: reports)")
    p.add_argument("--baselines", default="baselines", help="baseline root, one folder per fingerprint (default: "
                                                             "baselines)")
    p.add_argument("--require", action="store_true", help="check: fail when a suite has no baseline yet, or a baseline has no current result")
    p.add_argument("--seeds", type=types.non_negative_int, nargs="+", default=None, metavar="SEED",
                   help="calibrate: the extra sampling seeds (default: 1 2; at least 2, none equal to a cell's own)")
    p.add_argument("--assets", default=None, help="calibrate: assets root (default: $DYDIT_ASSETS)")
    p.add_argument("--work-dir", default=None, help="calibrate: scratch folder (default: REPORTS/work)")
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
    if args.action == "calibrate":
        return calibrate(args)
    result = baseline.check(args.reports, args.baselines)
    print("\n".join(result.lines + [f"missing    {m}" for m in result.missing]
                    + [f"unmeasured {m}" for m in result.unmeasured]))
    print(f"baseline check: {result.compared_suites} suite(s) compared, {result.regressions} regression(s), "
          f"{len(result.missing)} without a baseline, {len(result.unmeasured)} baseline(s) without a current result")
    if not result.ok:
        return 1
    return 1 if args.require and (result.missing or result.unmeasured) else 0


def calibrate(args):
    """The measured cells of this machine's baseline (the fingerprint of reports/), run again per extra seed."""
    from bench import baseline, preflight
    from bench.measure.base import Context
    from bench.results import ResultError, load_result, result_files
    from bench.runner import Machine, run_suite
    from bench.suite import load_suite
    from dydit.errors import UserError

    seeds = tuple(args.seeds or baseline.CALIBRATION_SEEDS)
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {' '.join(map(str, seeds))}: a seed is listed twice; give distinct seeds")
    if len(seeds) < baseline.MIN_SEEDS - 1:
        raise UserError(f"--seeds: give at least {baseline.MIN_SEEDS - 1} (with the baseline's own, {baseline.MIN_SEEDS} "
                        f"values: fewer make the bound meaningless)")
    found = result_files(args.reports)
    if not found:
        raise ResultError(f"no result JSON in {args.reports}: run the ci profile and accept it first")
    folders = {baseline.baseline_folder(args.baselines, load_result(p)) for p in found}
    if len(folders) != 1:
        raise UserError(f"{args.reports} holds results of several machines or profiles (baselines "
                        f"{', '.join(map(str, sorted(folders)))}): calibrate on the runner itself, after one profile")
    machine = Machine.here(args.assets)
    work_dir = preflight.writable_folder(args.work_dir or f"{args.reports}/work", "--work-dir")

    def run_cells(suite_file, keys, seed):
        suite = load_suite(suite_file)
        wanted = set(keys)
        for row in suite.rows:
            for key, cell in list(row.cells.items()):
                if (row.name, key) not in wanted:
                    del row.cells[key]
                elif cell.sampler.seed == seed:
                    raise UserError(f"--seeds: {seed} is the suite's own seed of {row.name} / {key}: choose others")
                else:
                    row.cells[key] = dataclasses.replace(cell, sampler=dataclasses.replace(cell.sampler, seed=seed))
        suite.rows = [r for r in suite.rows if r.cells]
        suite.sections = []
        ctx = Context(profile="ci", device=machine.device, assets_root=machine.assets_root, work_dir=work_dir)
        print(f"calibrate: {suite.name}, {len(keys)} cell(s), sampling seed {seed}", flush=True)
        result = run_suite(suite, "ci", machine, ctx, ["baseline", "calibrate"])
        return {(c["row"], c["column"]): c["measured"] for c in result["cells"] if c["measured"] is not None}

    path = baseline.calibrate(folders.pop(), run_cells, seeds)
    for (suite, row, column), cell in baseline.load_calibration(path.parent).items():
        print(f"calibrated {suite} / {row} / {column}: {', '.join(f'{v:.3f}' for v in cell.values)} -> judged "
              f"against {cell.center:.3f}, {cell.tolerance.kind} {cell.tolerance.value:.3f}")
    print(f"wrote {path}: commit it beside the baseline")
    return 0
