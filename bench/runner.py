"""Runs a suite: decides per cell whether it can run in this profile on this machine, measures each cell in
isolation (an exception marks that cell `error`, the run goes on) and judges it against the paper."""
import importlib
import math
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import List, Optional

from tqdm import tqdm

from bench.measure.base import Context, Skip
from bench.results import ERROR, FAIL, PASS, REFERENCE, SCHEMA, SKIPPED, counts, fmt_value, provenance, utc_now
from bench.suite import MEASUREMENTS, Cell, Suite

NO_CUDA = "a CUDA GPU (torch.cuda.is_available() is False)"
HOW_TO_PROVIDE = ("put assets under --assets DIR or $DYDIT_ASSETS; `python -m bench assets` and the report's "
                  "asset list say where to get each")


@dataclass
class Machine:
    """What this machine offers a cell: CUDA or not, and which assets are present under the assets root."""
    cuda: bool
    assets_root: Optional[Path] = None
    manifest: Optional[dict] = None
    manifest_error: str = ""
    _checked: dict = field(default_factory=dict)  # asset name -> (problem or None, status, message)

    @classmethod
    def here(cls, assets_root=None):
        import torch
        try:
            from bench import assets
            manifest, error = assets.load_manifest(), ""
            assets_root = assets.assets_root(assets_root)
        except (ImportError, OSError, ValueError, KeyError) as e:
            manifest, error = None, f"{type(e).__name__}: {e}"
        return cls(torch.cuda.is_available(), Path(assets_root) if assets_root else None, manifest, error)

    @property
    def device(self):
        return "cuda" if self.cuda else "cpu"

    def _check(self, name):
        """(problem or None, status, full message) of one asset, checked once per run."""
        if name not in self._checked:
            if self.manifest is None:
                self._checked[name] = (f"{name} (unchecked)", "unchecked",
                                       f"{name}: cannot be checked (bench.assets unavailable: {self.manifest_error})")
            else:
                from bench.assets import check_asset
                status = check_asset(name, self.assets_root, self.manifest)
                where = status.path or f"<assets>/{self.manifest[name].path}"
                problem = None if status.status == "present" else f"{name} ({status.status}: {where})"
                self._checked[name] = (problem, status.status, status.message)
        return self._checked[name]

    def asset_problem(self, name) -> Optional[str]:
        """None if the asset is present (checksum included), else '<name> (missing: <where it goes>)'."""
        return self._check(name)[0]

    def asset_report(self) -> dict:
        """Every asset checked so far: {name: {"status", "message"}}, the message saying where to get it."""
        return {name: {"status": status, "message": message} for name, (_, status, message) in self._checked.items()}

    def lacks(self, cell: Cell) -> List[str]:
        """What this machine lacks for a cell: the device, then each missing asset."""
        problems = [NO_CUDA] if cell.device == "cuda" and not self.cuda else []
        return problems + [p for p in map(self.asset_problem, cell.assets) if p]


def blocked(cell: Cell, profile: str, machine: Machine) -> Optional[str]:
    """Why a cell does not run in this profile here (None: it runs); the reason names what is missing."""
    if cell.reference:
        return f"cited, not reproduced: {cell.note}" if cell.note else "cited, not reproduced"
    lacks = machine.lacks(cell)
    missing = f"missing here: {'; '.join(lacks)}" if lacks else ""
    if any(a for a in cell.assets if machine.asset_problem(a)):
        missing += f" ({HOW_TO_PROVIDE})"
    if profile not in cell.profiles:
        return "; ".join(filter(None, [f"not in the {profile} profile (runs in: {', '.join(cell.profiles)})", missing]))
    return missing or None


def default_profile(suite: Suite, machine: Machine) -> str:
    """`full` where CUDA and every asset of the suite's full cells are here, else `smoke`."""
    full = [cell for _, cell in suite.cells() if "full" in cell.profiles and not cell.reference]
    return "full" if machine.cuda and not any(machine.lacks(cell) for cell in full) else "smoke"


def judge(cell: Cell, measured: float):
    """(status, reason) of a measured value against the paper's within the cell's tolerance."""
    lo, hi = cell.tolerance.band(cell.paper)
    closing = ")" if cell.tolerance.kind == "window" else "]"
    band = f"[{fmt_value(lo)}, {fmt_value(hi)}{closing}"
    if cell.tolerance.accepts(cell.paper, measured):
        return PASS, f"{fmt_value(measured)} is in {band} (paper {cell.paper:g}, {cell.tolerance.text()})"
    return FAIL, f"{fmt_value(measured)} is outside {band} (paper {cell.paper:g}, {cell.tolerance.text()})"


def _module(cell: Cell):
    """The measurement module of a cell; Skip where this checkout does not have it yet."""
    name = MEASUREMENTS[cell.measure]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            raise Skip(f"measurement module {name} is not in this checkout") from e
        raise


def run_cell(row, cell: Cell, profile: str, machine: Machine, ctx: Context) -> dict:
    """Measures and judges one cell; never raises (but for KeyboardInterrupt)."""
    out = {"row": cell.row, "column": cell.column, "metric": cell.metric, "paper": cell.paper, "measured": None,
           "unit": cell.unit, "tolerance": cell.tolerance.to_dict() if cell.tolerance else None,
           "status": None, "reason": "", "erratum": cell.erratum, "kind": cell.kind,
           "profiles": list(cell.profiles), "assets": list(cell.assets), "device": cell.device, "seconds": 0.0}
    reason = blocked(cell, profile, machine)
    if reason is not None:
        out.update(status=REFERENCE if cell.reference else SKIPPED, reason=reason)
        return out
    start = perf_counter()
    try:
        import torch
        torch.manual_seed(ctx.seed)  # each cell starts from the same RNG state, whatever ran before it
        value = _module(cell).measure(row.spec(cell), cell.metric, ctx)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"measurement returned {value!r}, expected a finite number")
        out["measured"] = float(value)
        out["status"], out["reason"] = judge(cell, float(value))
    except Skip as e:
        out.update(status=SKIPPED, reason=str(e))
    except Exception as e:  # isolation: this cell is an error, the run goes on
        frame = traceback.extract_tb(e.__traceback__)[-1]
        out.update(status=ERROR, reason=f"{type(e).__name__}: {e} ({Path(frame.filename).name}:{frame.lineno})")
    out["seconds"] = round(perf_counter() - start, 3)
    return out


def run_section(section: dict, profile: str, ctx: Context) -> dict:
    """An extra section (e.g. the pipeline check): `module.run(ctx) -> {title, note, rows}`, isolated."""
    title = section["title"]
    if profile not in section["profiles"]:
        return {"title": title, "note": f"not run in the {profile} profile (runs in: {', '.join(section['profiles'])})",
                "rows": [], "status": SKIPPED}
    try:
        produced = importlib.import_module(section["measure"]).run(ctx)
        if not isinstance(produced, dict) or not isinstance(produced.get("rows", []), list):
            raise TypeError(f"{section['measure']}.run returned {type(produced).__name__}, expected a dict with rows")
        return {"title": produced.get("title", title), "note": produced.get("note", ""),
                "rows": [dict(r) for r in produced.get("rows", [])], "status": produced.get("status", PASS)}
    except Exception as e:  # same isolation as cells
        return {"title": title, "note": f"error: {type(e).__name__}: {e}", "rows": [], "status": ERROR}


def run_suite(suite: Suite, profile: str, machine: Machine, ctx: Context, argv=()) -> dict:
    """Runs every cell and section of a suite -> the result dict written to reports/<suite>.json."""
    started = utc_now()
    pairs = list(suite.cells())
    cells = []
    with tqdm(pairs, desc=f"{suite.name} [{profile}]", unit="cell", file=sys.stderr, dynamic_ncols=True) as bar:
        for row, cell in bar:
            bar.set_postfix_str(f"{row.name} / {cell.column}", refresh=False)
            cells.append(run_cell(row, cell, profile, machine, ctx))
    sections = [run_section(s, profile, ctx) for s in suite.sections]
    return {
        "schema": SCHEMA,
        "suite": suite.name,
        "title": suite.title,
        "source": suite.source,
        "notes": suite.notes,
        "profile": profile,
        "provenance": provenance(suite.path, ctx, argv, started),
        "columns": [{"key": c.key, "label": c.label, "metric": c.metric, "unit": c.unit} for c in suite.columns],
        "rows": [{"name": r.name, "model": r.model, "variant": r.variant, "reference": r.reference, "note": r.note}
                 for r in suite.rows],
        "plots": suite.plots,
        "cells": cells,
        "sections": sections,
        "assets": machine.asset_report(),
        "counts": counts(cells),
    }
