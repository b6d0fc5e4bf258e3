"""Regression gate against stored baselines: one folder of result JSON per hardware fingerprint and profile.

A GPU runner's CI (`.github/workflows/gpu-regression.yml`) runs every suite, then `bench baseline check`:
each reports/<suite>.json is compared (bench.compare, direction-aware) with
baselines/<fingerprint>/<profile>/<suite>.json of the *same* fingerprint (device, torch, CUDA), so a timing or a
TF32 difference between machines is never called a regression. Accepting a run as the new baseline is
`bench baseline accept` and a commit of the folder it writes.

Cells the paper has no number for (status `measured`: the ci profile's FID-5K) are judged against the mean of
the baseline's value and more sampling seeds' (`bench baseline calibrate`, stored as CALIBRATION beside the
baseline), within RULE's bound. A measured cell without a calibration, or with one made for another baseline
(accept removes it), fails the check (closed).
"""
import json
import math
import re
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

from bench.compare import compare, report
from bench.definitions import LOWER, METRICS, Tolerance
from bench.results import MEASURED, ResultError, load_result, result_files, utc_now
from dydit.fileio import write_json_atomic

CALIBRATION = "calibration.json"  # beside a fingerprint's baseline results
CALIBRATION_SCHEMA = "dydit-bench-calibration/1"  # not a result schema: result_files never reads it as one
CALIBRATION_SEEDS = (1, 2)  # the extra sampling seeds of `calibrate` (the baseline's own run is seed 0)
MIN_SEEDS = 3  # values per cell (the baseline's + extra seeds): fewer make the bound meaningless (t(0.995, 1) = 64)
CONFIDENCE = 0.995  # one-sided: a new seed's value falls beyond the bound with probability 0.5 % (per cell)
RULE = ("one-sided 99.5 % prediction bound for one more seed's value around the calibrated seeds' mean, from their "
        "sample standard deviation s (n seeds): t(0.995, n-1) * s * sqrt(1 + 1/n); n = 3: 11.5 s, n = 5: 5.0 s")


def fingerprint(result: dict) -> str:
    """A folder name for the hardware and software a result was measured on: device, torch, CUDA."""
    p = result["provenance"]
    versions = p.get("versions", {})
    text = f"{p.get('device') or 'unknown-device'}-torch{versions.get('torch')}-cuda{versions.get('cuda')}"
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def baseline_folder(baselines, result: dict) -> Path:
    """baselines/<fingerprint>/<profile>/: a ci run is never compared with a full one, nor across machines."""
    return Path(baselines) / fingerprint(result) / result["profile"]


@dataclass
class Check:
    """What `check` found: per suite a report text; regressions anywhere fail the gate."""
    lines: List[str] = field(default_factory=list)
    regressions: int = 0
    compared_suites: int = 0
    missing: List[str] = field(default_factory=list)  # suites without a baseline of this fingerprint
    unmeasured: List[str] = field(default_factory=list)  # baselines of this fingerprint with no current result

    @property
    def ok(self) -> bool:
        return self.regressions == 0


#################################################################################
#                     Calibration: the spread of measured cells                 #
#################################################################################

def prediction_bound(values: Sequence[float]) -> float:
    """RULE: how far one more seed's value may lie from the mean of `values` (>= 2 seeds) by seed noise alone."""
    from scipy.stats import t
    n = len(values)
    if n < MIN_SEEDS:
        raise ValueError(f"a spread needs at least {MIN_SEEDS} seeds' values, got {n}")
    return float(t.ppf(CONFIDENCE, n - 1) * statistics.stdev(values) * math.sqrt(1 + 1 / n))


@dataclass
class CalibratedCell:
    """One measured cell's values over sampling seeds and the tolerance the gate derives from them (RULE)."""
    suite: str
    row: str
    column: str
    metric: str
    baseline_value: float  # the accepted baseline's own run (the suite's sampling seed)
    seeds: List[int]  # the extra sampling seeds
    seed_values: List[float]

    @property
    def values(self) -> List[float]:
        return [self.baseline_value, *self.seed_values]

    @property
    def center(self) -> float:
        """What a new run is compared with: the mean over the baseline's seed and the calibrated ones."""
        return statistics.fmean(self.values)

    @property
    def tolerance(self) -> Tolerance:
        worse = "atmost" if METRICS[self.metric].direction == LOWER else "atleast"
        values = ", ".join(f"{v:.3f}" for v in self.values)
        return Tolerance(worse, prediction_bound(self.values),
                         f"calibrated on this runner: the baseline and seeds {self.seeds} gave {values}; {RULE}")


def load_calibration(folder) -> Dict[Tuple[str, str, str], CalibratedCell]:
    """(suite, row, column) -> CalibratedCell, from a baseline folder's CALIBRATION ({} if none)."""
    path = Path(folder) / CALIBRATION
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") != CALIBRATION_SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}, expected {CALIBRATION_SCHEMA!r}")
        cells = [CalibratedCell(**c) for c in data["cells"]]
        for c in cells:
            c.tolerance  # noqa: B018  (refuses too few seeds now, not at the first comparison)
        return {(c.suite, c.row, c.column): c for c in cells}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ResultError(f"{path}: cannot read the calibration ({type(e).__name__}: {e}): rerun `python -m bench "
                          f"baseline calibrate`, or move the file away") from e


def calibrated_baseline(base: dict, calibration: Dict[Tuple[str, str, str], CalibratedCell]):
    """(the baseline with each calibrated cell's value replaced by its calibrated center, {(row, column):
    tolerance}); ResultError where the calibration was made for another baseline value (stale)."""
    base = json.loads(json.dumps(base))  # a copy
    tolerances = {}
    for cell in measured_cells(base):
        c = calibration.get((base["suite"], cell["row"], cell["column"]))
        if c is None:
            continue
        if cell["measured"] is None or abs(c.baseline_value - cell["measured"]) > 1e-9 * max(1.0, abs(c.baseline_value)):
            raise ResultError(f"{CALIBRATION} of {base['suite']} / {cell['row']} / {cell['column']} was made for a "
                              f"baseline value {c.baseline_value:g}, the baseline holds {cell['measured']}: rerun "
                              f"`python -m bench baseline calibrate` for this baseline")
        cell["measured"] = c.center
        tolerances[cell["row"], cell["column"]] = c.tolerance
    return base, tolerances


def measured_cells(result: dict) -> List[dict]:
    """A result's cells that only the gate judges (status measured)."""
    return [c for c in result["cells"] if c["status"] == MEASURED]


# (suite file, [(row, column)], seed) -> {(row, column): value}: runs those cells with that sampling seed
RunCells = Callable[[str, List[Tuple[str, str]], int], Dict[Tuple[str, str], float]]


def calibrate(folder, run_cells: RunCells, seeds=CALIBRATION_SEEDS) -> Path:
    """Runs every measured cell of a baseline folder (baseline_folder) with `seeds` and writes CALIBRATION there."""
    folder = Path(folder)
    results = [load_result(p) for p in result_files(folder)] if folder.is_dir() else []
    cells = []
    for result in results:
        measured = measured_cells(result)
        if not measured:
            continue
        keys = [(c["row"], c["column"]) for c in measured]
        runs = {seed: run_cells(result["provenance"]["suite_file"], keys, seed) for seed in seeds}
        for c in measured:
            key = (c["row"], c["column"])
            extra = [runs[seed].get(key) for seed in seeds]
            if any(v is None or not math.isfinite(v) for v in extra):
                raise ResultError(f"{result['suite']} / {c['row']} / {c['column']}: a calibration seed gave no value "
                                  f"({extra}): see the run's output, fix, and calibrate again")
            cells.append(CalibratedCell(result["suite"], c["row"], c["column"], c["metric"], c["measured"],
                                        list(seeds), extra))
    if not cells:
        raise ResultError(f"no measured cell (the ci profile's FID-5K) in a baseline under {folder}: run the ci "
                          f"profile, accept it (python -m bench baseline accept), then calibrate")
    path = folder / CALIBRATION
    write_json_atomic({"schema": CALIBRATION_SCHEMA, "rule": RULE, "written": utc_now(),
                       "cells": [c.__dict__ for c in cells]}, path)
    return path


#################################################################################
#                                  The gate                                     #
#################################################################################

def check(reports, baselines) -> Check:
    """Compares every result in `reports` with its baseline of the same fingerprint under `baselines`."""
    out = Check()
    found = result_files(reports)
    if not found:
        raise ResultError(f"no result JSON in {reports}: run a suite first (python -m bench run ...)")
    folders = set()
    for path in found:
        new = load_result(path)
        folders.add(baseline_folder(baselines, new))
        base = baseline_folder(baselines, new) / path.name
        if not base.is_file():
            out.missing.append(f"{new['suite']}: no baseline {base} (accept one: python -m bench baseline accept "
                               f"--reports {reports} --baselines {baselines})")
            continue
        old, tolerances = calibrated_baseline(load_result(base), load_calibration(base.parent))
        comparison = compare(old, new, tolerances)
        out.compared_suites += 1
        out.regressions += len(comparison.regressions)
        out.lines.append(report(comparison, str(base), str(path)))
    names = {path.name for path in found}
    for folder in sorted(folders):
        for base in result_files(folder) if folder.is_dir() else []:
            if base.name not in names:
                out.unmeasured.append(f"{load_result(base)['suite']}: baseline {base} has no current result in "
                                      f"{reports} (run the suite, or remove the baseline)")
    return out


def accept(reports, baselines) -> List[Path]:
    """Copies every result of `reports` to baselines/<its fingerprint>/<profile>/ (commit that folder to keep it).
    A calibration there belonged to the previous baseline: it is removed (calibrate again)."""
    written = []
    for path in result_files(reports):
        target = baseline_folder(baselines, load_result(path)) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.parent / CALIBRATION).unlink(missing_ok=True)
        shutil.copyfile(path, target)
        written.append(target)
    if not written:
        raise ResultError(f"no result JSON in {reports}: nothing to accept")
    return written
