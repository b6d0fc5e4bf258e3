"""`python -m bench compare OLD.json NEW.json`: prints regressions and improvements (each judged in its
metric's better direction); exit status 1 if there is any regression, improvements alone exit 0."""


def register(subparsers):
    p = subparsers.add_parser("compare", help="regressions and improvements between two result JSON files "
                                               "(exit 1 on any regression)")
    p.add_argument("old", help="baseline result JSON (e.g. the last good run)")
    p.add_argument("new", help="result JSON to check")
    p.set_defaults(func=run)


def run(args):
    from bench.compare import compare, report
    from bench.results import load_result
    comparison = compare(load_result(args.old), load_result(args.new))
    print(report(comparison, args.old, args.new))
    return 0 if comparison.ok else 1
