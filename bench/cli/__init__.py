"""The `python -m bench` subcommands: one module each, with `register(subparsers)` and `run(args)`."""
import argparse
import importlib

# subcommand modules, in the order `--help` lists them
COMMANDS = ["info", "speed", "sample", "evaluate", "assets", "ls", "validate", "run", "report", "compare", "baseline", "train",
            "mini-spread"]


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m bench", description="DyDiT reproducibility suite")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"bench.cli.{name.replace('-', '_')}").register(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args) or 0
