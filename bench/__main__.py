"""`python -m bench <command>`: each command lives in its own module with `register(subparsers)`."""
import argparse
import importlib
import sys

# command modules, in the order `--help` lists them; each defines register(subparsers)
COMMAND_MODULES = [
    "bench.cli_info",
    "bench.cli_speed",
    "bench.cli_sample",
    "bench.cli_assets",
    "bench.cli_ls",
    "bench.cli_validate",
    "bench.cli_run",
    "bench.cli_report",
    "bench.cli_compare",
]


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m bench", description="DyDiT reproducibility suite")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
