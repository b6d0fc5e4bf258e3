"""`python -m bench <command>`: the subcommands live in bench/cli/, one module each."""
import sys

from bench.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
