"""Two runs of one suite, cell by cell: regressions (what a GPU CI job gates on) and improvements.

A cell regresses when its status gets worse, or when its value moves beyond the cell's tolerance in the
worse direction of its metric (bench.definitions: FID lower is better, IS higher; params "exact": any move
beyond tolerance is a regression). A move beyond tolerance in the better direction, a status that becomes
`pass`, or a `pass` that becomes `fail` by beating the paper's band is an improvement: reported, never
failing. Timing cells are compared only between runs on the same device.

Cells measured over rounds carry their range (`spread`): the judgement's rule holds here too. A move counts
only beyond the tolerance plus both runs' half-ranges (that allowance capped at the tolerance's own, so a very
noisy run cannot hide any move); beyond the tolerance but within them it is a note (inconclusive). A change
among pass, fail and inconclusive that involves inconclusive is a note (noise is not a regression); a cell that
was inconclusive and is now an error or skipped has regressed.

A `measured` cell (no paper number at its setting: the ci profile's FID-5K) is judged here only, within the
tolerance the runner calibrated for it (bench.baseline: `tolerances`); without one the comparison fails closed.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from bench.definitions import EXACT, HIGHER, LOWER, METRICS, Tolerance
from bench.results import ERROR, FAIL, INCONCLUSIVE, MEASURED, PASS, REFERENCE, SKIPPED, ResultError, fmt_value

# lower is worse: losing a measurement (skipped) or breaking one (error) is worse than missing the paper
RANK = {PASS: 3, MEASURED: 3, INCONCLUSIVE: 2.5, FAIL: 2, SKIPPED: 1, ERROR: 0}
JUDGED = (PASS, FAIL, INCONCLUSIVE)
BETTER = {LOWER: "lower is better", HIGHER: "higher is better"}


@dataclass
class Comparison:
    regressions: List[str]
    improvements: List[str]
    notes: List[str]
    compared: int

    @property
    def ok(self):
        return not self.regressions


def _moved_better(o, n, direction) -> bool:
    """Whether a measured value moved in its metric's better direction (never for an exact metric)."""
    if direction == EXACT or o["measured"] is None or n["measured"] is None or n["measured"] == o["measured"]:
        return False
    return (n["measured"] < o["measured"]) == (direction == LOWER)


def _half_range(cell) -> float:
    """Half the range a cell's rounds gave (0 for a value measured once)."""
    spread = cell.get("spread")
    return (spread["high"] - spread["low"]) / 2 if spread else 0.0


def _beyond(o, n, tolerance) -> str:
    """'' if the value moved within what the tolerance allows between runs, else how far it may move."""
    if tolerance is None or o["measured"] is None or n["measured"] is None:
        return ""
    allowed = tolerance.allowed_move(o["measured"])
    if abs(n["measured"] - o["measured"]) <= allowed:
        return ""
    return f"more than the tolerance allows (±{fmt_value(allowed)}; {tolerance.text('the baseline')})"


def _within_spread(o, n, tolerance) -> bool:
    """Whether a move beyond the tolerance is still within the tolerance plus both runs' half-ranges."""
    allowed = tolerance.allowed_move(o["measured"])
    noise = min(_half_range(o) + _half_range(n), allowed)  # capped: a very noisy run does not excuse any move
    return noise > 0 and abs(n["measured"] - o["measured"]) <= allowed + noise


def compare(old: dict, new: dict, tolerances: Optional[Dict[Tuple[str, str], Tolerance]] = None) -> Comparison:
    """Cell by cell (row, column) of the same suite; timing cells only when both ran on the same device.
    tolerances: (row, column) -> the calibrated tolerance of a measured cell (bench.baseline.Calibration)."""
    if old["suite"] != new["suite"]:
        raise ResultError(f"different suites: {old['suite']!r} vs {new['suite']!r}: compare two results of one suite")
    same_device = old["provenance"].get("device") == new["provenance"].get("device")
    new_cells = {(c["row"], c["column"]): c for c in new["cells"]}
    regressions, improvements, notes, compared = [], [], [], 0
    for o in old["cells"]:
        if o["status"] == REFERENCE:
            continue
        where = f"{o['row']} / {o['column']}"
        n = new_cells.get((o["row"], o["column"]))
        if n is None:  # a cell that held, or that the gate judges, may not vanish
            (regressions if o["status"] in (PASS, MEASURED) else notes).append(
                f"{where}: in OLD ({o['status']}), gone from NEW")
            continue
        if o.get("kind") == "timing" and not same_device:
            notes.append(f"{where}: timing not compared ({old['provenance'].get('device')} vs "
                         f"{new['provenance'].get('device')})")
            continue
        compared += 1
        tolerance = Tolerance.from_dict(n.get("tolerance") or o.get("tolerance"))
        calibrated = MEASURED in (o["status"], n["status"])  # no paper number: only the runner's spread judges it
        if calibrated:
            tolerance = (tolerances or {}).get((o["row"], o["column"]))
            if tolerance is None and n["status"] == MEASURED:
                regressions.append(f"{where}: {fmt_value(o['measured'])} -> {fmt_value(n['measured'])} cannot be "
                                   "judged: no calibrated spread for this cell (run `python -m bench baseline calibrate` "
                                   "on this runner; a gate without a tolerance fails closed)")
                continue
        metric = METRICS.get(n.get("metric") or o.get("metric"))  # the direction, from the metric's definition
        if metric is None:
            notes.append(f"{where}: metric {o.get('metric')!r} is not defined here: any move beyond the tolerance "
                         "counts as a regression")
        direction = metric.direction if metric else EXACT
        values = f"{fmt_value(o['measured'])} -> {fmt_value(n['measured'])}"
        better, beyond = _moved_better(o, n, direction), _beyond(o, n, tolerance)
        if beyond and not calibrated and _within_spread(o, n, tolerance):  # a calibration holds the noise already
            notes.append(f"{where}: value moved {values}, {beyond}, but within both runs' own spread "
                         f"(ranges ±{fmt_value(_half_range(o))} and ±{fmt_value(_half_range(n))}): inconclusive")
            beyond = ""
        if INCONCLUSIVE in (o["status"], n["status"]) and {o["status"], n["status"]} <= set(JUDGED):
            if o["status"] != n["status"]:
                notes.append(f"{where}: status {o['status']} -> {n['status']} ({values}): {n['reason']}")
            if beyond:  # the value moved beyond tolerance and both spreads: judged by the value alone
                (improvements if better else regressions).append(
                    f"{where}: value moved {values}, {'better' if better else 'worse'}, {beyond}")
            continue
        old_rank, new_rank = RANK.get(o["status"], 0), RANK.get(n["status"], 0)
        if new_rank != old_rank:  # a status change is the cell's verdict
            line = f"{where}: status {o['status']} -> {n['status']} ({values}): {n['reason']}"
            if new_rank > old_rank:
                (improvements if n["status"] == PASS else notes).append(line)
            elif better:  # pass -> fail by beating the paper's band: the value got better, not worse
                (improvements if beyond else notes).append(f"{line}; the value moved the better way "
                                                           f"({BETTER[direction]})")
            else:
                regressions.append(line)
            continue
        if not beyond:
            continue
        line = f"{where}: value moved {values} {o['unit']}".rstrip()
        if direction == EXACT:
            regressions.append(f"{line}, {beyond}")
        elif better:
            improvements.append(f"{line}, better ({BETTER[direction]}), {beyond}")
        else:
            regressions.append(f"{line}, worse ({BETTER[direction]}), {beyond}")
    return Comparison(regressions, improvements, notes, compared)


def _count(n, what):
    return f"{n} {what}(s)" if n else f"no {what}s"


def report(comparison: Comparison, old_name="OLD", new_name="NEW") -> str:
    """The lines `bench compare` prints: regressions, improvements, notes, then one summary line."""
    lines = [f"REGRESSION {line}" for line in comparison.regressions]
    lines += [f"improved   {line}" for line in comparison.improvements]
    lines += [f"note       {line}" for line in comparison.notes]
    lines.append(f"compare {old_name} -> {new_name}: {comparison.compared} cells compared, "
                 f"{_count(len(comparison.regressions), 'regression')}, "
                 f"{_count(len(comparison.improvements), 'improvement')}")
    return "\n".join(lines)
