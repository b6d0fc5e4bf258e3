"""Runs a suite: decides per cell whether it can run in this profile on this machine, groups the cells that run
as their measurement groups them (one sampling run, one timed loop, one trained mini model), measures each
group once in isolation (an exception marks its cells `error`, the run goes on), judges every cell against
the paper, then hands the judged cells and each measurement's record to the report sections.

    suite file -> Suite (bench.suite) -> Plan (decisions + groups) -> Measurement.measure_group -> model"""
import importlib
import math
import sys
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from time import perf_counter
from typing import Dict, List, Optional

from tqdm import tqdm

from bench.measure.base import Context, Group, Item, Measured, Measurement, Skip
from bench.results import (ERROR, FAIL, INCONCLUSIVE, MEASURED, PASS, REFERENCE, SCHEMA, SKIPPED, counts, fmt_value,
                           provenance, utc_now)
from bench.definitions import MEASUREMENTS
from bench.suite import Cell, SectionSpec, Suite
from dydit.errors import UserError

AUTO = "auto"  # run-time profile: each cell in the richest of its profiles this machine can run
RICHEST_FIRST = ("full", "smoke")
NO_CUDA = "a CUDA GPU (torch.cuda.is_available() is False)"
HOW_TO_PROVIDE = ("put assets under --assets DIR or $DYDIT_ASSETS; `python -m bench assets` and the report's "
                  "asset list say where to get each")


# NVIDIA (kernel driver, device nodes a container gets), WSL2's GPU, ROCm
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")


def cuda_available() -> bool:
    """torch.cuda.is_available(); on a Linux machine without any GPU driver the answer is no without importing
    torch (`bench ls` starts in well under a second on a CPU machine)."""
    if sys.platform.startswith("linux") and not any(Path(p).exists() for p in GPU_DRIVER_PATHS):
        return False
    import torch
    return torch.cuda.is_available()


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
        try:
            from bench import assets
            manifest, error = assets.load_manifest(), ""
            assets_root = assets.assets_root(assets_root)
        except UserError:  # a root or manifest the user named that is wrong: refused before anything runs
            raise
        except (ImportError, OSError, ValueError, KeyError) as e:
            manifest, error = None, f"{type(e).__name__}: {e}"
        return cls(cuda_available(), Path(assets_root) if assets_root else None, manifest, error)

    @classmethod
    def assumed_runner(cls):
        """A GPU runner with every asset present (what bench.estimate plans for; nothing is checked or read)."""
        from bench import assets
        manifest = assets.load_manifest()
        return cls(True, None, manifest, "", {name: (None, "present", f"{name}: assumed present") for name in manifest})

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
    if not candidates:  # auto never chooses the ci profile (a gate's setting): such a cell runs when asked for
        only = ", ".join(cell.profiles)
        return Decision(cell.row, cell.column, None, f"runs only in the {only} profile (--profile {only})",
                        f"{only} profile only")
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


#################################################################################
#                         Groups: what runs, and how often                       #
#################################################################################

@dataclass
class Plan:
    """Every cell's decision (table order) and the groups of cells that run, in table order of their first cell."""
    decisions: List[Decision]
    groups: List[Group]
    failed: Dict[tuple, Exception] = field(default_factory=dict)  # cells that could not be grouped, and why


def measurements(suite: Suite, profile: str, machine: Machine, ctx: Context) -> Dict[str, object]:
    """One instance of each measurement with a cell that runs here; where one cannot be made, the exception
    its cells get (Skip: its module is not in this checkout)."""
    out = {}
    for name in sorted({cell.measure for _, cell in suite.cells() if decide(cell, profile, machine).profile}):
        module_name = MEASUREMENTS[name]
        try:
            out[name] = importlib.import_module(module_name).MEASUREMENT(ctx)
        except ModuleNotFoundError as e:
            out[name] = Skip(f"measurement module {module_name} is not in this checkout") if e.name == module_name \
                else e
        except Exception as e:  # isolation: that measurement's cells are errors, the run goes on
            out[name] = e
    return out


def make_plan(suite: Suite, profile: str, machine: Machine, instances: Dict[str, object]) -> Plan:
    """The decision of every cell, and the runnable cells grouped as their measurement groups them."""
    decisions, groups, failed = [], {}, {}
    for row, cell in suite.cells():
        decision = decide(cell, profile, machine)
        decisions.append(decision)
        instance = instances.get(cell.measure)
        if decision.profile is None:
            continue
        item = Item(row, cell)
        if not isinstance(instance, Measurement):
            failed[item.key] = instance
            continue
        try:
            key = (cell.measure, decision.profile, instance.group_key(item))
            label = instance.group_label(item)
        except Exception as e:  # isolation: this cell is an error
            failed[item.key] = e
            continue
        if key not in groups:
            groups[key] = Group(cell.measure, decision.profile, key[2], label)
        groups[key].items.append(item)
    return Plan(decisions, list(groups.values()), failed)


def plan_table(plan: Plan) -> str:
    """The short table `bench run` prints before it starts: cells per (what happens, why), then the groups."""
    import pandas as pd
    frame = pd.DataFrame([{"cells": 1, "what": "cited" if d.cited else (f"run ({d.profile})" if d.profile else "skip"),
                           "why": "" if d.profile or d.cited else d.why} for d in plan.decisions])
    table = frame.groupby(["what", "why"], sort=False, as_index=False)["cells"].sum()[["cells", "what", "why"]]
    runs = int(frame.loc[frame["what"].str.startswith("run"), "cells"].sum())
    cited = int((frame["what"] == "cited").sum())
    head = f"{runs} cell(s) will run in {len(plan.groups)} group(s), {len(frame) - runs - cited} skip, {cited} cited"
    left = {col: f"{{:<{max(table[col].str.len().max(), len(col))}}}".format for col in ("what", "why")}
    lines = [head, table.to_string(index=False, justify="left", formatters=left)]
    if plan.groups:
        lines.append("groups (each measured once):")
        lines += [f"  {g.measure:<8} {g.label} ({len(g.items)} cell(s), {g.profile})" for g in plan.groups]
    return "\n".join(lines)


def judge(cell: Cell, measured: float, spread: Optional[Measured] = None):
    """(status, reason) of a measured value against the paper's within the cell's tolerance. With the interval its
    rounds gave (spread, Measured): pass or fail only when the whole of it is inside or outside the band; one across
    the band's edge is inconclusive (the difference is within the measurement's own spread). A baseline cell
    (no paper number at its setting) is measured, and judged only by the regression gate."""
    if cell.baseline:
        return MEASURED, (f"{fmt_value(measured)}: the paper has no number at this setting; `bench baseline check` "
                          f"compares it with this runner's baseline within its calibrated spread")
    lo, hi = cell.tolerance.band(cell.paper)
    closing = ")" if cell.tolerance.kind == "window" else "]"
    band = f"(-inf, {fmt_value(hi)}]" if math.isinf(lo) else f"[{fmt_value(lo)}, +inf)" if math.isinf(hi) else \
        f"[{fmt_value(lo)}, {fmt_value(hi)}{closing}"
    against = f"(paper {cell.paper:g}, {cell.tolerance.text()})"
    if spread is not None:
        settled = cell.tolerance.settles(cell.paper, spread.low, spread.high)
        rounds = spread.describe()
        if settled is True:
            return PASS, f"{fmt_value(measured)} is in {band}, and so is its range {rounds} {against}"
        if settled is False:
            return FAIL, f"{fmt_value(measured)} is outside {band}, and so is its range {rounds} {against}"
        side = "in" if cell.tolerance.accepts(cell.paper, measured) else "outside"
        return INCONCLUSIVE, (f"{fmt_value(measured)} is {side} {band}, but its range {rounds} crosses the band's "
                              f"edge {against}: the difference is within the measurement's own spread (more rounds "
                              f"or a quieter machine decide)")
    if cell.tolerance.accepts(cell.paper, measured):
        return PASS, f"{fmt_value(measured)} is in {band} {against}"
    return FAIL, f"{fmt_value(measured)} is outside {band} {against}"


def explained(cell: Cell, status, reason):
    """(status, reason) with the cell's note where it misses: its context (the measured cause of a known failure, or
    how it is measured), so the report explains the miss."""
    return status, (f"{reason}. {cell.note}" if cell.note and status in (FAIL, INCONCLUSIVE) else reason)


def cell_result(cell: Cell, decision: Decision) -> dict:
    """A cell's result before it is measured: skipped or cited with the reason, or waiting for its group."""
    out = {"row": cell.row, "column": cell.column, "metric": cell.metric, "paper": cell.paper, "measured": None,
           "spread": None,
           "unit": cell.unit, "tolerance": cell.tolerance.to_dict() if cell.tolerance else None,
           "status": None, "reason": "", "erratum": cell.erratum, "kind": cell.kind,
           "profiles": list(cell.profiles), "assets": list(cell.assets), "device": cell.device, "seconds": 0.0}
    if decision.profile is None:
        out.update(status=REFERENCE if cell.reference else SKIPPED, reason=decision.reason)
    else:
        out["profile"] = decision.profile
    return out


def settle(out: dict, cell: Cell, outcome) -> None:
    """Writes a measured outcome (a number, Skip or an error) into a cell's result, judged."""
    if isinstance(outcome, Skip):
        out.update(status=SKIPPED, reason=str(outcome))
    elif isinstance(outcome, Exception):
        frame = traceback.extract_tb(outcome.__traceback__)[-1] if outcome.__traceback__ else None
        where = f" ({Path(frame.filename).name}:{frame.lineno})" if frame else ""
        out.update(status=ERROR, reason=f"{type(outcome).__name__}: {outcome}{where}")
    elif isinstance(outcome, Measured):
        if not all(math.isfinite(v) for v in (outcome.value, outcome.low, outcome.high)):
            out.update(status=ERROR, reason=f"TypeError: measurement returned {outcome!r}, expected finite numbers")
        else:
            out["measured"], out["spread"] = outcome.value, outcome.to_dict()
            out["status"], out["reason"] = explained(cell, *judge(cell, outcome.value, outcome))
    elif isinstance(outcome, bool) or not isinstance(outcome, (int, float)) or not math.isfinite(outcome):
        out.update(status=ERROR, reason=f"TypeError: measurement returned {outcome!r}, expected a finite number")
    else:
        out["measured"] = float(outcome)
        out["status"], out["reason"] = explained(cell, *judge(cell, float(outcome)))


def run_group(group: Group, instance: Measurement, ctx: Context) -> Dict[tuple, object]:
    """{item key: outcome} of one group; never raises (but for KeyboardInterrupt): a failure of the whole
    group is every cell's outcome."""
    import torch
    torch.manual_seed(ctx.seed)  # each group starts from the same RNG state, whatever ran before it
    try:
        outcomes = instance.measure_group(group.items, replace(ctx, profile=group.profile))
    except Exception as e:  # isolation: this group's cells are errors (or skipped), the run goes on
        outcomes = {}
        failure = e
    else:
        failure = RuntimeError("the measurement returned no outcome for this cell")
    return {item.key: outcomes.get(item.key, failure) for item in group.items}


#################################################################################
#                                  Sections                                     #
#################################################################################

@dataclass
class SuiteRun:
    """What a report section receives: the suite, the judged cells and each measurement's public record."""
    suite: Suite
    ctx: Context  # in the profile the section runs in
    cells: List[dict]
    records: Dict[str, object]  # measurement name -> its record (None where it recorded nothing)

    def record(self, measure: str):
        return self.records.get(measure)

    def measured_items(self, measure: str) -> List[Item]:
        """The suite's cells of one measurement that were measured (not skipped before running), as Items."""
        ran = {(c["row"], c["column"]) for c in self.cells if c.get("profile")}
        return [Item(row, cell) for row, cell in self.suite.cells() if cell.measure == measure
                and (row.name, cell.column) in ran]


def run_section(section: SectionSpec, profile: str, run: SuiteRun, machine: Optional[Machine] = None) -> dict:
    """An extra section (e.g. the pipeline check): `module.run(SuiteRun) -> {title, note, rows}`, isolated and
    judged.

    Every row is a check {name, value, unit, ok, expected}: the section passes only if each row says
    ok=True; a row that is not judged (no boolean `ok`) makes the section an error, never a pass. A timed row
    whose rounds fall on both sides of its bound says `inconclusive: True` (with ok False): the section is then
    inconclusive unless another row failed."""
    title = section.title
    chosen = profile
    if profile == AUTO:  # smoke sections always (they need nothing); full ones where CUDA is here
        chosen = "smoke" if "smoke" in section.profiles else "full" if machine and machine.cuda else None
    if chosen not in section.profiles:
        return {"title": title, "note": f"not run in the {profile} profile (runs in: {', '.join(section.profiles)})",
                "rows": [], "status": SKIPPED}
    try:
        produced = importlib.import_module(section.module).run(replace(run, ctx=replace(run.ctx, profile=chosen)))
        if not isinstance(produced, dict) or not isinstance(produced.get("rows", []), list):
            raise TypeError(f"{section.module}.run returned {type(produced).__name__}, expected a dict with rows")
        rows = [dict(r) for r in produced.get("rows", [])]
        unjudged = [r.get("name", "?") for r in rows if not isinstance(r.get("ok"), bool)]
        if unjudged or not rows:
            raise TypeError(f"{section.module}.run returned "
                            + (f"rows without a boolean 'ok': {', '.join(unjudged)}" if rows else "no checks"))
        undecided = [r["name"] for r in rows if not r["ok"] and r.get("inconclusive") is True]
        failed = [r["name"] for r in rows if not r["ok"] and r.get("inconclusive") is not True]
        note = produced.get("note", "")
        if undecided:
            note = f"INCONCLUSIVE (within their own timing spread): {'; '.join(undecided)}. " + note
        if failed:
            note = f"FAILED: {'; '.join(failed)}. " + note
        status = FAIL if failed else INCONCLUSIVE if undecided else PASS
        return {"title": produced.get("title", title), "note": note, "rows": rows, "status": status,
                "figures": [dict(f) for f in produced.get("figures", [])],
                "provenance": dict(produced.get("provenance", {}))}
    except Exception as e:  # same isolation as cells
        return {"title": title, "note": f"error: {type(e).__name__}: {e}", "rows": [], "status": ERROR}


#################################################################################
#                                   A suite                                     #
#################################################################################

def prepare(suite: Suite, profile: str, machine: Machine, ctx: Context):
    """(measurement instances, Plan) of a suite run: what `bench run` prints, then hands to run_suite."""
    instances = measurements(suite, profile, machine, ctx)
    return instances, make_plan(suite, profile, machine, instances)


def run_suite(suite: Suite, profile: str, machine: Machine, ctx: Context, argv=(), prepared=None) -> dict:
    """Runs every group of cells and every section of a suite -> the result dict written to reports/<suite>.json.
    prepared: prepare()'s result when the caller already planned (and printed) the run."""
    started = utc_now()
    instances, plan = prepared or prepare(suite, profile, machine, ctx)
    pairs = list(suite.cells())
    cells = [cell_result(cell, decision) for (_, cell), decision in zip(pairs, plan.decisions)]
    by_key = {(c["row"], c["column"]): (c, cell) for c, (_, cell) in zip(cells, pairs)}
    for key, failure in plan.failed.items():  # no measurement for them here (module missing or broken)
        settle(*by_key[key], failure)
    for name, instance in instances.items():
        items = [item for group in plan.groups if group.measure == name for item in group.items]
        if items and isinstance(instance, Measurement):
            try:
                instance.build_ahead(items)
            except Exception as e:  # the groups build what they need themselves, and report their own errors
                print(f"{name}: building ahead failed ({type(e).__name__}: {e}); each group builds its own",
                      file=sys.stderr)
    with tqdm(total=sum(len(g.items) for g in plan.groups), desc=f"{suite.name} [{profile}]", unit="cell",
              file=sys.stderr, dynamic_ncols=True) as bar:
        for group in plan.groups:
            bar.set_postfix_str(f"{group.measure}: {group.label}", refresh=False)
            start = perf_counter()
            outcomes = run_group(group, instances[group.measure], ctx)
            seconds = round(perf_counter() - start, 3)
            for item in group.items:
                out, cell = by_key[item.key]
                out["seconds"] = seconds if item is group.items[0] else 0.0  # the group's time, on its first cell
                settle(out, cell, outcomes[item.key])
            bar.update(len(group.items))
    records = {name: m.record for name, m in instances.items() if isinstance(m, Measurement)}
    run = SuiteRun(suite, ctx, cells, records)
    sections = [run_section(s, profile, run, machine) for s in suite.sections]
    measured = {}
    for m in instances.values():
        if isinstance(m, Measurement):
            measured.update(m.provenance)
    for s in sections:
        measured.update(s.pop("provenance", {}))
    return {
        "schema": SCHEMA,
        "suite": suite.name,
        "title": suite.title,
        "source": suite.source,
        "notes": suite.notes,
        "profile": profile,
        "provenance": provenance(suite.path, ctx, argv, started, measured),
        "columns": [{"key": c.key, "label": c.label, "metric": c.metric, "unit": c.unit} for c in suite.columns],
        "rows": [{"name": r.name, "model": r.model, "variant": r.variant, "reference": r.reference, "note": r.note}
                 for r in suite.rows],
        "plots": suite.plots,
        "cells": cells,
        "sections": sections,
        "assets": machine.asset_report(),
        "counts": counts(cells),
    }
