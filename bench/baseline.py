"""Regression gate against stored baselines: one folder of result JSON per hardware fingerprint.

A GPU runner's CI (`.github/workflows/gpu-regression.yml`) runs every suite, then `bench baseline check`:
each reports/<suite>.json is compared (bench.compare, direction-aware) with
baselines/<fingerprint>/<suite>.json of the *same* fingerprint (device, torch, CUDA), so a timing or a
TF32 difference between machines is never called a regression. Accepting a run as the new baseline is
`bench baseline accept` and a commit of the folder it writes.
"""
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from bench.compare import compare, report
from bench.results import ResultError, load_result, result_files


def fingerprint(result: dict) -> str:
    """A folder name for the hardware and software a result was measured on: device, torch, CUDA."""
    p = result["provenance"]
    versions = p.get("versions", {})
    text = f"{p.get('device') or 'unknown-device'}-torch{versions.get('torch')}-cuda{versions.get('cuda')}"
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


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


def check(reports, baselines) -> Check:
    """Compares every result in `reports` with its baseline of the same fingerprint under `baselines`."""
    out = Check()
    found = result_files(reports)
    if not found:
        raise ResultError(f"no result JSON in {reports}: run a suite first (python -m bench run ...)")
    fingerprints = set()
    for path in found:
        new = load_result(path)
        fingerprints.add(fingerprint(new))
        base = Path(baselines) / fingerprint(new) / path.name
        if not base.is_file():
            out.missing.append(f"{new['suite']}: no baseline {base} (accept one: python -m bench baseline accept "
                               f"--reports {reports} --baselines {baselines})")
            continue
        comparison = compare(load_result(base), new)
        out.compared_suites += 1
        out.regressions += len(comparison.regressions)
        out.lines.append(report(comparison, str(base), str(path)))
    names = {path.name for path in found}
    for folder in sorted(Path(baselines) / f for f in fingerprints):
        for base in result_files(folder) if folder.is_dir() else []:
            if base.name not in names:
                out.unmeasured.append(f"{load_result(base)['suite']}: baseline {base} has no current result in "
                                      f"{reports} (run the suite, or remove the baseline)")
    return out


def accept(reports, baselines) -> List[Path]:
    """Copies every result of `reports` to baselines/<its fingerprint>/ (commit that folder to keep it)."""
    written = []
    for path in result_files(reports):
        target = Path(baselines) / fingerprint(load_result(path)) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        written.append(target)
    if not written:
        raise ResultError(f"no result JSON in {reports}: nothing to accept")
    return written
