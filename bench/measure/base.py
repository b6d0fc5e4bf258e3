"""What every measurement shares: the run context, the Skip signal, the cells it measures and how it groups them.

A measurement module exposes `MEASUREMENT`, a subclass of `Measurement`. The runner makes one instance per
suite run, asks it how the cells group (`group_key`: one sampling run, one timed loop, one trained mini
model), and calls `measure_group` once per group with that group's cells. A cell's outcome is a number,
or an exception: `Skip(reason)` when it cannot run here (the reason says what is missing and how to
provide it), anything else marks the cell `error`. What a report section reads of a measurement is the
instance's public `record` (typed by the measurement), never its private state.
"""
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Hashable, List, Optional, Tuple, Union

from bench.results import fmt_value
from bench.suite import Cell, Row


class Skip(Exception):
    """The cell cannot run here; the message says what is missing and how to provide it."""


@dataclass(frozen=True)
class Context:
    """What a measurement may use: profile, device, asset root, seed, scratch folder, the mini's recipe."""
    profile: str = "smoke"
    device: str = "cpu"
    assets_root: Optional[Path] = None
    seed: int = 0
    work_dir: Optional[Path] = None
    retrain: Union[bool, float] = False  # models a suite trains itself: rebuild (True) or those built before a time
    retime: bool = False  # time again what a run kept (bench.timing.kept: timings of models trained here)
    mini_config: Optional[object] = None  # bench.mini.config.MiniConfig of the mini's models; None: its default
    train_jobs: int = 0  # models a suite trains itself, trained this many at a time (0: one per CPU core, 1 on CUDA)

    @property
    def scratch(self) -> Path:
        """The scratch folder (reports/work when none was given)."""
        return Path(self.work_dir) if self.work_dir else Path("reports/work")

    def kept_timings(self, device=None):
        """The run's bench.timing.kept.KeptTimings: <scratch>/timings, measured again under --retime; device: where
        its timings run (default the run's)."""
        from bench.timing.kept import KeptTimings
        return KeptTimings(self.scratch / "timings", device or self.device, retime=self.retime)


@dataclass(frozen=True)
class Item:
    """One cell to measure with its row: what a measurement receives."""
    row: Row
    cell: Cell

    @property
    def key(self):
        """(row name, column key): identifies the cell in a suite."""
        return self.row.name, self.cell.column

    @property
    def model(self) -> str:
        return self.row.model

    @property
    def options(self):
        return self.row.options

    @property
    def sampler(self):
        return self.cell.sampler

    @property
    def metric(self) -> str:
        return self.cell.metric


# a timed value's interval: the order statistics of its rounds that hold the median with at least this probability
MEDIAN_COVERAGE = 0.90


def median_interval(values: List[float]) -> Tuple[float, float, int, float]:
    """(low, high, dropped, coverage): a distribution-free confidence interval of the median of rounds' values, the
    order statistics x(k) and x(n+1-k) with the largest k whose coverage 1 - 2 P(Binomial(n, 1/2) < k) is at least
    MEDIAN_COVERAGE; `dropped` = k - 1 rounds left out at each end. 5 rounds: their min and max (coverage 0.94);
    9 rounds: the lowest and highest left out (0.96). One slow round (a neighbour's burst) then decides nothing."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise ValueError("an interval of the median needs at least one round")
    below = lambda k: sum(math.comb(n, i) for i in range(k)) / 2 ** n  # noqa: E731  P(Binomial(n, 1/2) < k)
    k = 1
    while 2 * (k + 1) <= n + 1 and 1 - 2 * below(k + 1) >= MEDIAN_COVERAGE:
        k += 1
    return xs[k - 1], xs[n - k], k - 1, 1 - 2 * below(k)


@dataclass(frozen=True)
class Measured:
    """A value measured over repeated rounds (a timing): `value` as the cell reports it, and the interval its
    rounds give (median_interval: their min and max at 5 rounds; with more, the extreme rounds
    left out). A verdict is pass or fail only when the whole interval is on one side of the band's edge
    (bench.runner.judge); otherwise the cell is inconclusive."""
    value: float
    low: float
    high: float
    rounds: int
    dropped: int = 0  # rounds left out at each end of the interval
    coverage: float = 1.0  # the probability that the interval holds the rounds' median

    def __post_init__(self):
        if not self.low <= self.value <= self.high or self.rounds < 1:
            raise ValueError(f"a measured range needs low <= value <= high and rounds >= 1: {self}")

    @classmethod
    def of_rounds(cls, values, value=None) -> "Measured":
        """The median of per-round values (or `value`, e.g. a ratio of medians) and the interval of their median."""
        values = [float(v) for v in values]
        mid = statistics.median(values) if value is None else float(value)
        low, high, dropped, coverage = median_interval(values)
        return cls(mid, min(low, mid), max(high, mid), len(values), dropped, coverage)

    def describe(self) -> str:
        """'over 5 rounds: 0.48-0.53', or with rounds left out, which and the interval's coverage."""
        kept = (f" ({self.dropped} lowest and highest left out: the median's {self.coverage:.0%} interval)"
                if self.dropped else "")
        return f"over {self.rounds} rounds{kept}: {fmt_value(self.low)}-{fmt_value(self.high)}"

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "rounds": self.rounds, "dropped": self.dropped,
                "coverage": round(self.coverage, 4)}


Outcome = Union[float, Measured, Exception]  # a value, a value with its range over rounds, Skip, or the error


class Measurement:
    """One measurement for one suite run. Subclasses set METRICS and override group_key and measure_group
    (or `measure` for a measurement whose cells are independent)."""
    METRICS: tuple = ()

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.record = None  # what report sections may read (typed by the subclass); None: nothing to show
        self.provenance: dict = {}  # merged into the result's provenance["measurements"] (its own keys)

    def group_key(self, item: Item) -> Hashable:
        """Cells with the same key are measured together, once (default: each cell alone)."""
        return item.key

    def group_label(self, item: Item) -> str:
        """The plan's words for the group of this cell."""
        return f"{item.row.name} / {item.cell.column}"

    def check(self, item: Item):
        """ValueError unless this measurement produces the cell's metric."""
        if item.metric not in self.METRICS:
            raise ValueError(f"{type(self).__module__} measures {', '.join(map(repr, self.METRICS))}, "
                             f"not {item.metric!r}")

    def build_ahead(self, items: List[Item]) -> None:
        """Builds ahead what the run's groups of this measurement will need (`items`: all of their cells), where
        building several things at once beats one by one (default: nothing; each group builds what it needs)."""

    ONE_VALUE_PER_GROUP = False  # True: every cell of a group has the same value, measured once (params, FLOPs)

    def measure_group(self, items: List[Item], ctx: Context) -> Dict[tuple, Outcome]:
        """{item.key: outcome} for every cell of one group; the default measures them one by one (once per group
        with ONE_VALUE_PER_GROUP)."""
        out = {}
        for item in items:
            try:
                self.check(item)
                if self.ONE_VALUE_PER_GROUP and out:
                    out[item.key] = next(iter(out.values()))
                else:
                    out[item.key] = self.measure(item, ctx)
            except Exception as e:  # isolation: one cell's failure is that cell's
                out[item.key] = e
        return out

    def measure(self, item: Item, ctx: Context) -> float:
        raise NotImplementedError


@dataclass
class Group:
    """Cells one measurement measures at once, in one profile: the plan's unit of work."""
    measure: str
    profile: str
    key: Hashable
    label: str
    items: List[Item] = field(default_factory=list)
