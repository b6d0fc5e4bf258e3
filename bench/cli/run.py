"""`python -m bench run SUITE`: runs a suite, writes reports/<suite>.json, renders the HTML report."""
import dataclasses
import os
import sys
import time

from bench.cli import args as types
from bench.suite import PROFILES
from dydit.errors import UserError

RETRAIN_SINCE = "DYDIT_RETRAIN_SINCE"  # --retrain rebuilds models built before this time (seconds since epoch)


def register(subparsers):
    p = subparsers.add_parser("run", help="run a suite: result JSON + HTML report (smoke on CPU / without assets)")
    p.add_argument("suite", help="suite file or name, e.g. suites/table1.toml or table1")
    p.add_argument("--profile", choices=(*PROFILES, "auto"), default="auto",
                   help="auto (default): every cell in the richest of its profiles this machine can run (full "
                        "where its GPU and assets are here, else smoke); smoke or full: only that profile's cells")
    p.add_argument("--out", default="reports", help="folder for <suite>.json, <suite>.html, index.html")
    p.add_argument("--baseline", default=None, metavar="FILE",
                   help="compare with this earlier result JSON; exit 1 on a regression")
    p.add_argument("--assets", default=None, help="assets root (default: $DYDIT_ASSETS)")
    p.add_argument("--seed", type=types.non_negative_int, default=0, help="global seed given to every measurement")
    p.add_argument("--work-dir", default=None, help="scratch folder for measurements (default: OUT/work)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None,
                   help="default: cuda when present; cpu runs as if there were no GPU (CUDA-only cells skip, the "
                        "mini trains and samples on the CPU)")
    p.add_argument("--retrain", action="store_true",
                   help="rebuild the models a suite trains itself (the mini reproduction) instead of their cache")
    p.add_argument("--retime", action="store_true",
                   help="time again what an earlier run on this machine kept (timings of the models a suite trains "
                        "itself are reused for the same models, code and machine; WORK_DIR/timings)")
    p.add_argument("--train-jobs", type=types.non_negative_int, default=0,
                   help="models a suite trains itself (the mini) are trained this many at a time before they are "
                        "measured (default 0: one per CPU core on a CPU, 1 on CUDA; 1: each when it is measured)")
    p.set_defaults(func=run)


def command_line(args, profile):
    """The effective command: what to type to run this again (the profile as resolved)."""
    argv = ["run", str(args.suite), "--profile", profile, "--out", str(args.out), "--seed", str(args.seed)]
    for flag, value in (("--assets", args.assets), ("--baseline", args.baseline), ("--work-dir", args.work_dir),
                        ("--device", args.device)):
        if value:
            argv += [flag, str(value)]
    if args.train_jobs:
        argv += ["--train-jobs", str(args.train_jobs)]
    return argv + (["--retrain"] if args.retrain else []) + (["--retime"] if args.retime else [])


def run(args):
    from bench import preflight
    from bench.compare import compare, report
    from bench.measure.base import Context
    from bench.report.render import render_index, render_suite
    from bench.results import load_result, result_files, summary_line
    from dydit.fileio import write_json_atomic
    from bench.runner import Machine, plan_table, prepare, run_suite
    from bench.suite import load_suite, suite_files

    suite = load_suite(suite_files([args.suite])[0])
    # everything this run reads or writes, checked before measuring: an hour of work must not end in an error
    baseline = load_result(args.baseline) if args.baseline else None
    out = preflight.writable_folder(args.out, "--out", names=[f"{suite.name}.json", f"{suite.name}.html"])
    result_files(out)  # the index is rendered from every result there: a corrupt one fails now, not at the end
    work_dir = preflight.writable_folder(args.work_dir or out / "work", "--work-dir")
    machine = Machine.here(args.assets)
    if args.device == "cuda" and not machine.cuda:
        raise UserError("--device cuda, but torch sees no CUDA GPU here (torch.cuda.is_available() is False): drop "
                        "--device or install a CUDA build of torch")
    if args.device == "cpu":
        machine = dataclasses.replace(machine, cuda=False)
    profile = args.profile
    # --retrain: rebuild what was built before this run, or before $DYDIT_RETRAIN_SINCE (set by noxfile.py for
    # a whole session, so that a model several suites share is rebuilt once)
    retrain = float(os.environ.get(RETRAIN_SINCE, time.time())) if args.retrain else False
    ctx = Context(profile=profile, device=machine.device, assets_root=machine.assets_root, seed=args.seed,
                  work_dir=work_dir, retrain=retrain, train_jobs=args.train_jobs,
                  retime=args.retime or args.retrain)
    prepared = prepare(suite, profile, machine, ctx)
    print(f"{suite.name}: {suite.title} [profile {profile}, {'CUDA' if machine.cuda else 'no CUDA'}, assets root "
          f"{machine.assets_root or 'not set'}]\n{plan_table(prepared[1])}", flush=True)
    try:
        result = run_suite(suite, profile, machine, ctx, command_line(args, profile), prepared)
    except KeyboardInterrupt:
        # --retrain: what this run rebuilt is kept, what it had not reached yet is still rebuilt on the rerun
        since = f"{RETRAIN_SINCE}={retrain:.0f} " if args.retrain else ""
        rerun = since + " ".join(["python -m bench", *command_line(args, profile)])
        print(f"interrupted: no result was written. Kept in {work_dir}: every model trained and every evaluation "
              f"finished so far (the mini's cache), the sample shards of each FID cell. Resume: {rerun}",
              file=sys.stderr)
        return 130
    json_path = write_json_atomic(result, out / f"{suite.name}.json")
    page = render_suite(result, out)
    index = render_index(out)
    print(summary_line(result))
    print(f"results: {json_path.resolve()}\nreport:  {page.resolve()}\nindex:   {index.resolve()}")
    if baseline is None:
        return 0
    comparison = compare(baseline, result)
    print(report(comparison, args.baseline, str(json_path)))
    return 0 if comparison.ok else 1
