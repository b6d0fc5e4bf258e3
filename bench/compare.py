"""Regressions between two runs of one suite: cells whose status got worse or whose value moved beyond the
cell's tolerance. What a GPU CI job gates on."""
from dataclasses import dataclass
from typing import List

from bench.results import ERROR, FAIL, PASS, REFERENCE, SKIPPED, Tolerance, fmt_value

# lower is worse: losing a measurement (skipped) or breaking one (error) is worse than missing the paper
RANK = {PASS: 3, FAIL: 2, SKIPPED: 1, ERROR: 0}


@dataclass
class Comparison:
    regressions: List[str]
    notes: List[str]
    compared: int

    @property
    def ok(self):
        return not self.regressions


def compare(old: dict, new: dict) -> Comparison:
    """Cell by cell (row, column) of the same suite; timing cells only when both ran on the same device."""
    if old["suite"] != new["suite"]:
        raise ValueError(f"different suites: {old['suite']!r} vs {new['suite']!r}")
    same_device = old["provenance"].get("device") == new["provenance"].get("device")
    new_cells = {(c["row"], c["column"]): c for c in new["cells"]}
    regressions, notes, compared = [], [], 0
    for o in old["cells"]:
        if o["status"] == REFERENCE:
            continue
        where = f"{o['row']} / {o['column']}"
        n = new_cells.get((o["row"], o["column"]))
        if n is None:
            (regressions if o["status"] == PASS else notes).append(f"{where}: in OLD ({o['status']}), gone from NEW")
            continue
        if o.get("kind") == "timing" and not same_device:
            notes.append(f"{where}: timing not compared ({old['provenance'].get('device')} vs "
                         f"{new['provenance'].get('device')})")
            continue
        compared += 1
        values = f"{fmt_value(o['measured'])} -> {fmt_value(n['measured'])}"
        if RANK.get(n["status"], 0) < RANK.get(o["status"], 0):
            regressions.append(f"{where}: status {o['status']} -> {n['status']} ({values}): {n['reason']}")
            continue
        tolerance = Tolerance.from_dict(n.get("tolerance") or o.get("tolerance"))
        if tolerance and o["measured"] is not None and n["measured"] is not None:
            allowed = tolerance.allowed_move(o["measured"])
            if abs(n["measured"] - o["measured"]) > allowed:
                regressions.append(f"{where}: value moved {values} {o['unit']}".rstrip()
                                   + f", more than the tolerance allows (±{fmt_value(allowed)}; {tolerance.text()})")
    return Comparison(regressions, notes, compared)


def report(comparison: Comparison, old_name="OLD", new_name="NEW") -> str:
    """The lines `bench compare` prints."""
    lines = [f"REGRESSION {line}" for line in comparison.regressions]
    lines += [f"note       {line}" for line in comparison.notes]
    verdict = (f"{len(comparison.regressions)} regression(s)" if comparison.regressions else "no regressions")
    lines.append(f"compare {old_name} -> {new_name}: {comparison.compared} cells compared, {verdict}")
    return "\n".join(lines)
