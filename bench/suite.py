"""Suite files (TOML): rows, columns and per-cell paper values with tolerances; loading and validation.

A suite declares what to measure and what the paper printed; it never holds a measured value. Every
problem is reported as one SuiteError line naming the file, the row/cell and the field.
"""
import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from bench.results import Tolerance

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
NOT_SUITES = {"assets.toml"}  # the asset manifest lives beside the suites; bench.assets reads it

PROFILES = ("smoke", "full")
DEVICES = ("cuda",)  # what a cell may require; a cell without `device` runs anywhere
CHECKPOINT = "checkpoint"  # in an `assets` list: the row's own checkpoint asset

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


@dataclass(frozen=True)
class Metric:
    """Which measurement produces a metric, its unit, and its kind (timing compares only on one device)."""
    measure: str
    unit: str
    kind: str = "static"


METRICS = {
    METRIC_PARAMS: Metric("params", "M"),
    METRIC_GFLOPS: Metric("flops", "G"),
    METRIC_GFLOPS_DYNAMIC: Metric("flops", "G"),
    METRIC_FID: Metric("quality", "", "quality"),
    METRIC_SFID: Metric("quality", "", "quality"),
    METRIC_IS: Metric("quality", "", "quality"),
    METRIC_PRECISION: Metric("quality", "", "quality"),
    METRIC_RECALL: Metric("quality", "", "quality"),
    METRIC_S_PER_IMAGE: Metric("latency", "s/image", "timing"),
}

# measurement name -> module exposing measure(row, metric, ctx)
MEASUREMENTS = {name: f"bench.measure.{name}" for name in ("params", "flops", "latency", "quality")}


class SuiteError(ValueError):
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
    sampler: dict = field(default_factory=dict)


@dataclass
class Cell:
    """One (row, column): the paper's value and everything needed to measure and judge it."""
    row: str
    column: str
    metric: str
    unit: str
    measure: str
    paper: float
    tolerance: Optional[Tolerance]
    profiles: Tuple[str, ...]
    assets: Tuple[str, ...]  # resolved asset names (CHECKPOINT replaced by the row's checkpoint)
    device: Optional[str]
    reference: bool = False  # cited, not reproduced (a reference row, or a cell we cannot reproduce)
    erratum: str = ""
    note: str = ""
    sampler: dict = field(default_factory=dict)

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
    options: dict = field(default_factory=dict)
    cells: Dict[str, Cell] = field(default_factory=dict)

    def spec(self, cell: Cell) -> dict:
        """The `row` a measurement receives for one of its cells."""
        return {"name": self.name, "model": self.model, "variant": self.variant, "checkpoint": self.checkpoint,
                "options": dict(self.options), "sampler": dict(cell.sampler), "column": cell.column,
                "assets": list(cell.assets)}


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
    sections: List[dict] = field(default_factory=list)

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
_MODULE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
_TYPES = {str: "a string", bool: "true or false", list: "a list", dict: "a table", float: "a number"}


class _Checker:
    """Typed field access that raises SuiteError pointing at the file, the place and the field."""

    def __init__(self, path):
        self.path = path

    def fail(self, where, field_name, message):
        raise SuiteError(self.path, where, field_name, message)

    def only(self, table, allowed, where):
        for key in table:
            if key not in allowed:
                self.fail(where, key, f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def get(self, table, key, kind, where, required=False, default=None, allow_empty=False):
        if key not in table:
            if required:
                self.fail(where, key, f"missing (expected {_TYPES[kind]})")
            return default
        value = table[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else isinstance(value, kind)
        if not ok or (kind is float and not math.isfinite(value)):
            self.fail(where, key, f"expected {_TYPES[kind]}, got {type(value).__name__} {value!r}")
        if kind is str and required and not allow_empty and not value.strip():
            self.fail(where, key, "must not be empty")
        return float(value) if kind is float else value

    def choices(self, table, key, allowed, where, required=False, default=None):
        value = self.get(table, key, str, where, required, default)
        if value is not None and value not in allowed:
            self.fail(where, key, f"unknown value {value!r} (known: {', '.join(allowed)})")
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
        values = self.get(table, key, list, where, default=None)
        if values is None:
            return tuple(default)
        for v in values:
            if not isinstance(v, str):
                self.fail(where, key, f"expected a list of strings, got {type(v).__name__} {v!r}")
            if allowed is not None and v not in allowed:
                self.fail(where, key, f"unknown value {v!r} (known: {', '.join(allowed)})")
        return tuple(values)

    def tolerance(self, table, where):
        tol = self.get(table, "tolerance", dict, where)
        if tol is None:
            return None
        self.only(tol, {"rel", "abs", "window", "why"}, f"{where}: tolerance")
        kinds = [k for k in ("rel", "abs", "window") if k in tol]
        if len(kinds) != 1:
            self.fail(where, "tolerance", f"give exactly one of rel, abs, window (got {', '.join(kinds) or 'none'})")
        kind = kinds[0]
        why = self.get(tol, "why", str, f"{where}: tolerance", required=True)
        if kind == "window":
            window = tol["window"]
            if (not isinstance(window, list) or len(window) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in window)):
                self.fail(where, "tolerance.window", f"expected [lo, hi] (two numbers), got {window!r}")
            if not window[0] < window[1]:
                self.fail(where, "tolerance.window", f"lo must be below hi, got {window!r}")
            return Tolerance(kind, (float(window[0]), float(window[1])), why)
        value = self.get(tol, kind, float, f"{where}: tolerance")
        if value < 0:
            self.fail(where, f"tolerance.{kind}", f"must not be negative, got {value!r}")
        return Tolerance(kind, value, why)


def _known_assets():
    """Asset names of the manifest, or None where bench.assets cannot be read (the check is then skipped)."""
    try:
        from bench.assets import load_manifest
        return set(load_manifest())
    except (ImportError, OSError, ValueError, KeyError):
        return None


def _known_models():
    from dydit.models import MODELS
    return MODELS


def _column(c: _Checker, table, i, known_assets):
    key = c.get(table, "key", str, f"column {i + 1}", required=True)
    where = f"column '{key}'"
    c.only(table, {"key", "label", "metric", "unit", "measure", "profiles", "device", "assets", "tolerance",
                   "sampler"}, where)
    metric = c.choices(table, "metric", list(METRICS), where, required=True)
    spec = METRICS[metric]
    unit = c.get(table, "unit", str, where, required=True, allow_empty=True)  # "" = unitless (FID, IS)
    if unit != spec.unit:
        c.fail(where, "unit", f"metric {metric!r} is measured in {spec.unit!r}, not {unit!r}")
    measure = c.choices(table, "measure", list(MEASUREMENTS), where, required=True)
    if measure != spec.measure:
        c.fail(where, "measure", f"metric {metric!r} is produced by measurement {spec.measure!r}, not {measure!r}")
    assets = c.str_list(table, "assets", where)
    _check_assets(c, assets, known_assets, where)
    return Column(key, c.get(table, "label", str, where, required=True), metric, unit, measure,
                  c.profiles(table, where), c.choices(table, "device", DEVICES, where), assets, c.tolerance(table, where),
                  c.get(table, "sampler", dict, where, default={}))


def _check_assets(c, names, known_assets, where):
    for name in names:
        if name != CHECKPOINT and known_assets is not None and name not in known_assets:
            c.fail(where, "assets", f"unknown asset {name!r} (not in suites/assets.toml)")


def _cell(c, value, row: Row, column: Column, row_sampler, known_assets):
    where = f"row '{row.name}', cell '{column.key}'"
    table = value if isinstance(value, dict) else {"paper": value}
    c.only(table, {"paper", "tolerance", "profiles", "assets", "device", "metric", "erratum", "note", "reference",
                   "sampler"}, where)
    paper = c.get(table, "paper", float, where, required=True)
    metric = c.choices(table, "metric", list(METRICS), where, default=column.metric)
    if METRICS[metric].unit != column.unit:
        c.fail(where, "metric", f"{metric!r} is measured in {METRICS[metric].unit!r}, the column in {column.unit!r}")
    reference = row.reference or c.get(table, "reference", bool, where, default=False)
    # a cited value is shown, never judged: it takes no tolerance
    tolerance = None if reference else c.tolerance(table, where) or column.tolerance
    if not reference and tolerance is None:
        c.fail(where, "tolerance", "missing: give the cell or its column a tolerance (rel, abs or window, with why)")
    assets = c.str_list(table, "assets", where, default=column.assets)
    _check_assets(c, assets, known_assets, where)
    if CHECKPOINT in assets and not reference and row.checkpoint is None:
        c.fail(where, "assets", f"needs the row's {CHECKPOINT!r} but row '{row.name}' names none")
    resolved = tuple(row.checkpoint if a == CHECKPOINT else a for a in assets if a != CHECKPOINT or row.checkpoint)
    sampler = {**row_sampler, **column.sampler, **c.get(table, "sampler", dict, where, default={})}
    note = c.get(table, "note", str, where, default="")
    if reference and not row.reference and not note:
        c.fail(where, "note", "a cited-only cell in a reproduced row must say why it is not reproduced")
    return Cell(row.name, column.key, metric, column.unit, METRICS[metric].measure, paper, tolerance,
                c.profiles(table, where, default=column.profiles), resolved,
                c.choices(table, "device", DEVICES, where, default=column.device), reference,
                c.get(table, "erratum", str, where, default=""), note, sampler)


def _row(c: _Checker, table, i, columns, suite_sampler, known_assets):
    name = c.get(table, "name", str, f"row {i + 1}", required=True)
    where = f"row '{name}'"
    c.only(table, {"name", "model", "variant", "checkpoint", "reference", "note", "sampler", "options", "cells"}, where)
    reference = c.get(table, "reference", bool, where, default=False)
    model = c.get(table, "model", str, where, required=not reference)
    if model is not None and model not in _known_models():
        c.fail(where, "model", f"unknown model {model!r} (dydit.models.MODELS, e.g. 'DiT-XL/2', 'DyDiT-XL/2')")
    checkpoint = c.get(table, "checkpoint", str, where)
    if checkpoint is not None:
        _check_assets(c, [checkpoint], known_assets, where)
    row = Row(name, model, c.get(table, "variant", str, where, default=""), checkpoint, reference,
              c.get(table, "note", str, where, default=""), c.get(table, "options", dict, where, default={}))
    row_sampler = {**suite_sampler, **c.get(table, "sampler", dict, where, default={})}
    cells = c.get(table, "cells", dict, where, required=True)
    by_key = {col.key: col for col in columns}
    for key, value in cells.items():
        if key not in by_key:
            c.fail(f"{where}, cell '{key}'", None, f"no such column (columns: {', '.join(by_key)})")
        row.cells[key] = _cell(c, value, row, by_key[key], row_sampler, known_assets)
    return row


def _plot(c, table, i, columns):
    where = f"plot {i + 1}"
    c.only(table, {"x", "y", "title", "log_x"}, where)
    for axis in ("x", "y"):
        if c.get(table, axis, str, where, required=True) not in {col.key for col in columns}:
            c.fail(where, axis, f"no such column {table[axis]!r}")
    return {"x": table["x"], "y": table["y"], "title": c.get(table, "title", str, where, default=""),
            "log_x": c.get(table, "log_x", bool, where, default=False)}


def _section(c, table, i):
    where = f"section {i + 1}"
    c.only(table, {"title", "measure", "profiles"}, where)
    measure = c.get(table, "measure", str, where, required=True)
    if not _MODULE.match(measure):
        c.fail(where, "measure", f"expected a module path such as 'bench.pipeline_check', got {measure!r}")
    return {"title": c.get(table, "title", str, where, default=measure), "measure": measure,
            "profiles": list(c.profiles(table, where))}


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
    known_assets = _known_assets()
    columns = [_column(c, t, i, known_assets) for i, t in enumerate(c.tables(data, "columns", required=True))]
    _unique(c, [col.key for col in columns], "column", "key")
    sampler = c.get(head, "sampler", dict, "[suite]", default={})
    rows = [_row(c, t, i, columns, sampler, known_assets) for i, t in enumerate(c.tables(data, "rows", required=True))]
    _unique(c, [row.name for row in rows], "row", "name")
    if not rows or not columns:
        c.fail("top level", "rows" if not rows else "columns", "a suite needs at least one row and one column")
    return Suite(name, c.get(head, "title", str, "[suite]", required=True), path, hashlib.sha256(raw).hexdigest(),
                 c.get(head, "source", str, "[suite]", default=""), c.get(head, "notes", str, "[suite]", default=""),
                 columns, rows, [_plot(c, t, i, columns) for i, t in enumerate(c.tables(data, "plots"))],
                 [_section(c, t, i) for i, t in enumerate(c.tables(data, "sections"))])


def _unique(c, names, what, field_name):
    seen = set()
    for name in names:
        if name in seen:
            c.fail(f"{what} '{name}'", field_name, f"duplicate {what} {field_name} {name!r}")
        seen.add(name)


def suite_files(names=None) -> List[Path]:
    """Suite paths: the given files or names ("table1" -> suites/table1.toml), default every suite."""
    if not names:
        return sorted(_short(p) for p in SUITES_DIR.glob("*.toml") if p.name not in NOT_SUITES)
    paths = []
    for name in names:
        p = Path(name)
        if not p.exists() and p.suffix != ".toml" and (SUITES_DIR / f"{name}.toml").exists():
            p = _short(SUITES_DIR / f"{name}.toml")
        paths.append(p)
    return paths


def _short(path: Path) -> Path:
    """suites/x.toml rather than /abs/.../suites/x.toml when run from the checkout (messages stay short)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
