"""`python -m bench validate [SUITE...]`: checks suite files; one line per file (a malformed one: `error:` on stderr,
exit 2)."""
import sys


def register(subparsers):
    p = subparsers.add_parser("validate", help="check suite files (default: every suite in suites/)")
    p.add_argument("suites", nargs="*", metavar="SUITE", help="suite file or name (e.g. table1)")
    p.set_defaults(func=run)


def run(args):
    from bench.suite import SuiteError, load_suites
    bad = 0
    for path, suite in load_suites(args.suites):
        if isinstance(suite, SuiteError):
            print(f"error: {suite}", file=sys.stderr, flush=True)  # an input error: stderr, exit 2
            bad += 1
            continue
        cells = [cell for _, cell in suite.cells()]
        unavailable = sum(1 for cell in cells if cell.unavailable)
        print(f"ok: {path}: suite {suite.name}, {len(suite.rows)} rows, {len(suite.columns)} columns, "
              f"{len(cells)} cells" + (f" ({unavailable} not measurable yet: `unavailable`)" if unavailable else ""))
    return 2 if bad else 0
