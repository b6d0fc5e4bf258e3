"""The `python -m bench` subcommands: one module each, with `register(subparsers)` and `run(args)`.

A mistake a user can fix (dydit.errors.UserError, or a wrong option) is one `error:` line and exit 2; with
--debug (or BENCH_DEBUG=1) its traceback too. Anything else is a bug: its traceback and one line saying so.
SIGTERM is handled as Ctrl-C: the command keeps its work and prints how to resume.
The subcommand modules import torch, diffusers and the metrics where they run, not at load: `--help`, `ls`,
`validate` and `baseline` start without them.
"""
import importlib
import os
import signal
import sys
import traceback

from bench.cli.args import Parser
from dydit.errors import UserError

# subcommand modules, in the order `--help` lists them
COMMANDS = ["info", "speed", "sample", "evaluate", "assets", "ls", "validate", "run", "report", "compare", "baseline", "train",
            "mini-spread", "device-check", "estimate", "fvd-reference"]
DEBUG_ENV = "BENCH_DEBUG"
BUG_REPORT = "this is a bug in the suite, not in your input: please report it with the traceback above"


def build_parser():
    parser = Parser(prog="python -m bench", description="DyDiT reproducibility suite")
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks of input errors too (or {DEBUG_ENV}=1)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"bench.cli.{name.replace('-', '_')}").register(subparsers)
    return parser


def debug_wanted(args) -> bool:
    """--debug or BENCH_DEBUG=1: input errors show their traceback too."""
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def main(argv=None):
    args = build_parser().parse_args(argv)
    debug = debug_wanted(args)
    # SIGTERM (a scheduler's stop) is handled as Ctrl-C is: the command keeps its work and says how to resume
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return args.func(args) or 0
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: `python -m bench {args.command}` stopped (what it finished is kept; see its --help "
              f"to resume)", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001  (not an input error: the traceback is the report)
        traceback.print_exc()
        print(BUG_REPORT, file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def one_line(error) -> str:
    """An error's message on one line (a checkpoint's size-mismatch line kept beside the first)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    size = [ln for ln in lines[1:] if ln.startswith("size mismatch")]
    return " ".join(lines[:1] + size) if lines else type(error).__name__
