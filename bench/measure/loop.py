"""s/image ratios over whole sampling loops (Tables 4 and 18): every path of a sampler setup timed in one run.

The paper's s/image are V100 numbers: a suite compares the ratio path / DiT (no cache) measured in one
process on one device. A group is one sampler setup (everything but DeepCache) against one static model:
its cells' paths are timed together (bench.timing.loop, interleaved call by call): DiT, each dynamic
row, each DeepCache interval.

Models (bench.models.row_model): a mini row runs the mini reproduction's model trained here; a dynamic
row with its checkpoint present runs its trained routers; without one (smoke, this CPU) its routers are
calibrated (bench.timing.calibration: random weights, one bias offset bisected so the dynamic FLOPs reach
the row's `options.flops_fraction`, default its `flops_target`). DiT is the same weights on the DiT path
(bench.timing.loop.shared_dit): a static model's time does not depend on its weights. The VAE is the SD VAE's
architecture (random weights: decode time does not depend on them); the mini has none (it samples pixels).

A DyFLUX row (suites/dyflux.toml) or a DyLatte row (suites/latte.toml) is timed by bench.timing.flux / .latte
instead: its fast path against the static model per model call, at a size this machine holds, routers calibrated.
"""
import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from bench.definitions import METRIC_REALIZED, METRIC_S_PER_IMAGE_RATIO
from bench.measure.base import Item, Measured, Measurement, Skip
from bench.models import OR_CALIBRATED, RowModel, row_model
from dydit import registry
from dydit.sampling import SamplerSpec

DIT = "DiT"


@dataclass(frozen=True)
class TimingBudget:
    """How much a loop timing runs: full calls per path on each schedule's own timesteps, interleaved rounds (the
    median of their ratios and its interval: bench.measure.base.median_interval), and whole runs of the shortest
    schedule that check the estimate (bench.sections.loop). A path one of whose cells' intervals still crosses its
    band's edge after `repeats` rounds is timed `more` rounds again beside DiT, until every cell decides or it has
    `most` rounds (a sequential test with at most three looks: a value within its spread of the edge stays
    inconclusive; one further off no longer flips between runs on where its few rounds happened to fall)."""
    calls: int
    repeats: int
    whole_runs: int
    more: int = 0  # rounds added at each further look (0: none)
    most: int = 0  # rounds a path is timed at most

    def __post_init__(self):
        if self.repeats < 3 or (self.more and self.most < self.repeats + self.more):
            raise ValueError(f"a timing budget needs >= 3 rounds and room for one more look: {self}")


# a full-size call takes seconds (XL on a GPU: tens of ms per image, on this CPU ~10 s): 3 calls x 5 rounds, and a
# path near its band's edge up to 15 (two back-to-back scaling smoke runs at 5 rounds: 11 of 31 cells moved between
# pass and inconclusive; their medians sat within their min-max of the edge)
FULL_SIZE = TimingBudget(calls=3, repeats=5, whole_runs=2, more=5, most=15)
# a mini call takes ~1 s at its suites' CFG batch (500 rows), so more of both. With 3 calls a DyDiT's mean cost per
# step (its width varies ~4x over a schedule) came out 10 % low. Single rounds of 6 calls spread ±7 % on this shared VM
# with bursts beyond: 9 rounds (the median's interval leaves one out at each end) decided every ratio of table4-mini.
# A whole mini DPM-10 run takes 1-8 s (NOTES.md, issue 21)
MINI = TimingBudget(calls=6, repeats=9, whole_runs=9, more=6, most=21)
# DeepCache's checks combine four paths' rounds (DeepCache composing with DyDiT) and spread ±14 %: at 9 rounds the
# median's interval still crossed a 10 % bound around medians of 1-3 %; 15 rounds leave out 3 at each end
MINI_DEEPCACHE = TimingBudget(calls=6, repeats=15, whole_runs=15, more=6, most=27)


def timing_budget(model: str, deepcache: bool = False) -> TimingBudget:
    """The budget of a loop timing of this model's rows (deepcache: some of the group's paths cache)."""
    if not registry.entry(model).is_mini:
        return FULL_SIZE
    return MINI_DEEPCACHE if deepcache else MINI


def group_budget(items: List[Item]) -> TimingBudget:
    """The budget of one loop timing group: its model's, with DeepCache's rounds where a path caches."""
    return timing_budget(items[0].model, any(item.sampler.deepcache_interval > 1 for item in items))


RESULT_KEYS = {METRIC_S_PER_IMAGE_RATIO: "ratio", METRIC_REALIZED: "realized"}


SETUP_FIELDS = ("name", "steps", "cfg_scale", "guided_channels", "batch_size", "precision")  # what timing depends on


def timed_setup(item: Item) -> SamplerSpec:
    """The setup the paths of one timing run share: the cell's sampler, without DeepCache, seed, labels or
    sample count (a timing does not depend on them)."""
    return SamplerSpec(**{f: getattr(item.sampler, f) for f in SETUP_FIELDS})


def path_name(item: Item) -> str:
    """DiT, or '<model> λ=<flops_target>' for a dynamic row, plus ', DeepCache N' for N > 1."""
    interval = item.sampler.deepcache_interval
    lam = item.options.flops_target
    dynamic = registry.entry(item.model).is_dynamic
    if dynamic and lam is None:
        raise ValueError(f"row {item.row.name!r}: a dynamic row needs options.flops_target (its lambda)")
    base = f"{item.model} λ={lam:g}" if dynamic else DIT
    return base + (f", DeepCache {interval}" if interval > 1 else "")


@dataclass
class LoopRun:
    """One timed setup: every path's timing (LoopTiming.to_dict + ratio, flops_ratio, realized vs DiT)."""
    setup: SamplerSpec  # the shared setup (deepcache_interval 0)
    static_model: str  # the static model every path is compared with
    paths: Dict[str, dict]
    weights: Dict[str, str]  # path -> what its weights are
    vae: str
    timed: list  # the LoopPath objects, in timed order (DiT first): the section checks the estimate on them
    budget: TimingBudget = FULL_SIZE
    kept_parts: Optional[tuple] = None  # what identifies this timing among kept ones (trained weights only)
    measured_at: Optional[str] = None  # when it was timed: this run, or the run that kept it

    def to_dict(self) -> dict:
        return {"setup": {**{f: getattr(self.setup, f) for f in SETUP_FIELDS}, "dit": self.static_model}, "vae": self.vae,
                "paths": self.paths, "weights": self.weights, "timed_with": [p.name for p in self.timed],
                "measured_at": self.measured_at, "budget": dataclasses.asdict(self.budget)}


@dataclass
class LoopRecord:
    """What the loop report section reads: every run of this suite, and the VAE they decoded with."""
    runs: List[LoopRun] = field(default_factory=list)
    decode: Optional[Callable] = None  # the VAE decode the runs timed (None: the mini's pixels)
    decode_gmacs: float = 0.0
    device: str = "cpu"
    kept: object = None  # the run's bench.timing.kept.KeptTimings (the section keeps its estimate check there too)


class Loop(Measurement):
    """Whole-loop s/image ratio and realized speed-up; one group per (setup, static model)."""
    METRICS = tuple(RESULT_KEYS)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.record = LoopRecord(device=str(ctx.device), kept=ctx.kept_timings())
        self._models: Dict[tuple, RowModel] = {}  # (model, lambda) -> its model, loaded once per run
        self._vae = None  # (decode, GMACs per image, note), built once per run
        self._decode_s: Dict[int, float] = {}  # batch size -> decode seconds: the same for every sampler

    def group_key(self, item: Item):
        if _per_call(item):  # one timing per DyFLUX / DyLatte row (bench.timing.flux / .latte)
            return "per-call", item.model, item.options.calibration_fraction
        return timed_setup(item), registry.entry(item.model).static

    def group_label(self, item: Item) -> str:
        if _per_call(item):
            return f"{item.model}'s fast path against {registry.entry(item.model).static}, calibrated routers"
        s = item.sampler
        return f"whole {s.name}-{s.steps} loops against {registry.entry(item.model).static}, batch {s.batch_size}"

    def measure_group(self, items: List[Item], ctx) -> dict:
        for item in items:
            self.check(item)
        if _per_call(items[0]):
            return self._time_per_call(items, ctx)
        run = self._time(items, ctx)
        self.record.runs.append(run)
        self.provenance.setdefault("loop_speed", []).append(run.to_dict())
        out = {}
        for item in items:
            if item.metric == METRIC_REALIZED and not registry.entry(item.model).is_dynamic:
                out[item.key] = ValueError(f"row {item.row.name!r}: realized speed-up is measured for dynamic rows")
            else:
                path = run.paths[path_name(item)]
                key = RESULT_KEYS[item.metric]
                out[item.key] = Measured.of_rounds(path[f"{key}_rounds"], value=path[key])
        return out

    def _time_per_call(self, items: List[Item], ctx) -> dict:
        """A DyFLUX's or DyLatte's fast path against its static model per model call, at its timing module's SCALED
        setup (random weights, calibrated routers): their full-size weights would not fit here, and a static
        model's time does not depend on its weights."""
        import importlib
        item = items[0]
        entry = registry.entry(item.model)
        lam = item.options.calibration_fraction
        if not entry.is_dynamic or lam is None:
            raise ValueError(f"row {item.row.name!r}: the s/image ratio is measured for a dynamic row with "
                             f"options.flops_target or flops_fraction (what its routers are calibrated to)")
        module = importlib.import_module(_per_call(item))
        timing = module.time_ratio(entry, module.SCALED, lam, ctx.seed, ctx.device)
        print(f"  {item.model}: routers calibrated to {lam:.4g} of the static model's MACs, reached "
              f"{timing['flops_ratio']:.3f}; fast path {timing['ratio']:.3f} of its time")
        self.provenance.setdefault(f"{entry.family.lower()}_speed", []).append({"row": item.row.name, **timing})
        out = {}
        for it in items:
            key = RESULT_KEYS[it.metric]
            out[it.key] = Measured.of_rounds(timing[f"{key}_rounds"], value=timing[key])
        return out

    def _model(self, item: Item, ctx) -> RowModel:
        """The row's dynamic model (trained routers, the mini's, or random ones to calibrate), once per run."""
        if item.options.routers != "all":
            raise Skip("the loop timing runs the learned routers: a routers ablation is measured by bench.mini")
        key = (item.model, item.options.flops_target)
        if key not in self._models:
            loaded = row_model(item.row, ctx, OR_CALIBRATED)
            if registry.entry(item.model).is_mini:  # which recipe trained it, as the mini's own cells record
                from bench.mini.build import cache_dir
                from bench.mini.config import MiniConfig
                self.provenance.setdefault("mini", {"config": dataclasses.asdict(ctx.mini_config or MiniConfig()),
                                                    "cache": str(cache_dir(ctx))})
            elif not loaded.calibrate:
                loaded.weights += ": trained routers"
            self._models[key] = loaded
        return self._models[key]

    def _time(self, items: List[Item], ctx) -> LoopRun:
        """Times every path of the group interleaved; ratios against the static path without cache."""
        from bench.timing.calibration import recalibrate
        from bench.timing.loop import LoopPath, picks, shared_dit, time_loops, width_cost
        from bench.timing.speed import timing_vae
        from dydit.fast import FastDyDiT
        from dydit.sampling import precision, sampler_timesteps
        setup = timed_setup(items[0])
        budget = group_budget(items)
        names = [path_name(item) for item in items]  # raises for a dynamic row without its lambda
        dynamic = {name: item for name, item in zip(names, items) if registry.entry(item.model).is_dynamic}
        if not dynamic:
            raise Skip("no DyDiT row of this suite times this sampler: nothing to compare DiT with")
        paths, weights, calibrated, first, keys = [], {}, set(), None, {}
        for name, item in sorted(dynamic.items()):
            loaded = self._model(item, ctx)
            weights[name] = loaded.weights
            keys[name] = loaded.key
            if loaded.calibrate and id(loaded.model) not in calibrated:
                ts = sampler_timesteps(setup.name, setup.steps)
                idx = picks(len(ts), budget.calls, 0, width_cost(FastDyDiT(loaded.model, cache_bytes=0), ts))
                lam = item.options.calibration_fraction
                reached = recalibrate(loaded.model, lam, [ts[i] for i in idx], ctx.seed)
                print(f"  routers calibrated to λ={lam:g} on the {len(idx)} timed calls of "
                      f"{setup.name}-{len(ts)}: {reached:.3f}")
                calibrated.add(id(loaded.model))
            first = loaded.model if first is None else first
            paths.append(LoopPath(name, FastDyDiT(loaded.model), item.sampler.deepcache_interval))
        dit = shared_dit(first)
        intervals = {item.sampler.deepcache_interval for item in items if not registry.entry(item.model).is_dynamic}
        paths = [LoopPath(DIT if n <= 1 else f"{DIT}, DeepCache {n}", dit, n) for n in sorted({0, *intervals})] + paths
        if self._vae is None:  # the mini samples pixels: no VAE
            pixels = registry.entry(next(iter(dynamic.values())).model).is_mini
            self._vae = (None, 0.0, "none: the mini samples pixels") if pixels else timing_vae(ctx.device)
        decode, decode_gmacs, vae_note = self._vae
        self.record.decode, self.record.decode_gmacs = decode, decode_gmacs

        def measure() -> dict:
            timings, with_dit, timed, repeats = {}, {}, paths, budget.repeats
            while True:
                with precision(setup.precision, ctx.device):
                    got = time_loops(timed, setup, budget.calls, repeats, decode, decode_gmacs, ctx.device,
                                     ctx.seed, decode_s=self._decode_s.get(setup.batch_size),
                                     loop_s=timings[DIT].loop_s if timings else None,  # a further look: counted
                                     call_macs={name: t.call_macs for name, t in timings.items()})
                self._decode_s[setup.batch_size] = got[DIT].decode_s
                for name, t in got.items():  # a path's rounds, and DiT's in the same rounds
                    with_dit.setdefault(name, []).extend(got[DIT].rounds_s_per_image)
                    timings[name] = t if name not in timings else timings[name].with_rounds(t.rounds_s_per_image)
                out = {name: _against_dit(t, timings[DIT], with_dit[name]) for name, t in timings.items()}
                rounds = len(with_dit[timed[-1].name])
                undecided = _undecided(items, out)
                if not undecided or not budget.more or rounds >= budget.most:
                    return out
                # only DiT and the undecided paths: a path's rounds stay a prefix of DiT's (bench.sections.loop
                # pairs rounds by position)
                timed, repeats = [paths[0]] + [p for p in paths if p.name in undecided], min(budget.more,
                                                                                              budget.most - rounds)
                print(f"  {', '.join(sorted(undecided))}: a cell's interval over {rounds} rounds crosses its band's "
                      f"edge: {repeats} more rounds")
        # trained weights (the mini's) are timed once per machine and code; random or calibrated ones every run
        parts = None
        if all(keys.values()):
            parts = ("loop", {f: getattr(setup, f) for f in SETUP_FIELDS}, sorted(keys.items()),
                     [(p.name, p.deepcache) for p in paths], dataclasses.astuple(budget), ctx.seed)
            out, measured_at = self.record.kept.get(parts, measure, what=f"whole {setup.name}-{setup.steps} loops")
        else:
            out, measured_at = measure(), None
        return LoopRun(setup, registry.entry(items[0].model).static, out,
                       {DIT: "the DyDiT's weights, DiT path", **weights}, vae_note, paths, budget, parts, measured_at)


def _against_dit(t, dit, dit_rounds: List[float]) -> dict:
    """A path's timing with its ratio to DiT (medians over the rounds they ran side by side), FLOPs ratio, realized,
    and both per round."""
    ratios = [a / b for a, b in zip(t.rounds_s_per_image, dit_rounds)]  # round by round
    ratio = t.s_per_image / statistics.median(dit_rounds)  # DiT has no cache: its s/image is its rounds' median
    flops = t.gmacs_per_image / dit.gmacs_per_image
    return {**t.to_dict(), "ratio": ratio, "flops_ratio": flops, "realized": flops / ratio,
            "ratio_rounds": ratios, "realized_rounds": [flops / r for r in ratios]}


def _undecided(items: List[Item], out: Dict[str, dict]) -> set:
    """Paths with a cell judged against the paper whose interval crosses its band's edge (bench.runner.judge's
    inconclusive); a baseline cell is the gate's to judge."""
    undecided = set()
    for item in items:
        cell, name = item.cell, path_name(item)
        if cell.baseline or cell.tolerance is None or cell.paper is None or name not in out:
            continue
        if item.metric == METRIC_REALIZED and not registry.entry(item.model).is_dynamic:
            continue
        key = RESULT_KEYS[item.metric]
        measured = Measured.of_rounds(out[name][f"{key}_rounds"], value=out[name][key])
        if cell.tolerance.settles(cell.paper, measured.low, measured.high) is None:
            undecided.add(name)
    return undecided


PER_CALL_TIMING = {"FLUX": "bench.timing.flux", "Latte": "bench.timing.latte"}  # family -> its timing module


def _per_call(item: Item):
    """The timing module of a row timed per model call (DyFLUX, DyLatte), or None (whole loops)."""
    return PER_CALL_TIMING.get(registry.entry(item.model).family)


MEASUREMENT = Loop
