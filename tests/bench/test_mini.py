"""The mini reproduction end to end on a tiny budget (a few training steps, a few digits): every cell
gets a number, the section its checks and figures, and a second run reuses every trained model."""
import json
import re

import pytest

from bench.measure.base import Context
from bench.mini.config import MiniConfig
from bench.report.render import render_suite
from bench.results import ERROR, REFERENCE, SKIPPED
from bench import runner
from bench.runner import AUTO, run_suite
from bench.suite import SUITES_DIR, load_suite
from tests.bench.runner_helpers import machine, write

TINY = MiniConfig(dit_steps=4, dit_lr_warmup=2, finetune_fraction=0.5, classifier_epochs=1)


@pytest.fixture(autouse=True)
def tiny_timing_budget(monkeypatch):
    """The tiny models' loop timings run the full-size budget (3 calls x 5 rounds, 2 whole runs): the mini's 6 x 9
    and 6 x 15 are for the real mini models, whose calls take ~1 s (bench.measure.loop.MINI); the tests assert
    behaviour."""
    from bench.measure import loop
    monkeypatch.setattr(loop, "MINI", loop.FULL_SIZE)
    monkeypatch.setattr(loop, "MINI_DEEPCACHE", loop.FULL_SIZE)


def tiny_suite(tmp_path, name="mini.toml"):
    text = (SUITES_DIR / name).read_text(encoding="utf-8")
    text = text.replace("steps = 50\n", "steps = 4\n") \
        .replace("steps = 50 }", "steps = 4 }") \
        .replace("steps = 50,", "steps = 4,")
    text = re.sub(r"num_samples = \d+\n", "num_samples = 20\n", text)
    text = re.sub(r"batch_size = \d+\n", "batch_size = 10\n", text)
    return load_suite(write(tmp_path, text, name))


def run(tmp_path, suite, retime=False):
    """(result, the run's mini record) of a suite run on the TINY recipe."""
    records = {}
    real = runner.SuiteRun
    # the records a report section receives, kept for the test to look at
    spy = lambda *a, **k: records.setdefault("run", real(*a, **k))  # noqa: E731
    with pytest.MonkeyPatch.context() as m:
        m.setattr(runner, "SuiteRun", spy)
        result = run_suite(suite, AUTO, machine(tmp_path), Context(work_dir=tmp_path / "work", mini_config=TINY,
                                                                            retime=retime))
    return result, records["run"].record("mini")


def measured_cells(result):
    """{(row, column): measured value} of a run in which every cell was measured (none errored, skipped or a reference)."""
    for cell in result["cells"]:
        assert cell["status"] not in (ERROR, SKIPPED, REFERENCE), cell
        assert cell["measured"] is not None
    return {(c["row"], c["column"]): c["measured"] for c in result["cells"]}


def measured_everything(result):
    measured_cells(result)
    (section,) = result["sections"]
    assert section["status"] in ("pass", "fail") and len(section["figures"]) >= 3, section["note"]
    return section, result["provenance"]["measurements"]["mini"], {(c["row"], c["column"]): c for c in result["cells"]}


def test_tiny_mini_reproduction_measures_every_cell_and_reuses_its_models(tmp_path, monkeypatch):
    """mini.toml, then dyditpp-mini.toml on the same models' cache, then mini.toml again warm."""
    suite = tiny_suite(tmp_path)
    result, _ = run(tmp_path, suite)
    section, mini, cells = measured_everything(result)
    assert len(section["figures"]) >= 6  # FLOPs vs FID, digits, Fig. 5 and Fig. 6 of each DyDiT
    walls = [r for r in section["rows"] if "fine-tuning wall time" in r["name"]]
    assert len(walls) == 3 and all(r["ok"] and r["value"] > 0 for r in walls)  # both DyDiTs and the control
    assert mini["config"]["dit_steps"] == 4 and next(iter(mini["sampling"].values()))["num_samples"] == 20
    assert set(mini["models"]) == {"DiT-Mini", "DiT-Mini + FT", "DyDiT-Mini λ=0.7", "DyDiT-Mini λ=0.5"}
    page = render_suite(json.loads(json.dumps(result)), tmp_path / "reports")
    assert re.search(r"mini_dit-mini[a-z0-9-]*-digits\.png", page.read_text()) and (tmp_path / "reports" / "mini_flops-vs-fid.png").is_file()

    # DyDiT++ on the same cache: its DiT-Mini, control and DyDiT-Mini λ=0.5 are loaded, the rest trained
    cache = tmp_path / "work" / "mini-models"
    built = lambda: {f.parent.name: f.stat().st_mtime_ns for f in cache.glob("*/done.json")}  # noqa: E731
    before = built()
    plus, _ = run(tmp_path, tiny_suite(tmp_path, "dyditpp-mini.toml"))
    after = built()
    assert {k: after[k] for k in before} == before  # the shared models (and the classifier) were loaded
    assert len(set(after) - set(before)) == 8  # SiT-Mini and its control, 2 DySiTs, 2 adapter DyDiTs, 2 controls
    _, mini_pp, cells_pp = measured_everything(plus)
    assert set(mini_pp["models"]) == {"DiT-Mini", "DyDiT-Mini λ=0.5", "DiT-Mini + FT", "SiT-Mini", "SiT-Mini + FT",
                                      "DySiT-Mini λ=0.7", "DySiT-Mini λ=0.5", "DyDiT-Mini λ=0.5 · LoRA",
                                      "DyDiT-Mini λ=0.5 · TD-LoRA", "DiT-Mini + FT · LoRA", "DiT-Mini + FT · TD-LoRA"}
    assert mini_pp["models"]["DiT-Mini + FT · LoRA"]["adapter"] == "lora"  # each adapter row has its own control
    assert mini_pp["models"]["DyDiT-Mini λ=0.5 · TD-LoRA"]["adapter"] == "td-lora"
    for adapter in ("LoRA", "TD-LoRA"):  # parameter-efficient: a few % of the parameters train
        assert 0 < cells_pp[(f"DyDiT-Mini λ=0.5 · {adapter}", "trainable")]["measured"] < 0.2
    assert cells_pp[("DyDiT-Mini λ=0.5", "trainable")]["measured"] == 1.0
    assert mini_pp["models"]["DySiT-Mini λ=0.5"]["adapter"] == "none"

    # warm: every model, evaluation and speed-up comes from the cache (the same machine and code), nothing trains
    from bench.mini import run as mini_run
    from dydit import train
    monkeypatch.setattr(train, "_train", lambda *a, **k: pytest.fail("a cached model was trained again"))
    monkeypatch.setattr(mini_run, "speed", lambda *a, **k: pytest.fail("a kept speed-up was timed again"))
    again, _ = run(tmp_path, suite)
    assert {key: c["measured"] for key, c in cells.items()} == {(c["row"], c["column"]): c["measured"]
                                                                for c in again["cells"]}
    assert "--retime" in again["sections"][0]["note"]


def tiny_table(tmp_path, name):
    text = (SUITES_DIR / name).read_text(encoding="utf-8")
    for steps, few in (("250", 5), ("50", 4), ("20", 3), ("10", 2)):  # distinct: one timing run per sampler
        text = text.replace(f"steps = {steps}", f"steps = {few}")
    text = re.sub(r"num_samples = \d+\n", "num_samples = 20\n", text).replace("batch_size = 250", "batch_size = 10")
    return load_suite(write(tmp_path, text, name))


def test_tiny_tables_4_and_18_on_the_mini_models(tmp_path):
    """Tables 4 and 18 on the (tiny) mini models: quality per sampler / DeepCache interval against the DiT,
    every path timed in one run per sampler, the loop section judged."""
    results = {}
    for name in ("table4-mini.toml", "table18-mini.toml"):
        result, ctx = run(tmp_path, tiny_table(tmp_path, name))
        for cell in result["cells"]:
            assert cell["status"] not in (ERROR, SKIPPED, REFERENCE), cell
        (section,) = result["sections"]
        assert section["status"] in ("pass", "fail", "inconclusive") and section["rows"], section["note"]
        results[name] = result, ctx
    t4, ctx4 = results["table4-mini.toml"]
    assert len(t4["provenance"]["measurements"]["loop_speed"]) == 4  # one timing run per sampler
    sampled = ctx4.measured
    assert {"DiT-Mini · ddpm-5", "DyDiT-Mini λ=0.5 · dpm-solver++-3"} <= set(sampled)
    t18, ctx18 = results["table18-mini.toml"]
    (loop,) = t18["provenance"]["measurements"]["loop_speed"]
    assert {"DiT, DeepCache 5", "DyDiT-Mini/2 λ=0.5, DeepCache 3"} <= set(loop["paths"])
    names = " | ".join(r["name"] for r in t18["sections"][0]["rows"])
    assert "compose" in names and "without cache" in names
    cached = ctx18.measured["DiT-Mini, DeepCache 2 · ddim-4"]
    assert cached["flops_ratio"] < 0.75, "half the steps cached: far fewer MACs"

    # warm: the loop timings and the estimate check of trained models are kept for this machine and code
    from bench.sections import loop as loop_section
    from bench.timing import loop as timing_loop
    with pytest.MonkeyPatch.context() as m:
        for module in (timing_loop, loop_section):
            for name in ("time_loops", "check_estimate"):
                m.setattr(module, name, lambda *a, **k: pytest.fail("a kept timing was measured again"))
        again, _ = run(tmp_path, tiny_table(tmp_path, "table18-mini.toml"))
    assert again["provenance"]["measurements"]["loop_speed"] == t18["provenance"]["measurements"]["loop_speed"]
    assert again["sections"][0]["rows"] == t18["sections"][0]["rows"] and "--retime" in again["sections"][0]["note"]
    timed, real = [], timing_loop.time_loops
    with pytest.MonkeyPatch.context() as m:  # --retime: measured again
        m.setattr(timing_loop, "time_loops", lambda *a, **k: timed.append(1) or real(*a, **k))
        run(tmp_path, tiny_table(tmp_path, "table18-mini.toml"), retime=True)
    assert timed


def test_tiny_scaling_mini_compares_each_width_with_its_own_control_and_judges_the_claims(tmp_path, monkeypatch):
    """Two widths at λ=0.5 and the ablation (TDW only, SDT only, random routers), on a tiny budget."""
    import json

    from bench.mini import spread
    study = tmp_path / "mini-spread.json"  # the section reads its gaps against the spread study's tolerances
    study.write_text(json.dumps({"families": {"DiT": {"tolerances": {"mini_fid": 8.0, "accuracy": 0.02}}}}))
    monkeypatch.setattr(spread, "SPREAD_FILE", study)
    text = (SUITES_DIR / "scaling-mini.toml").read_text(encoding="utf-8")
    head, *rows = text.split("[[rows]]")
    keep = [r for r in rows if "Mini-64" not in r and ("λ=0.5" in r or "model = \"DiT-" in r)]
    sections = rows[-1][rows[-1].index("[[sections]]"):]
    text = head + "".join("[[rows]]" + r.split("[[sections]]")[0] for r in keep) + sections
    text = text.replace("steps = 50\n", "steps = 4\n") \
        .replace("batch_size = 250\n", "batch_size = 10\n")
    text = re.sub(r"num_samples = \d+\n", "num_samples = 20\n", text)
    result, ctx = run(tmp_path, load_suite(write(tmp_path, text, "scaling-mini.toml")))
    for cell in result["cells"]:
        assert cell["status"] not in (ERROR, SKIPPED, REFERENCE), cell
    models = result["provenance"]["measurements"]["mini"]["models"]
    assert set(models) == {"DiT-Mini-32", "DyDiT-Mini-32 λ=0.5", "DiT-Mini", "DyDiT-Mini λ=0.5",
                           "DyDiT-Mini λ=0.5 · TDW only", "DyDiT-Mini λ=0.5 · SDT only", "DiT-Mini-32 + FT",
                           "DiT-Mini + FT"}  # each width's fair control
    assert models["DyDiT-Mini λ=0.5 · SDT only"]["routers"] == "token"
    # the narrower width trains (128 / 32) ** narrow_steps_exponent times the steps, and so do its fine-tunes
    assert (models["DiT-Mini-32"]["steps"], models["DiT-Mini"]["steps"]) == (16, 4) == (4 * TINY.dit_steps, TINY.dit_steps)
    assert models["DyDiT-Mini-32 λ=0.5"]["steps"] == models["DiT-Mini-32 + FT"]["steps"] == 8
    assert models["DyDiT-Mini λ=0.5"]["steps"] == 2
    measured = {name.removesuffix(" · ddim-4"): ev for name, ev in ctx.measured.items()}
    assert {"DiT-Mini-32", "DiT-Mini"} <= set(measured)  # each width's DyDiT against its own DiT
    small = measured["DyDiT-Mini-32 λ=0.5"]
    assert small["metrics"]["mini_fid_vs_dit"] == pytest.approx(small["mini_fid"] - measured["DiT-Mini-32"]["mini_fid"])
    assert small["metrics"]["mini_fid_vs_control"] == pytest.approx(
        small["mini_fid"] - measured["DiT-Mini-32 + FT"]["mini_fid"])
    random = measured["DyDiT-Mini λ=0.5 · random routers"]
    assert "widths" not in random and random["flops_ratio"] == pytest.approx(
        measured["DyDiT-Mini λ=0.5"]["flops_ratio"], abs=0.02)  # the learned counts, drawn at random
    (section,) = result["sections"]
    names = " | ".join(r["name"] for r in section["rows"])
    assert section["status"] in ("pass", "fail", "inconclusive") and "λ=0.5: mini-FID" in names
    assert "ablation: TDW + SDT" in names and "seed spread 8" in names
    assert len(section["figures"]) == 2


def test_retrain_since_a_time_rebuilds_only_what_was_built_before_it(tmp_path):
    """--retrain in one nox session: a model several suites share is rebuilt by the first, loaded by the rest."""
    import time
    from bench.mini.build import _artifact
    builds = []

    def build(folder):
        builds.append(folder)
        return {}
    _artifact(tmp_path, "m", "k", False, build)
    since = time.time() + 1e-3
    time.sleep(0.01)
    _artifact(tmp_path, "m", "k", since, build)  # built before `since`: rebuilt
    _artifact(tmp_path, "m", "k", since, build)  # built after it: loaded
    _artifact(tmp_path, "m", "k", True, build)  # plain --retrain: always rebuilt
    assert len(builds) == 3
