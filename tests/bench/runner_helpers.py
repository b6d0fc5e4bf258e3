"""Shared by the suite/runner/report tests: a small valid suite, fake measurement modules, the CLI."""
import sys
import types

from bench import definitions
from bench.runner import Machine

# Valid: one reproduced row with a checkpoint, one cited row. Malformed variants are edits of this text.
MINI = '''\
[suite]
name = "mini"
title = "Mini"

[[columns]]
key = "params"
label = "Params (M)"
metric = "params"
profiles = ["smoke", "full"]
tolerance = { window = [-0.5, 1.0], why = "printed as whole millions" }

[[columns]]
key = "fid"
label = "FID"
metric = "fid"
profiles = ["full"]
device = "cuda"
assets = ["checkpoint", "vae-ft-ema"]
tolerance = { abs = 0.1, why = "seed noise" }

[[rows]]
name = "DiT-XL"
model = "DiT-XL/2"
checkpoint = "dit-xl-2"
cells = { params = 675, fid = 2.27 }

[[rows]]
name = "ADM"
reference = true
cells = { params = 608, fid = 4.59 }
'''

# Uses a fake metric "fake" (unit "u", measurement "fake") and a fake timing metric "fake_s".
FAKE_SUITE = '''\
[suite]
name = "fake"
title = "Fake suite"

[[columns]]
key = "a"
label = "A (u)"
metric = "fake"
profiles = ["smoke", "full"]
tolerance = { rel = 0.01, why = "1 % band for the test" }

[[columns]]
key = "t"
label = "T (s)"
metric = "fake_s"
profiles = ["smoke", "full"]
tolerance = { abs = 0.5, why = "timing band for the test" }

[[rows]]
name = "one"
model = "DiT-S/8"
cells = { a = 1.0, t = 2.0 }

[[rows]]
name = "two"
model = "DiT-S/8"
cells = { a = 2.0, t = 2.0 }

[[rows]]
name = "three"
model = "DiT-S/8"
cells = { a = 3.0, t = 2.0 }

[[rows]]
name = "cited"
reference = true
cells = { a = 9.0 }
'''


def install_fake(monkeypatch, measure, name="fake",
                 metrics=(("fake", "u", "static", "exact"), ("fake_s", "s", "timing", "lower"))):
    """Registers a fake measurement module `name` whose cells are measured one by one by
    `measure(item, ctx)`, and its metrics (name, unit, kind, direction)."""
    from bench.measure.base import Measurement
    module = types.ModuleType(f"fake_measure_{name}")
    module.MEASUREMENT = type("Fake", (Measurement,), {"check": lambda self, item: None,  # any metric
                                                       "measure": lambda self, item, ctx: measure(item, ctx)})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(definitions.MEASUREMENTS, name, module.__name__)
    for metric, unit, kind, direction in metrics:
        monkeypatch.setitem(definitions.METRICS, metric, definitions.Metric(name, unit, kind, direction))
    return module


def install_section(monkeypatch, module_name, run):
    """Registers a fake section module (run(suite_run) -> {title, note, rows}) under its own name in
    bench.definitions.SECTIONS, so a suite's `[[sections]] module = "<module_name>"` validates."""
    module = types.ModuleType(module_name)
    module.run = run
    monkeypatch.setitem(sys.modules, module_name, module)
    monkeypatch.setitem(definitions.SECTIONS, module_name, module_name)
    return module


def write(tmp_path, text, name="suite.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def machine(tmp_path, cuda=False):
    """A machine with the real manifest, an empty assets root under tmp_path, and the given CUDA."""
    from bench.assets import load_manifest
    root = tmp_path / "assets"
    root.mkdir(exist_ok=True)
    return Machine(cuda=cuda, assets_root=root, manifest=load_manifest())


def cli(*argv):
    """Runs a command as `python -m bench` does (bench.cli.main: an input error is one line and exit 2)."""
    from bench.cli import main
    return main([str(a) for a in argv])


def item(model="DiT-S/8", metric="params", checkpoint=None, name="r", sampler=None, options=None, column=None):
    """One cell to hand a measurement directly (bench.measure.base.Item), its paper value 0."""
    from bench.definitions import METRICS
    from bench.measure.base import Item
    from bench.suite import Cell, Options, Row
    from dydit.sampling import SamplerSpec
    spec = METRICS[metric]
    cell = Cell(name, column or metric, metric, spec.unit, spec.measure, 0.0, None, ("smoke",), (), None,
                sampler=sampler or SamplerSpec())
    return Item(Row(name, model, checkpoint=checkpoint, options=options or Options()), cell)
