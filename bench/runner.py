"""Runs a suite: decides per cell whether it can run in this profile on this machine, measures each cell in
isolation (an exception marks that cell `error`, the run goes on) and judges it against the paper."""
import importlib
import math
import sys
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from time import perf_counter
from typing import List, Optional

from tqdm import tqdm

from bench.measure.base import Context, Skip
from bench.results import ERROR, FAIL, PASS, REFERENCE, SCHEMA, SKIPPED, counts, fmt_value, provenance, utc_now
from bench.suite import MEASUREMENTS, Cell, Suite

AUTO = "auto"  # run-time profile: each cell in the richest of its profiles this machine can run
RICHEST_FIRST = ("full", "smoke")
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
                make = self.manifest[name].make
                problem = None if status.status == "present" else \
                    f"{name} ({status.status}: {where}" + (f"; no public file, make it: {make}" if make else "") + ")"
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
    if cell.unavailable:
        return cell.unavailable
    lacks = machine.lacks(cell)
    missing = f"missing here: {'; '.join(lacks)}" if lacks else ""
    if any(a for a in cell.assets if machine.asset_problem(a)):
        missing += f" ({HOW_TO_PROVIDE})"
    if profile not in cell.profiles:
        return "; ".join(filter(None, [f"not in the {profile} profile (runs in: {', '.join(cell.profiles)})", missing]))
    return missing or None


@dataclass
class Decision:
    """What the runner will do with one cell here: run it in `profile`, or not, and why (short and full)."""
    row: str
    column: str
    profile: Optional[str]  # the profile the cell runs in; None: it does not run
    reason: str = ""  # full reason when it does not run (names the missing asset and where it goes)
    why: str = ""  # the same, short, for the plan table
    cited: bool = False


def decide(cell: Cell, profile: str, machine: Machine) -> Decision:
    """Whether and in which profile a cell runs. `auto`: the richest of its profiles this machine can run
    (full before smoke), so a GPU with the DiT assets runs DiT's quality cells whatever else is missing."""
    if cell.reference or cell.unavailable:
        reason = blocked(cell, profile if profile != AUTO else cell.profiles[0], machine)
        return Decision(cell.row, cell.column, None, reason, "cited" if cell.reference else reason, cell.reference)
    candidates = [p for p in RICHEST_FIRST if p in cell.profiles] if profile == AUTO else [profile]
    for p in candidates:
        if blocked(cell, p, machine) is None:
            return Decision(cell.row, cell.column, p)
    tried = candidates[0] if profile == AUTO or profile in cell.profiles else profile
    lacks = machine.lacks(cell)
    why = ("needs " + ", ".join(_short(x) for x in lacks)) if lacks and tried in cell.profiles \
        else f"not in the {profile} profile"
    return Decision(cell.row, cell.column, None, blocked(cell, tried, machine), why)


def _short(problem: str) -> str:
    """'dit-xl-2 (missing: /x/y.pt)' -> 'dit-xl-2'; 'a CUDA GPU (...)' -> 'a CUDA GPU'."""
    return problem.split(" (", 1)[0]


def plan(suite: Suite, profile: str, machine: Machine) -> List[Decision]:
    """The decision for every cell of a suite, in table order."""
    return [decide(cell, profile, machine) for _, cell in suite.cells()]


def plan_table(decisions: List[Decision]) -> str:
    """The short table `bench run` prints before it starts: cells per (what happens, why)."""
    import pandas as pd
    frame = pd.DataFrame([{"cells": 1, "what": "cited" if d.cited else (f"run ({d.profile})" if d.profile else "skip"),
                           "why": "" if d.profile or d.cited else d.why} for d in decisions])
    table = frame.groupby(["what", "why"], sort=False, as_index=False)["cells"].sum()[["cells", "what", "why"]]
    runs = int(frame.loc[frame["what"].str.startswith("run"), "cells"].sum())
    cited = int((frame["what"] == "cited").sum())
    head = f"{runs} cell(s) will run, {len(frame) - runs - cited} skip, {cited} cited"
    left = {col: f"{{:<{max(table[col].str.len().max(), len(col))}}}".format for col in ("what", "why")}
    return head + "\n" + table.to_string(index=False, justify="left", formatters=left)


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
    decision = decide(cell, profile, machine)
    if decision.profile is None:
        out.update(status=REFERENCE if cell.reference else SKIPPED, reason=decision.reason)
        return out
    out["profile"] = decision.profile
    ctx = replace(ctx, profile=decision.profile)  # the cache dict stays shared between cells
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


def run_section(section: dict, profile: str, ctx: Context, machine: Optional[Machine] = None) -> dict:
    """An extra section (e.g. the pipeline check): `module.run(ctx) -> {title, note, rows}`, isolated and judged.

    Every row is a check {name, value, unit, ok, expected}: the section passes only if each row says
    ok=True; a row that is not judged (no boolean `ok`) makes the section an error, never a pass."""
    title = section["title"]
    chosen = profile
    if profile == AUTO:  # smoke sections always (they need nothing); full ones where CUDA is here
        chosen = "smoke" if "smoke" in section["profiles"] else "full" if machine and machine.cuda else None
    if chosen not in section["profiles"]:
        return {"title": title, "note": f"not run in the {profile} profile (runs in: {', '.join(section['profiles'])})",
                "rows": [], "status": SKIPPED}
    try:
        produced = importlib.import_module(section["measure"]).run(replace(ctx, profile=chosen))
        if not isinstance(produced, dict) or not isinstance(produced.get("rows", []), list):
            raise TypeError(f"{section['measure']}.run returned {type(produced).__name__}, expected a dict with rows")
        rows = [dict(r) for r in produced.get("rows", [])]
        unjudged = [r.get("name", "?") for r in rows if not isinstance(r.get("ok"), bool)]
        if unjudged or not rows:
            raise TypeError(f"{section['measure']}.run returned "
                            + (f"rows without a boolean 'ok': {', '.join(unjudged)}" if rows else "no checks"))
        failed = [r["name"] for r in rows if not r["ok"]]
        note = produced.get("note", "")
        if failed:
            note = f"FAILED: {'; '.join(failed)}. " + note
        return {"title": produced.get("title", title), "note": note, "rows": rows, "status": FAIL if failed else PASS,
                "figures": [dict(f) for f in produced.get("figures", [])]}
    except Exception as e:  # same isolation as cells
        return {"title": title, "note": f"error: {type(e).__name__}: {e}", "rows": [], "status": ERROR}


def run_suite(suite: Suite, profile: str, machine: Machine, ctx: Context, argv=()) -> dict:
    """Runs every cell and section of a suite -> the result dict written to reports/<suite>.json."""
    started = utc_now()
    pairs = list(suite.cells())
    # what every measured cell will ask for, so a measurement can plan across cells (bench.measure.loop
    # times all of a sampler's paths interleaved in one run)
    # (only cells that run in this profile here: a full-only cell must not be timed in smoke beside its setup)
    ctx.cache["suite_cells"] = [(row.spec(cell), cell.metric, cell.measure) for row, cell in pairs
                                if decide(cell, profile, machine).profile is not None]
    cells = []
    with tqdm(pairs, desc=f"{suite.name} [{profile}]", unit="cell", file=sys.stderr, dynamic_ncols=True) as bar:
        for row, cell in bar:
            bar.set_postfix_str(f"{row.name} / {cell.column}", refresh=False)
            cells.append(run_cell(row, cell, profile, machine, ctx))
    # a section may draw the cells (bench.scaling_section's figure): results, and each row's model and options
    ctx.cache["suite_results"] = cells
    ctx.cache["suite_rows"] = {row.name: row.spec(cell) for row, cell in pairs}
    sections = [run_section(s, profile, ctx, machine) for s in suite.sections]
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
