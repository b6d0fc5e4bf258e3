"""What the subcommands' options accept, checked when the command line is parsed: a wrong value is one `error:`
line naming the option and the fix, before anything is loaded or measured.

    p.add_argument("--steps", type=args.positive_int)
    p.add_argument("--model", type=args.model_name(dynamic=True))
"""
import argparse
import difflib
import math
import sys


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line: `error: <command>: <what>` and the --help to read; exit 2."""

    def error(self, message):
        print(f"error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def positive_int(text: str) -> int:
    """An integer >= 1 (steps, counts, batch sizes)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer: give 1 or more")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds, intervals where 0 means off)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give 0 or more")
    return value


def cfg_scale(text: str) -> float:
    """A classifier-free guidance scale: finite and >= 1 (1 = no guidance)."""
    value = _float(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is below 1: a guidance scale is >= 1 (1 = no guidance)")
    return value


def fraction(text: str) -> float:
    """A fraction in (0, 1] (lambda, the target FLOPs / the static model's)."""
    value = _float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is outside (0, 1]: a FLOPs fraction is above 0 and at most 1")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (budgets where 0 means none)."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative: give 0 or more")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (timeouts, sizes)."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def model_name(dynamic=None, flux=False, video=False):
    """A model name of the registry (dynamic=True: a DyDiT-family name only; flux: FLUX's names too; video: Latte's);
    an unknown one gets the nearest."""
    def parse(text: str) -> str:
        from dydit import registry
        known = {**registry.MODELS, **(registry.FLUX_MODELS if flux else {}), **(registry.LATTE_MODELS if video else {})}
        names = [n for n, e in known.items() if dynamic is None or e.is_dynamic == dynamic]
        if text in names:
            return text
        near = difflib.get_close_matches(text, names, n=1, cutoff=0.5)
        if text in registry.MODELS:  # a name of the other kind: its counterpart
            entry = registry.MODELS[text]
            near = [entry.dynamic if dynamic else entry.static]
        kind = "a dynamic model" if dynamic else "a static model" if dynamic is False else "a model"
        hint = f"did you mean {near[0]}?" if near else f"one of {', '.join(names[:6])}, ... (`python -m bench info " \
                                                        f"--list`)"
        raise argparse.ArgumentTypeError(f"{text!r} is not {kind} of the registry: {hint}")
    parse.__name__ = "model name"
    return parse


def device(text: str) -> str:
    """cpu, cuda or cuda:N, and only a GPU that exists here."""
    if text == "cpu":
        return text
    if text != "cuda" and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: give cpu, cuda or cuda:N")
    import torch
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(text[5:]) if ":" in text else 0
    if index >= count:
        have = f"{count} CUDA GPU(s)" if count else "no CUDA GPU (torch.cuda.is_available() is False)"
        raise argparse.ArgumentTypeError(f"{text}: torch sees {have} here: give cpu, or leave the option out")
    return text


def text_file(text: str) -> str:
    """A readable UTF-8 text file (a list of prompts); its text."""
    from pathlib import Path
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise argparse.ArgumentTypeError(f"{text}: cannot be read as UTF-8 text ({type(e).__name__})") from None


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value
