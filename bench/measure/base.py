"""What every measurement module shares: the run context and the Skip signal.

A measurement module exposes `measure(row: dict, metric: str, ctx: Context) -> float`; it raises
Skip(reason) when it cannot run here (missing asset or device), saying what is missing and how to
provide it. Any other exception marks the cell `error`.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


class Skip(Exception):
    """The cell cannot run here; the message says what is missing and how to provide it."""


@dataclass
class Context:
    """What a measurement may use: profile, device, asset root, seed, scratch folder, a shared cache."""
    profile: str = "smoke"
    device: str = "cpu"
    assets_root: Optional[Path] = None
    seed: int = 0
    work_dir: Optional[Path] = None
    cache: dict = field(default_factory=dict)  # e.g. built models shared between cells of one run
    provenance: dict = field(default_factory=dict)  # what measurements add to the result's provenance
