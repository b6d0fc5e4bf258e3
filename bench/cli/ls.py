"""`python -m bench ls [SUITE...]`: suites, their rows, and which cells each profile can run on this machine."""
import sys

from bench.suite import PROFILES


def register(subparsers):
    p = subparsers.add_parser("ls", help="list suites, rows and the cells each profile can run here")
    p.add_argument("suites", nargs="*", metavar="SUITE", help="suite file or name (default: all)")
    p.add_argument("--assets", default=None, help="assets root (default: $DYDIT_ASSETS)")
    p.set_defaults(func=run)


def row_plan(suite, row, machine):
    """{profile: "cells that run here (N not here)"} for one row, in column order (auto = what `run` does)."""
    from bench.runner import AUTO, decide
    plan = {}
    for profile in (AUTO, *PROFILES):
        cells = [row.cells[col.key] for col in suite.columns if col.key in row.cells and not row.cells[col.key].reference]
        runs = [c.column for c in cells if decide(c, profile, machine).profile is not None]
        text = ", ".join(runs) or "—"
        plan[profile] = text + (f" ({len(cells) - len(runs)} not here)" if len(runs) < len(cells) else "")
    return plan


def run(args):
    import pandas as pd

    from bench.runner import AUTO, Machine
    from bench.suite import SuiteError, load_suites
    machine = Machine.here(args.assets)
    print(f"this machine: {'CUDA' if machine.cuda else 'no CUDA'}; assets root: {machine.assets_root or 'not set'}")
    status = 0
    for path, suite in load_suites(args.suites):
        if isinstance(suite, SuiteError):
            print(f"error: {suite}", file=sys.stderr, flush=True)  # an input error: stderr, exit 2
            status = 2
            continue
        print(f"\n{suite.name}: {suite.title} ({path})")
        lines = [{"row": row.name, "model": "cited" if row.reference else row.model,
                  **({p: "—" for p in (AUTO, *PROFILES)} if row.reference else row_plan(suite, row, machine))}
                 for row in suite.rows]
        frame = pd.DataFrame(lines).rename(columns={p: f"{p}: runs here" for p in (AUTO, *PROFILES)})
        left = {col: f"{{:<{frame[col].str.len().max()}}}".format for col in frame.columns}
        print(frame.to_string(index=False, formatters=left, justify="left"))
        cells = [c for _, c in suite.cells() if not c.reference]
        missing = sorted({a for c in cells for a in c.assets if machine.asset_problem(a)})
        missing += ["a CUDA GPU"] if any(c.device == "cuda" for c in cells) and not machine.cuda else []
        if missing:
            print(f"missing here: {', '.join(missing)} (`python -m bench run` names each and how to provide it)")
    return status
