"""Suite files (TOML): rows, columns and per-cell paper values with tolerances; loading and validation.

A suite declares what to measure and what the paper printed; it never holds a measured value. Every
problem is reported as one SuiteError line naming the file, the row/cell and the field. The schema is
checked by the small `_Checker` below rather than by a schema library such as pydantic, because it already
gives those one-line errors naming file, place and field, and needs no new dependency.
"""
import dataclasses
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

from bench.definitions import (EXACT, LOWER, MEASUREMENTS, METRICS, SECTIONS, SPREAD_FAMILY, SPREAD_FILE,
                               SPREAD_MEASURED, TOLERANCE_KINDS, Tolerance)
from dydit.errors import UserError
from dydit import registry, sampler_spec
from dydit.sampler_spec import SamplerSpec
from dydit.train_config import ADAPTERS, ROUTERS

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
NOT_SUITES = {"assets.toml"}  # the asset manifest lives beside the suites; bench.assets reads it

# smoke: what a CPU can run (params, FLOPs, timing ratios at tiny cost); ci: a GPU runner's gate on a push (at most
# 30 min on one GPU: params, FLOPs, the DDIM-50 s/image ratios, FID-5K; bench.estimate); full: the paper's protocol
PROFILES = ("smoke", "ci", "full")
DEVICES = ("cuda",)  # what a cell may require; a cell without `device` runs anywhere
CHECKPOINT = "checkpoint"  # in an `assets` list: the row's own checkpoint asset
PRECISIONS = sampler_spec.PRECISIONS  # of sampling: TF32 matmuls on or off
FID_REFERENCE = "adm-ref-imagenet256"  # the default reference batch of quality cells (ADM's ImageNet 256)
GUIDED_ALL = "all"  # `guided_channels = "all"`: guidance on every latent channel (None in SamplerSpec)


SAMPLER_FIELDS = tuple(f.name for f in dataclasses.fields(SamplerSpec))
ROUTER_OPTIONS = (*ROUTERS, "random")  # "random": the all-model's counts of heads, groups and tokens, drawn at random
# suite keys that were renamed or dropped: an old file gets one line saying what to write instead
RENAMED = {("columns", "unit"): "no longer written: a column's unit follows from its metric (bench.definitions)",
           ("columns", "measure"): "no longer written: a column's measurement follows from its metric "
                                   "(bench.definitions)",
           ("sampler", "reference"): "moved: the reference batch is the column's or cell's `fid_reference`",
           ("sections", "measure"): "renamed to 'module' (a module of bench/sections/, e.g. module = \"loop\")"}


@dataclass(frozen=True)
class Options:
    """What a row says about its model beyond the name."""
    flops_target: Optional[float] = None  # a dynamic model's lambda: its target dynamic / static FLOPs
    # what calibrated routers (no checkpoint) are calibrated to: the dynamic / static FLOPs the paper measured
    # for this lambda (DyDiT-XL lambda=0.5: 57.88 / 118.69); None: flops_target
    flops_fraction: Optional[float] = None
    routers: str = "all"  # the mini's ablation: "width" (TDW only), "token" (SDT only), "random" (ROUTER_OPTIONS)
    adapter: str = "none"  # the mini's DyDiT++ fine-tuning: "lora" (static, peft), "td-lora" (ADAPTERS)
    # the mini's fair control: a static model fine-tuned from its DiT exactly as its dynamic rows are (same steps,
    # lr, EMA, data, adapter), without routers or the FLOPs loss ("DiT + FT"); dynamic rows are compared with it
    finetuned: bool = False

    @property
    def calibration_fraction(self) -> Optional[float]:
        """The FLOPs fraction calibrated routers aim at."""
        return self.flops_fraction if self.flops_fraction is not None else self.flops_target


OPTIONS = tuple(f.name for f in dataclasses.fields(Options))


class SuiteError(UserError, ValueError):
    """A malformed suite: one line naming the file, where in it (row/cell) and the field."""

    def __init__(self, path, where, field_name, message):
        self.path, self.where, self.field, self.message = str(path), where, field_name, message
        parts = [self.path] + ([where] if where else []) + ([f"field '{field_name}'"] if field_name else [])
        super().__init__(": ".join(parts + [message]))


@dataclass
class Column:
    key: str
    label: str
    metric: str
    unit: str
    measure: str
    profiles: Tuple[str, ...]
    device: Optional[str] = None
    assets: Tuple[str, ...] = ()
    tolerance: Optional[Tolerance] = None
    fid_reference: str = FID_REFERENCE
    sampler: dict = field(default_factory=dict)  # as written (validated); cells merge it into a SamplerSpec


@dataclass
class Cell:
    """One (row, column): the paper's value and everything needed to measure and judge it."""
    row: str
    column: str
    metric: str
    unit: str
    measure: str
    paper: Optional[float]  # None for a baseline cell (no paper number at this setting)
    tolerance: Optional[Tolerance]
    profiles: Tuple[str, ...]
    assets: Tuple[str, ...]  # resolved asset names (CHECKPOINT replaced by the row's checkpoint)
    device: Optional[str]
    reference: bool = False  # cited, not reproduced (a reference row, or a cell we cannot reproduce)
    erratum: str = ""
    # a cited cell: why it is not reproduced; a measured one: its context, added to the reason of a fail or an
    # inconclusive so the report explains the miss (the measured cause of a known failure, or how it is measured)
    note: str = ""
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    fid_reference: str = FID_REFERENCE  # the asset FID, sFID, IS, precision, recall are computed against
    unavailable: str = ""  # why this cell cannot be measured in this checkout yet: it is skipped with this reason
    # no paper number at this setting (the ci profile's FID-5K): measured, never judged against the paper; the
    # regression gate compares it with the runner's baseline within the spread `bench baseline calibrate` stored
    baseline: bool = False

    @property
    def kind(self):
        return METRICS[self.metric].kind


@dataclass
class Row:
    name: str
    model: Optional[str]
    variant: str = ""
    checkpoint: Optional[str] = None
    reference: bool = False
    note: str = ""
    options: Options = field(default_factory=Options)
    cells: Dict[str, Cell] = field(default_factory=dict)
    unavailable: Dict[str, str] = field(default_factory=dict)  # measurement -> why its cells are not measurable yet


@dataclass(frozen=True)
class SectionSpec:
    """A `[[sections]]` entry: a report section the runner runs after the cells."""
    title: str
    module: str  # the importable module (bench.definitions.SECTIONS: only the project's own)
    profiles: Tuple[str, ...]


@dataclass
class Suite:
    name: str
    title: str
    path: Path
    sha256: str
    source: str = ""
    notes: str = ""
    columns: List[Column] = field(default_factory=list)
    rows: List[Row] = field(default_factory=list)
    plots: List[dict] = field(default_factory=list)
    sections: List[SectionSpec] = field(default_factory=list)

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def cells(self):
        """(row, cell) pairs in table order."""
        for row in self.rows:
            for column in self.columns:
                if column.key in row.cells:
                    yield row, row.cells[column.key]


#################################################################################
#                                  Validation                                   #
#################################################################################

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TYPES = {str: "a string", bool: "true or false", list: "a list", dict: "a table", float: "a number",
          int: "an integer"}


def _is(value, kind):
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


class _Checker:
    """Typed field access that raises SuiteError pointing at the file, the place and the field."""

    def __init__(self, path):
        self.path = path

    def fail(self, where, field_name, message):
        raise SuiteError(self.path, where, field_name, message)

    def renamed(self, table, kind, where):
        """One line for a key an older suite format had (RENAMED), saying what to write instead."""
        for key in table:
            if (kind, key) in RENAMED:
                self.fail(where, key, RENAMED[kind, key])

    def only(self, table, allowed, where):
        for key in table:
            if key not in allowed:
                self.fail(where, key, f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def get(self, table, key, kind, where, required=False, default=None, allow_empty=False):
        """table[key] of the given type (str, bool, list, dict, float = any finite number, int), or default.

        A given string must not be blank unless allow_empty (a blank `note` would say nothing)."""
        if key not in table:
            if required:
                self.fail(where, key, f"missing (expected {_TYPES[kind]})")
            return default
        value = table[key]
        if not _is(value, kind):
            self.fail(where, key, f"expected {_TYPES[kind]}, got {type(value).__name__} {value!r}")
        if kind is str and not allow_empty and not value.strip():
            self.fail(where, key, "must not be empty")
        return float(value) if kind is float else value

    def number(self, table, key, where, kind=float, minimum=None, maximum=None, above=None):
        """A number (or integer) within [minimum, maximum] (and > above), or None where absent."""
        value = self.get(table, key, kind, where)
        if value is None:
            return None
        if minimum is not None and value < minimum:
            self.fail(where, key, f"must be >= {minimum:g}, got {value!r}")
        if above is not None and not value > above:
            self.fail(where, key, f"must be > {above:g}, got {value!r}")
        if maximum is not None and value > maximum:
            self.fail(where, key, f"must be <= {maximum:g}, got {value!r}")
        return value

    def choices(self, table, key, allowed, where, required=False, default=None, what="value"):
        value = self.get(table, key, str, where, required, default)
        if value is not None and value not in allowed:
            self.fail(where, key, f"unknown {what} {value!r} (known: {', '.join(allowed)})")
        return value

    def tables(self, data, key, required=False):
        """The [[key]] array of tables at the top level."""
        items = self.get(data, key, list, "top level", required, default=[])
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                self.fail(f"{key} {i + 1}", None, f"expected a table ([[{key}]]), got {item!r}")
        return items

    def profiles(self, table, where, default=None):
        """A non-empty list of known profiles (required where there is no default)."""
        profiles = self.str_list(table, "profiles", where, PROFILES, default or ())
        if not profiles:
            self.fail(where, "profiles", f"missing or empty (expected a list of {', '.join(PROFILES)})")
        return profiles

    def str_list(self, table, key, where, allowed=None, default=()):
        """A list of distinct strings (each one of `allowed` if given), or default where absent."""
        values = self.get(table, key, list, where, default=None)
        if values is None:
            return tuple(default)
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v.strip():
                self.fail(where, key, f"expected a list of strings, got {type(v).__name__} {v!r}")
            if allowed is not None and v not in allowed:
                self.fail(where, key, f"unknown value {v!r} (known: {', '.join(allowed)})")
            if v in values[:i]:
                self.fail(where, key, f"{v!r} is listed twice")
        return tuple(values)

    def tolerance(self, table, where, metric):
        tol = self.get(table, "tolerance", dict, where)
        if tol is None:
            return None
        self.only(tol, {*TOLERANCE_KINDS, "spread", "family", "why"}, f"{where}: tolerance")
        if "family" in tol and "spread" not in tol:
            self.fail(where, "tolerance.family", "names whose spread a `spread = KEY` tolerance cites: give spread too")
        kinds = [k for k in (*TOLERANCE_KINDS, "spread") if k in tol]
        if len(kinds) != 1:
            self.fail(where, "tolerance", f"give exactly one of {', '.join(TOLERANCE_KINDS)}, spread (got "
                                          f"{', '.join(kinds) or 'none'})")
        kind = kinds[0]
        why = self.get(tol, "why", str, f"{where}: tolerance", required=True)
        if kind == "spread":
            return self.spread(tol, where, metric, why)
        if kind == "window":
            window = tol["window"]
            if not isinstance(window, list) or len(window) != 2 or not all(_is(v, float) for v in window):
                self.fail(where, "tolerance.window", f"expected [lo, hi] (two finite numbers), got {window!r}")
            if not window[0] < window[1]:
                self.fail(where, "tolerance.window", f"lo must be below hi, got {window!r}")
            return Tolerance(kind, (float(window[0]), float(window[1])), why)
        value = self.get(tol, kind, float, f"{where}: tolerance")
        if value < 0:
            self.fail(where, f"tolerance.{kind}", f"must not be negative, got {value!r}")
        return Tolerance(kind, value, why)

    def spread(self, tol, where, metric, why):
        """`spread = KEY` (optionally `family = NAME`, default SPREAD_FAMILY): the tolerance the mini's spread study
        derived for KEY from that family's baseline (SPREAD_FILE), one-sided: the claim may be worse than its
        reference by it, better by any amount (the metric says which way is worse)."""
        key = self.get(tol, "spread", str, f"{where}: tolerance")
        family = self.get(tol, "family", str, f"{where}: tolerance", default=SPREAD_FAMILY)
        if family not in SPREAD_MEASURED:
            self.fail(where, "tolerance.family", f"unknown {family!r}; the spread study measures the spread of "
                                                 f"{', '.join(SPREAD_MEASURED)}")
        direction = METRICS[metric].direction
        if direction == EXACT:
            self.fail(where, "tolerance.spread", f"{metric!r} has no better direction: a spread applies to a claim "
                                                 f"that may be worse by it")
        command = "`nox -s mini-spread`" if family == SPREAD_FAMILY else \
            f"`python -m bench mini-spread --families {family}`"
        try:
            study = json.loads(SPREAD_FILE.read_text())
        except (OSError, ValueError) as e:
            self.fail(where, "tolerance.spread", f"{_short(SPREAD_FILE)} cannot be read ({type(e).__name__}): run "
                                                 f"{command} (the mini's spread study) and commit it")
        try:
            fam = study["families"][family]
            provenance = fam.get("provenance", study["provenance"])  # a family studied later: its own run
            source = (f"from {_short(SPREAD_FILE)} ({family}; {study['rules']['tolerance']}; {provenance['date']}, "
                      f"{str(provenance['commit'])[:10]})")
            derived = {k: float(v) for k, v in fam["tolerances"].items()}
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            self.fail(where, "tolerance.spread", f"{_short(SPREAD_FILE)} has no spread of {family} "
                                                 f"({type(e).__name__}): run {command} (the mini's spread study) and "
                                                 f"commit it")
        if key not in derived:
            self.fail(where, "tolerance.spread", f"unknown {key!r}; the spread study derived {', '.join(derived)}")
        return Tolerance("atmost" if direction == LOWER else "atleast", derived[key],
                         f"{why}; {key} {derived[key]:g} {source}")


def _known_assets():
    """Asset names of the manifest, or None where bench.assets cannot be read (the check is then skipped)."""
    try:
        from bench.assets import load_manifest
        return set(load_manifest())
    except (ImportError, OSError, ValueError, KeyError):
        return None


def _check_assets(c, names, known_assets, where, field_name="assets"):
    for name in names:
        if name != CHECKPOINT and known_assets is not None and name not in known_assets:
            c.fail(where, field_name, f"unknown asset {name!r} (not in suites/assets.toml)")


def _sampler(c: _Checker, table, where, known_assets) -> dict:
    """A `sampler` table as written (suite, row, column or cell): only SamplerSpec's fields, each typed and
    ranged. Returns its values as SamplerSpec takes them ("all" guided channels -> None)."""
    from dydit.sampler_spec import LABELS, SAMPLERS
    raw = c.get(table, "sampler", dict, where, default={})
    where = "[suite.sampler]" if where == "[suite]" else f"{where}: sampler"
    c.renamed(raw, "sampler", where)
    c.only(raw, SAMPLER_FIELDS, where)
    out = {}
    if "name" in raw:
        out["name"] = c.choices(raw, "name", list(SAMPLERS), where, what="sampler")
    for key, minimum in (("steps", 1), ("num_samples", 1), ("batch_size", 1), ("seed", 0),
                         ("deepcache_interval", 0)):
        if key in raw:
            out[key] = c.number(raw, key, where, int, minimum=minimum)
    if "cfg_scale" in raw:
        out["cfg_scale"] = c.number(raw, "cfg_scale", where, minimum=1)
    if "guided_channels" in raw:
        guided = raw["guided_channels"]
        if guided != GUIDED_ALL and not (_is(guided, int) and 1 <= guided <= 4):
            c.fail(where, "guided_channels", f"expected 1 to 4 (DiT guides 3) or {GUIDED_ALL!r}, got {guided!r}")
        out["guided_channels"] = None if guided == GUIDED_ALL else guided
    if "labels" in raw:
        out["labels"] = c.choices(raw, "labels", list(LABELS), where, what="label mode")
    if "precision" in raw:
        out["precision"] = c.choices(raw, "precision", PRECISIONS, where, what="precision")
    return out


def _column(c: _Checker, table, i, known_assets):
    key = c.get(table, "key", str, f"column {i + 1}", required=True)
    where = f"column '{key}'"
    c.renamed(table, "columns", where)
    c.only(table, {"key", "label", "metric", "profiles", "device", "assets", "tolerance", "fid_reference", "sampler"},
           where)
    metric = c.choices(table, "metric", list(METRICS), where, required=True)
    unit, measure = METRICS[metric].unit, METRICS[metric].measure  # "" = unitless (FID, IS)
    assets = c.str_list(table, "assets", where)
    _check_assets(c, assets, known_assets, where)
    fid_reference = c.get(table, "fid_reference", str, where, default=FID_REFERENCE)
    _check_assets(c, [fid_reference], known_assets, where, "fid_reference")
    return Column(key, c.get(table, "label", str, where, required=True), metric, unit, measure,
                  c.profiles(table, where), c.choices(table, "device", DEVICES, where), assets,
                  c.tolerance(table, where, metric), fid_reference, _sampler(c, table, where, known_assets))


def _cell(c, value, row: Row, column: Column, row_sampler, known_assets):
    where = f"row '{row.name}', cell '{column.key}'"
    table = value if isinstance(value, dict) else {"paper": value}
    c.only(table, {"paper", "tolerance", "profiles", "assets", "device", "metric", "erratum", "note", "reference",
                   "sampler", "fid_reference", "unavailable", "baseline"}, where)
    if c.get(table, "baseline", bool, where, default=False):
        return _baseline_cell(c, table, row, column, row_sampler, known_assets, where)
    paper = c.get(table, "paper", float, where, required=True)
    metric = c.choices(table, "metric", list(METRICS), where, default=column.metric)
    if METRICS[metric].unit != column.unit:
        c.fail(where, "metric", f"{metric!r} is measured in {METRICS[metric].unit!r}, the column in {column.unit!r}")
    flag = c.get(table, "reference", bool, where)
    if row.reference and flag is False:
        c.fail(where, "reference", f"every cell of the cited row '{row.name}' is cited")
    reference = row.reference or bool(flag)
    # a cited value is shown, never judged or measured: it takes no tolerance and cannot be unavailable
    for key in ("tolerance", "unavailable"):
        if reference and key in table:
            c.fail(where, key, "a cited cell is never measured: remove it")
    tolerance = None if reference else c.tolerance(table, where, metric)
    if tolerance is None and not reference and column.tolerance is not None:
        one_sided = column.tolerance.kind in ("atmost", "atleast")  # resolved for the column's metric's direction
        if one_sided and METRICS[metric].direction != METRICS[column.metric].direction:
            c.fail(where, "tolerance", f"the column's one-sided tolerance is for {column.metric!r}; this cell measures "
                                       f"{metric!r}, better the other way: give the cell its own tolerance")
        tolerance = column.tolerance
    if not reference and tolerance is None:
        c.fail(where, "tolerance", "missing: give the cell or its column a tolerance (rel, abs, window, atmost, "
                                   "atleast or spread, with why)")
    assets = c.str_list(table, "assets", where, default=column.assets)
    _check_assets(c, assets, known_assets, where)
    if CHECKPOINT in assets and not reference and row.checkpoint is None:
        c.fail(where, "assets", f"needs the row's {CHECKPOINT!r} but row '{row.name}' names none")
    resolved = tuple(row.checkpoint if a == CHECKPOINT else a for a in assets if a != CHECKPOINT or row.checkpoint)
    sampler = SamplerSpec(**{**row_sampler, **column.sampler, **_sampler(c, table, where, known_assets)})
    note = c.get(table, "note", str, where, default="")
    if reference and not row.reference and not note:
        c.fail(where, "note", "a cited-only cell in a reproduced row must say why it is not reproduced")
    measure = METRICS[metric].measure
    unavailable = c.get(table, "unavailable", str, where) or ("" if reference else row.unavailable.get(measure, ""))
    fid_reference = c.get(table, "fid_reference", str, where, default=column.fid_reference)
    _check_assets(c, [fid_reference], known_assets, where, "fid_reference")
    return Cell(row.name, column.key, metric, column.unit, measure, paper, tolerance,
                c.profiles(table, where, default=column.profiles), resolved,
                c.choices(table, "device", DEVICES, where, default=column.device), reference,
                c.get(table, "erratum", str, where, default=""), note, sampler, fid_reference, unavailable)


def _baseline_cell(c, table, row: Row, column: Column, row_sampler, known_assets, where) -> Cell:
    """`{ baseline = true, note = "..." }`: a cell with no paper number at its setting (FID-5K of the ci profile).
    It is measured and shown, never judged against the paper; its tolerance is the spread the runner calibrates
    (bench.baseline), so it may not give one here."""
    for key in ("paper", "tolerance", "reference", "metric", "erratum"):
        if key in table:
            c.fail(where, key, "a baseline cell has no paper number: the gate judges it against the runner's own "
                               "calibrated baseline (remove it, or remove `baseline`)")
    if row.reference:
        c.fail(where, "baseline", f"every cell of the cited row '{row.name}' is cited")
    note = c.get(table, "note", str, where)
    if note is None:
        c.fail(where, "note", "a baseline cell must say why the paper has no number to judge it against")
    assets = c.str_list(table, "assets", where, default=column.assets)
    _check_assets(c, assets, known_assets, where)
    if CHECKPOINT in assets and row.checkpoint is None:
        c.fail(where, "assets", f"needs the row's {CHECKPOINT!r} but row '{row.name}' names none")
    resolved = tuple(row.checkpoint if a == CHECKPOINT else a for a in assets)
    sampler = SamplerSpec(**{**row_sampler, **column.sampler, **_sampler(c, table, where, known_assets)})
    fid_reference = c.get(table, "fid_reference", str, where, default=column.fid_reference)
    _check_assets(c, [fid_reference], known_assets, where, "fid_reference")
    return Cell(row.name, column.key, column.metric, column.unit, column.measure, None, None,
                c.profiles(table, where, default=column.profiles), resolved,
                c.choices(table, "device", DEVICES, where, default=column.device), note=note, sampler=sampler,
                fid_reference=fid_reference, unavailable=c.get(table, "unavailable", str, where) or
                row.unavailable.get(column.measure, ""), baseline=True)


def _options(c, table, where) -> Options:
    options = c.get(table, "options", dict, where, default={})
    where = f"{where}: options"
    c.only(options, OPTIONS, where)
    return Options(c.number(options, "flops_target", where, above=0, maximum=1),
                   c.number(options, "flops_fraction", where, above=0, maximum=1),
                   c.choices(options, "routers", ROUTER_OPTIONS, where, default="all"),
                   c.choices(options, "adapter", ADAPTERS, where, default="none"),
                   c.get(options, "finetuned", bool, where, default=False))


def _unavailable(c, table, where, reference):
    """A row's `unavailable = { <measurement> = "why" }`: its cells of that measurement are skipped with the why."""
    unavailable = c.get(table, "unavailable", dict, where, default={})
    if reference and unavailable:
        c.fail(where, "unavailable", "a cited row is never measured: remove it")
    for measure in unavailable:
        if measure not in MEASUREMENTS:
            c.fail(f"{where}: unavailable", measure, f"unknown measurement (known: {', '.join(MEASUREMENTS)})")
        c.get(unavailable, measure, str, f"{where}: unavailable")  # the reason: a non-empty string
    return dict(unavailable)


def _row(c: _Checker, table, i, columns, suite_sampler, known_assets):
    name = c.get(table, "name", str, f"row {i + 1}", required=True)
    where = f"row '{name}'"
    c.only(table, {"name", "model", "variant", "checkpoint", "reference", "note", "sampler", "options", "unavailable",
                   "cells"}, where)
    reference = c.get(table, "reference", bool, where, default=False)
    model = c.get(table, "model", str, where, required=not reference)
    if model is not None and not registry.is_known(model):
        c.fail(where, "model", f"unknown model {model!r} (dydit.registry: e.g. 'DiT-XL/2', 'DyDiT-XL/2', 'FLUX-Lite')")
    options = _options(c, table, where)
    if options.finetuned and (model is None or registry.entry(model).is_dynamic or not registry.entry(model).is_mini):
        c.fail(f"{where}: options", "finetuned", "only a static mini model has a fine-tuned control (a dynamic row "
                                                 "is always fine-tuned): remove it or use e.g. 'DiT-Mini/2'")
    checkpoint = c.get(table, "checkpoint", str, where)
    if checkpoint is not None:
        _check_assets(c, [checkpoint], known_assets, where, "checkpoint")
    row = Row(name, model, c.get(table, "variant", str, where, default=""), checkpoint, reference,
              c.get(table, "note", str, where, default=""), options,
              unavailable=_unavailable(c, table, where, reference))
    row_sampler = {**suite_sampler, **_sampler(c, table, where, known_assets)}
    cells = c.get(table, "cells", dict, where, required=True)
    if not cells:
        c.fail(where, "cells", "empty: a row needs at least one cell")
    by_key = {col.key: col for col in columns}
    for key, value in cells.items():
        if key not in by_key:
            c.fail(f"{where}, cell '{key}'", None, f"no such column (columns: {', '.join(by_key)})")
        row.cells[key] = _cell(c, value, row, by_key[key], row_sampler, known_assets)
    measured = {cell.measure for cell in row.cells.values() if not cell.reference}
    for measure in row.unavailable:
        if measure not in measured:
            c.fail(f"{where}: unavailable", measure, f"the row has no reproduced cell measured by {measure!r}")
    return row


def _plot(c, table, i, columns):
    where = f"plot {i + 1}"
    c.only(table, {"x", "y", "title", "log_x"}, where)
    keys = [col.key for col in columns]
    for axis in ("x", "y"):
        c.choices(table, axis, keys, where, required=True, what="column")
    if table["x"] == table["y"]:
        c.fail(where, "y", f"the same column as x ({table['x']!r})")
    return {"x": table["x"], "y": table["y"], "title": c.get(table, "title", str, where, default=""),
            "log_x": c.get(table, "log_x", bool, where, default=False)}


def _section(c, table, i) -> SectionSpec:
    where = f"section {i + 1}"
    c.renamed(table, "sections", where)
    c.only(table, {"title", "module", "profiles"}, where)
    name = c.choices(table, "module", list(SECTIONS), where, required=True, what="section module")
    # the module bench.runner imports: only the project's own (bench.definitions.SECTIONS)
    return SectionSpec(c.get(table, "title", str, where, default=name), SECTIONS[name], c.profiles(table, where))


def load_suite(path) -> Suite:
    """Reads and validates a suite file; raises SuiteError (one line) on the first problem."""
    path = Path(path)
    c = _Checker(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        c.fail(None, None, f"cannot read: {e.strerror or e}")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        c.fail(None, None, f"not valid TOML: {e}")
    c.only(data, {"suite", "columns", "rows", "plots", "sections"}, "top level")
    head = c.get(data, "suite", dict, "top level", required=True)
    c.only(head, {"name", "title", "source", "notes", "sampler"}, "[suite]")
    name = c.get(head, "name", str, "[suite]", required=True)
    if not _NAME.match(name):
        c.fail("[suite]", "name", f"use lowercase letters, digits, '-' or '_' (it names the report files), got {name!r}")
    title = c.get(head, "title", str, "[suite]", required=True)
    known_assets = _known_assets()
    sampler = _sampler(c, head, "[suite]", known_assets)
    columns = [_column(c, t, i, known_assets) for i, t in enumerate(c.tables(data, "columns", required=True))]
    _unique(c, [col.key for col in columns], "column", "key")
    rows = [_row(c, t, i, columns, sampler, known_assets) for i, t in enumerate(c.tables(data, "rows", required=True))]
    _unique(c, [row.name for row in rows], "row", "name")
    if not rows or not columns:
        c.fail("top level", "rows" if not rows else "columns", "a suite needs at least one row and one column")
    return Suite(name, title, path, hashlib.sha256(raw).hexdigest(),
                 c.get(head, "source", str, "[suite]", default=""), c.get(head, "notes", str, "[suite]", default=""),
                 columns, rows, [_plot(c, t, i, columns) for i, t in enumerate(c.tables(data, "plots"))],
                 [_section(c, t, i) for i, t in enumerate(c.tables(data, "sections"))])


def _unique(c, names, what, field_name):
    seen = set()
    for name in names:
        if name in seen:
            c.fail(f"{what} '{name}'", field_name, f"duplicate {what} {field_name} {name!r}")
        seen.add(name)


def load_suites(names=None) -> Iterator[Tuple[Path, Union[Suite, SuiteError]]]:
    """(path, Suite or the SuiteError saying what is wrong) of each suite file (suite_files), in order."""
    for path in suite_files(names):
        try:
            yield path, load_suite(path)
        except SuiteError as e:
            yield path, e


def suite_files(names=None) -> List[Path]:
    """Suite paths: the given files or names ("table1" -> suites/table1.toml), default every suite."""
    if not names:
        return sorted(_short(p) for p in SUITES_DIR.glob("*.toml") if p.name not in NOT_SUITES)
    paths = []
    for name in names:
        p = Path(name)
        if not p.exists() and p.suffix != ".toml" and (SUITES_DIR / f"{name}.toml").exists():
            p = _short(SUITES_DIR / f"{name}.toml")
        if not p.exists():
            known = ", ".join(q.stem for q in suite_files())
            raise SuiteError(p, None, None, f"no such suite file or name: give a .toml file or one of {known}")
        paths.append(p)
    return paths


def _short(path: Path) -> Path:
    """suites/x.toml rather than /abs/.../suites/x.toml when run from the checkout (messages stay short)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
