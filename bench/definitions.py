"""What the bench measures, defined once: metric names, each metric's definition (the measurement that
produces it, its unit, its kind and which direction is better), the measurement and section modules, and
tolerances.

Standard library only: it imports nothing else from `bench`, so suites, results, compare and the
measurement modules all read the same definitions without import cycles.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

# Metric names: the keys of result cells (as torch-fidelity names its result keys).
METRIC_PARAMS = "params"
METRIC_GFLOPS = "gflops"
METRIC_GFLOPS_DYNAMIC = "gflops_dynamic"
METRIC_FID = "fid"
METRIC_SFID = "sfid"
METRIC_IS = "is"
METRIC_PRECISION = "precision"
METRIC_RECALL = "recall"
METRIC_S_PER_IMAGE = "s_per_image"
METRIC_S_PER_IMAGE_RATIO = "s_per_image_ratio"  # whole-loop s/image / DiT's without cache, one run, one device
METRIC_REALIZED = "realized"  # speed-up / FLOPs reduction over the whole loop (DiT's / the path's, one run)
# the mini reproduction (bench/mini): its claims, measured on digits with models trained here
METRIC_FLOPS_RATIO = "flops_ratio"  # dynamic FLOPs over the sampling run / the DiT's
METRIC_ACCURACY = "accuracy"  # generated digits classified as the class they were conditioned on
METRIC_MINI_FID_VS_DIT = "mini_fid_vs_dit"  # this model's mini-FID minus its DiT's
METRIC_ACCURACY_VS_DIT = "accuracy_vs_dit"  # this model's accuracy minus its DiT's
METRIC_WIDTH_LATE_VS_EARLY = "width_late_vs_early"  # mean active width at t >= 750 minus at t < 250
METRIC_INK_VS_BACKGROUND = "ink_vs_background"  # MLP FLOPs per ink patch / per background patch
METRIC_SPEEDUP = "speedup"  # DiT's s/image / the fast path's, interleaved in one run
METRIC_TRAINABLE_FRACTION = "trainable_fraction"  # parameters a fine-tuning trained / what full fine-tuning trains
METRIC_MINI_FID_VS_FULL = "mini_fid_vs_full"  # an adapter fine-tune's mini-FID minus the full fine-tune's
METRIC_MINI_FID_OVER_FLOOR = "mini_fid_over_floor"  # mini-FID / what as many real training digits score
METRIC_MINI_KID = "mini_kid"  # kernel distance (torch-fidelity's unbiased KID) on the classifier's features
METRIC_MINI_FID_VS_CONTROL = "mini_fid_vs_control"  # mini-FID minus the fair control's (static, fine-tuned alike)
METRIC_ACCURACY_VS_CONTROL = "accuracy_vs_control"  # accuracy minus the fair control's
METRIC_MINI_KID_VS_CONTROL = "mini_kid_vs_control"  # mini-KID minus the fair control's
METRIC_READBACK = "readback"  # text-to-image mini: canvases whose every prompted attribute reads back (GenEval-like)
METRIC_READBACK_VS_CONTROL = "readback_vs_control"  # read-back minus the fair control's
METRIC_MINI_FVD = "mini_fvd"  # video mini: Fréchet distance of clip features (bench.mini.evaluate_video)
METRIC_MINI_FVD_VS_CONTROL = "mini_fvd_vs_control"  # mini-FVD minus the fair control's
METRIC_MOTION = "motion"  # video mini: clips whose digit moves as their class's direction says
METRIC_MOTION_VS_CONTROL = "motion_vs_control"  # motion minus the fair control's
# DyDiT++ on FLUX (suites/dyflux.toml)
METRIC_TFLOPS = "tflops"  # MACs of one FLUX forward, batch 1, at bench.measure.flux's convention (x 1e-12)
METRIC_GENEVAL = "geneval"  # GenEval's overall score (cited: its object detector is not reachable here)
METRIC_FVD = "fvd"  # Fréchet video distance (bench.metrics.fvd): Latte's fvd2048_16f
# fvd2048_16f (StyleGAN-V; Latte's UCF-101 numbers): clips, frames per clip, the real clips' frame stride, their side
FVD_CLIPS, FVD_FRAMES, FVD_STRIDE, FVD_RESOLUTION = 2048, 16, 3, 256

# Which way is better. An "exact" metric has one right value: a move either way is a change.
LOWER, HIGHER, EXACT = "lower", "higher", "exact"
DIRECTIONS = (LOWER, HIGHER, EXACT)

# Kinds: a timing compares only between runs on the same device; quality needs trained weights.
STATIC, QUALITY, TIMING = "static", "quality", "timing"
KINDS = (STATIC, QUALITY, TIMING)


@dataclass(frozen=True)
class Metric:
    """Which measurement produces a metric, its unit, its kind, and which direction is better."""
    measure: str
    unit: str
    kind: str
    direction: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"metric kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric direction {self.direction!r} is not one of {', '.join(DIRECTIONS)}")


METRICS = {
    METRIC_PARAMS: Metric("params", "M", STATIC, EXACT),
    METRIC_TFLOPS: Metric("flux", "T", STATIC, LOWER),
    METRIC_GENEVAL: Metric("quality", "", QUALITY, HIGHER),
    METRIC_FVD: Metric("quality", "", QUALITY, LOWER),
    METRIC_GFLOPS: Metric("flops", "G", STATIC, LOWER),
    METRIC_GFLOPS_DYNAMIC: Metric("flops", "G", STATIC, LOWER),
    METRIC_FID: Metric("quality", "", QUALITY, LOWER),
    METRIC_SFID: Metric("quality", "", QUALITY, LOWER),
    METRIC_IS: Metric("quality", "", QUALITY, HIGHER),
    METRIC_PRECISION: Metric("quality", "", QUALITY, HIGHER),
    METRIC_RECALL: Metric("quality", "", QUALITY, HIGHER),
    METRIC_S_PER_IMAGE: Metric("latency", "s/image", TIMING, LOWER),
    METRIC_S_PER_IMAGE_RATIO: Metric("loop", "", TIMING, LOWER),
    METRIC_REALIZED: Metric("loop", "", TIMING, HIGHER),
    METRIC_FLOPS_RATIO: Metric("mini", "", STATIC, EXACT),
    METRIC_ACCURACY: Metric("mini", "", QUALITY, HIGHER),
    METRIC_MINI_FID_VS_DIT: Metric("mini", "", QUALITY, LOWER),
    METRIC_ACCURACY_VS_DIT: Metric("mini", "", QUALITY, HIGHER),
    METRIC_WIDTH_LATE_VS_EARLY: Metric("mini", "", STATIC, EXACT),
    METRIC_INK_VS_BACKGROUND: Metric("mini", "", STATIC, EXACT),
    METRIC_SPEEDUP: Metric("mini", "x", TIMING, HIGHER),
    METRIC_TRAINABLE_FRACTION: Metric("mini", "", STATIC, LOWER),
    METRIC_MINI_FID_VS_FULL: Metric("mini", "", QUALITY, LOWER),
    METRIC_MINI_FID_OVER_FLOOR: Metric("mini", "x", QUALITY, LOWER),
    METRIC_MINI_KID: Metric("mini", "", QUALITY, LOWER),
    METRIC_MINI_FID_VS_CONTROL: Metric("mini", "", QUALITY, LOWER),
    METRIC_ACCURACY_VS_CONTROL: Metric("mini", "", QUALITY, HIGHER),
    METRIC_MINI_KID_VS_CONTROL: Metric("mini", "", QUALITY, LOWER),
    METRIC_READBACK: Metric("mini", "", QUALITY, HIGHER),
    METRIC_READBACK_VS_CONTROL: Metric("mini", "", QUALITY, HIGHER),
    METRIC_MINI_FVD: Metric("mini", "", QUALITY, LOWER),
    METRIC_MINI_FVD_VS_CONTROL: Metric("mini", "", QUALITY, LOWER),
    METRIC_MOTION: Metric("mini", "", QUALITY, HIGHER),
    METRIC_MOTION_VS_CONTROL: Metric("mini", "", QUALITY, HIGHER),
}

TOLERANCE_KINDS = ("rel", "abs", "window", "atmost", "atleast")
# The mini's spread study (bench/mini/spread.py): committed data that suite tolerances cite by name
# (`tolerance = { spread = "mini_fid", why = ... }`; a family's own with `family = "FLUX"`, default SPREAD_FAMILY),
# resolved by bench/suite.py to atmost/atleast by the metric's better direction: a claim may be worse than its
# reference by the spread, better by any amount
SPREAD_FILE = Path(__file__).resolve().parents[1] / "suites" / "data" / "mini-spread.json"
SPREAD_FAMILY = "DiT"  # the family whose spread a tolerance cites unless it names another; studied first
SPREAD_FAMILIES = ("DiT", "SiT", "Latte", "FLUX")  # the families `bench mini-spread --families` takes
# the families whose own baseline spread (training x sampling seeds, threads) the study measures: a tolerance cites
# one with `family = NAME`; SiT shares DiT's network and digits and is judged with DiT's; Latte's waits for a recipe
# that learns (issue 25)
SPREAD_MEASURED = ("DiT", "FLUX")

# measurement name -> module exposing MEASUREMENT (a bench.measure.base.Measurement)
MEASUREMENTS = {name: f"bench.measure.{name}" for name in ("params", "flops", "latency", "quality", "mini", "loop",
                                                                   "flux")}

# [[sections]] `module` -> the project's own module exposing run(SuiteRun) (nothing else is imported)
SECTIONS = {name: f"bench.sections.{name}" for name in ("pipeline_check", "mini", "loop", "scaling", "scaling_mini")}


@dataclass(frozen=True)
class Tolerance:
    """How far a measured value may be from the paper's: rel, abs, a window [lo, hi) of offsets, or one-sided:
    atmost (up to value above it; any lower passes) or atleast (down to value below it; any higher passes)."""
    kind: str  # one of TOLERANCE_KINDS
    value: object  # float, or (lo, hi) for a window
    why: str

    def band(self, paper: float) -> Tuple[float, float]:
        """The accepted measured values: closed [lo, hi] for rel/abs/one-sided, half-open [lo, hi) for a window."""
        if self.kind == "rel":
            return paper - self.value * abs(paper), paper + self.value * abs(paper)
        if self.kind == "abs":
            return paper - self.value, paper + self.value
        if self.kind == "atmost":
            return -math.inf, paper + self.value
        if self.kind == "atleast":
            return paper - self.value, math.inf
        return paper + self.value[0], paper + self.value[1]

    def accepts(self, paper: float, measured: float) -> bool:
        lo, hi = self.band(paper)
        return lo <= measured < hi if self.kind == "window" else lo <= measured <= hi

    def settles(self, paper: float, low: float, high: float) -> Optional[bool]:
        """Whether a measured interval [low, high] decides: True when both ends are accepted, False when both lie
        outside on one side of the band, None when it crosses an edge (within the measurement's own spread)."""
        lo, hi = self.band(paper)
        if self.accepts(paper, low) and self.accepts(paper, high):
            return True
        if not self.accepts(paper, low) and not self.accepts(paper, high) and (high < lo or low > hi):
            return False
        return None

    def allowed_move(self, old: float) -> float:
        """How far a value may move between two runs before compare calls it a change (half the band; a
        one-sided tolerance's value)."""
        if self.kind in ("atmost", "atleast"):
            return self.value
        lo, hi = self.band(old)
        return (hi - lo) / 2

    def text(self, reference="the paper's value") -> str:
        """The band in words, around `reference` (a gate compares with the baseline's value instead)."""
        if self.kind == "rel":
            return f"±{self.value * 100:g} %"
        if self.kind == "abs":
            return f"±{self.value:g}"
        if self.kind == "atmost":
            return f"at most {self.value:+g} above {reference}"
        if self.kind == "atleast":
            return f"down to {self.value:g} below {reference}"
        lo, hi = self.value
        return f"[{lo:+g}, {hi:+g}) around {reference}"

    def to_dict(self) -> dict:
        return {self.kind: list(self.value) if self.kind == "window" else self.value, "why": self.why}

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> Optional["Tolerance"]:
        if not d:
            return None
        kind = next(k for k in TOLERANCE_KINDS if k in d)
        return cls(kind, tuple(d[kind]) if kind == "window" else d[kind], d.get("why", ""))
