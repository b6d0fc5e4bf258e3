"""`python -m bench report`: re-renders reports/*.html and reports/index.html from the result JSON there."""


def register(subparsers):
    p = subparsers.add_parser("report", help="re-render the HTML report from existing result JSON")
    p.add_argument("--out", default="reports", help="folder holding the result JSON (pages are written there)")
    p.set_defaults(func=run)


def run(args):
    from pathlib import Path

    from bench.report.render import render_all
    from bench.results import ResultError, result_files
    if not Path(args.out).is_dir():
        raise ResultError(f"--out {args.out} is not a folder: run `python -m bench run SUITE --out {args.out}` first")
    if not result_files(args.out):  # reads every result first: a corrupt one fails before a page is written
        raise ResultError(f"no result JSON in {args.out}: run `python -m bench run SUITE --out {args.out}` first")
    for page in render_all(args.out):
        print(page)
    return 0
