"""The mini reproduction end to end on a tiny budget (a few training steps, a few digits): every cell
gets a number, the section its checks and figures, and a second run reuses every trained model."""
import json

import pytest

from bench.measure.base import Context
from bench.mini.config import MiniConfig
from bench.report.render import render_suite
from bench.results import ERROR, REFERENCE, SKIPPED
from bench.runner import AUTO, run_suite
from bench.suite import SUITES_DIR, load_suite
from tests.bench.runner_helpers import machine, write

TINY = MiniConfig(dit_steps=4, dit_lr_warmup=2, finetune_fraction=0.5, classifier_epochs=1)


def tiny_suite(tmp_path):
    text = (SUITES_DIR / "mini.toml").read_text(encoding="utf-8")
    text = text.replace("steps = 50\n", "steps = 4\n").replace("num_samples = 500\n", "num_samples = 20\n") \
        .replace("batch_size = 250\n", "batch_size = 10\n")
    return load_suite(write(tmp_path, text, "mini.toml"))


def run(tmp_path, suite):
    ctx = Context(work_dir=tmp_path / "work")
    ctx.cache["mini_config"] = TINY
    return run_suite(suite, AUTO, machine(tmp_path), ctx), ctx


def test_tiny_mini_reproduction_measures_every_cell_and_reuses_its_models(tmp_path, monkeypatch):
    suite = tiny_suite(tmp_path)
    result, _ = run(tmp_path, suite)
    for cell in result["cells"]:
        assert cell["status"] not in (ERROR, SKIPPED, REFERENCE), cell
        assert cell["measured"] is not None
    (section,) = result["sections"]
    assert section["status"] in ("pass", "fail") and len(section["figures"]) >= 6, section["note"]
    mini = result["provenance"]["measurements"]["mini"]
    assert mini["config"]["dit_steps"] == 4 and mini["sampling"]["num_samples"] == 20
    assert set(mini["models"]) == {"DiT-Mini", "DyDiT-Mini λ=0.7", "DyDiT-Mini λ=0.5"}
    page = render_suite(json.loads(json.dumps(result)), tmp_path / "reports")
    assert "mini_dit-mini-digits.png" in page.read_text() and (tmp_path / "reports" / "mini_flops-vs-fid.png").is_file()

    # warm: every model and evaluation comes from the cache, nothing trains
    from dydit import train
    monkeypatch.setattr(train, "_train", lambda *a, **k: pytest.fail("a cached model was trained again"))
    again, _ = run(tmp_path, suite)
    measured = {(c["row"], c["column"]): c["measured"] for c in result["cells"] if c["column"] != "speedup"}
    assert measured == {(c["row"], c["column"]): c["measured"] for c in again["cells"] if c["column"] != "speedup"}
