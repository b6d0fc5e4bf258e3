"""The scaling suite (each size against its own DiT, realized speed-up, the figure, the `make` commands of
the checkpoints no one publishes) and the scaling mini's pieces (random routing, the claims' checks)."""
import pytest
import torch

from bench.measure.base import Context
from bench.mini import evaluate
from bench.sections.scaling_mini import ablation_checks, scaling_checks
from bench.results import ERROR, SKIPPED
from bench.runner import AUTO, run_suite
from bench.suite import SUITES_DIR, SuiteError, load_suite
from dydit.flops import dit_macs, dynamic_macs
from dydit.models import randomize_
from dydit.registry import create_model
from tests.bench.runner_helpers import machine, write

SUITE = """
[suite]
name = "scaling-test"
title = "two sizes, each against its own DiT"
source = "test"

[suite.sampler]
cfg_scale = 1.5

[[columns]]
key = "ratio"
label = "s/image ÷ its DiT's"
metric = "s_per_image_ratio"
profiles = ["smoke", "full"]
sampler = { name = "dpm-solver++", steps = 4, batch_size = 1 }
tolerance = { window = [-1.0, 0.005], why = "at or below" }

[[columns]]
key = "realized"
label = "realized"
metric = "realized"
profiles = ["smoke", "full"]
sampler = { name = "dpm-solver++", steps = 4, batch_size = 1 }
tolerance = { window = [-0.005, 100.0], why = "at or above" }

[[columns]]
key = "fid"
label = "FID"
metric = "fid"
profiles = ["full"]
device = "cuda"
assets = ["checkpoint", "vae-ft-ema", "inception-fidelity", "adm-ref-imagenet256"]
tolerance = { abs = 0.1, why = "test" }

[[rows]]
name = "DyDiT-S λ=0.5"
model = "DyDiT-S/8"
checkpoint = "dydit-s-2-lambda0.5"
options = { flops_target = 0.5 }
cells = { ratio = 0.65, realized = 0.8, fid = 28.75 }

[[rows]]
name = "DyDiT-B λ=0.5"
model = "DyDiT-B/8"
checkpoint = "dydit-b-2-lambda0.5"
options = { flops_target = 0.5 }
cells = { ratio = 0.59, realized = 0.88, fid = 12.92 }

[[sections]]
title = "figure"
module = "scaling"
profiles = ["smoke", "full"]
"""


def test_each_size_is_timed_against_its_own_dit_and_the_figure_is_drawn(tmp_path, monkeypatch):
    ctx = Context(work_dir=tmp_path / "work")
    monkeypatch.setattr("bench.timing.speed.timing_vae", lambda device: (None, 0.0, "none (test)"))  # the SD VAE's decode takes seconds
    result = run_suite(load_suite(write(tmp_path, SUITE)), AUTO, machine(tmp_path), ctx)
    runs = result["provenance"]["measurements"]["loop_speed"]
    assert sorted(r["setup"]["dit"] for r in runs) == ["DiT-B/8", "DiT-S/8"]  # one timing run per size
    cells = {(c["row"], c["column"]): c for c in result["cells"]}
    for run_ in runs:
        size = run_["setup"]["dit"].split("-")[1][0]
        (path,) = [p for name, p in run_["paths"].items() if name != "DiT"]
        assert cells[(f"DyDiT-{size} λ=0.5", "ratio")]["measured"] == pytest.approx(path["ratio"])
        realized = cells[(f"DyDiT-{size} λ=0.5", "realized")]["measured"]
        assert realized == pytest.approx(path["flops_ratio"] / path["ratio"])
    fid = cells[("DyDiT-S λ=0.5", "fid")]
    assert fid["status"] == SKIPPED and "make it: python -m bench train --preset dydit-s-0.5" in fid["reason"]
    (section,) = result["sections"]
    assert section["status"] != ERROR and (tmp_path / "work" / "scaling-figures" / "scaling-lambda.png").is_file()
    assert len(section["rows"]) == 2 and all("realized speed-up at λ=0.5" in r["name"] for r in section["rows"])
    for row in section["rows"]:  # the section says what the cells say
        size = row["name"][0]
        status = cells[(f"DyDiT-{size} λ=0.5", "realized")]["status"]
        assert row["ok"] == (status == "pass") and row.get("inconclusive", False) == (status == "inconclusive")


def test_the_scaling_suites_load_and_name_every_checkpoints_command():
    suite = load_suite(SUITES_DIR / "scaling.toml")
    assert {r.model for r in suite.rows} == {"DiT-S/2", "DyDiT-S/2", "DiT-B/2", "DyDiT-B/2", "DiT-XL/2", "DyDiT-XL/2"}
    from bench.assets import load_manifest
    manifest = load_manifest()
    for row in suite.rows:
        asset = manifest[row.checkpoint]
        assert asset.make or asset.source.startswith("https://"), row.name
    mini = load_suite(SUITES_DIR / "scaling-mini.toml")
    assert {r.options.routers for r in mini.rows} == {"all", "width", "token", "random"}


def test_a_bad_routers_option_is_refused(tmp_path):
    text = (SUITES_DIR / "scaling-mini.toml").read_text(encoding="utf-8").replace('routers = "width"',
                                                                                 'routers = "heads"')
    with pytest.raises(SuiteError, match="routers.*unknown value 'heads'"):
        load_suite(write(tmp_path, text, "bad.toml"))


def test_random_routing_draws_as_many_heads_groups_and_tokens_at_other_places():
    model = randomize_(create_model("DyDiT-Mini/2"), seed=1).eval()
    for block in model.blocks:  # routers that choose something: about half of everything
        torch.nn.init.normal_(block.token_selection.mlp_head[2].weight, std=5.0)
        torch.nn.init.zeros_(block.token_selection.mlp_head[2].bias)
    x, y, t = torch.randn(4, 1, 16, 16), torch.tensor([1, 2, 3, 10]), torch.full((4,), 500)
    learned, drawn = [], []
    with torch.no_grad():
        model(x, t, y, record=learned)
        evaluate.RandomRouting(model, seed=0)(x, t, y, record=drawn)
    for a, b in zip(learned, drawn):
        for field in ("heads", "channels", "tokens"):
            assert torch.equal(getattr(a, field).sum(1), getattr(b, field).sum(1))
        assert b.heads[:, 0].all() and b.channels[:, 0].all()  # group 0 always on, as the routers keep it
    assert any(not torch.equal(a.tokens, b.tokens) for a, b in zip(learned, drawn))
    assert torch.allclose(dynamic_macs(model, learned), dynamic_macs(model, drawn))
    assert float(dynamic_macs(model, drawn).mean()) < dit_macs(model)


def test_scaling_claim_passes_only_when_quality_loss_falls_with_width():
    falling = {32: {0.5: (40.0, -0.1)}, 64: {0.5: (20.0, -0.05)}, 128: {0.5: (5.0, 0.0)}}
    (row,) = scaling_checks(falling, 10.0)
    assert row["ok"] and row["value"] == pytest.approx(35.0)
    falling[64][0.5] = (50.0, 0.0)
    (row,) = scaling_checks(falling, 10.0)
    assert not row["ok"] and row["value"] < 0


def test_ablation_claims_order_both_before_either_before_random():
    points = {"all": (10.0, 0.5, "both"), "width": (20.0, 0.5, "w"), "token": (30.0, 0.9, "t"),
              "random": (25.0, 0.5, "r")}
    verdicts = [r["ok"] for r in ablation_checks(points, 10.0)]
    assert verdicts == [True, True, True, False]  # SDT only (30) is not below random (25)


def test_a_cell_that_does_not_run_here_is_not_timed_beside_one_that_does(tmp_path, monkeypatch):
    """A GPU-only ratio cell shares its setup with a CPU one: the CPU run must not load and time its model."""
    text = SUITE.replace('model = "DyDiT-B/8"', 'model = "DyDiT-S/8"').replace('name = "DyDiT-B λ=0.5"',
                                                                          'name = "DyDiT-S λ=0.3"')
    text = text.replace('options = { flops_target = 0.5 }\ncells = { ratio = 0.59, realized = 0.88, fid = 12.92 }',
                        'options = { flops_target = 0.3 }\ncells = { ratio = { paper = 0.5, device = "cuda" }, '
                        'realized = { paper = 0.7, device = "cuda" } }')
    ctx = Context(work_dir=tmp_path / "work")
    monkeypatch.setattr("bench.timing.speed.timing_vae", lambda device: (None, 0.0, "none (test)"))
    result = run_suite(load_suite(write(tmp_path, text)), AUTO, machine(tmp_path), ctx)
    (run_,) = result["provenance"]["measurements"]["loop_speed"]
    assert set(run_["paths"]) == {"DiT", "DyDiT-S/8 λ=0.5"}
    skipped = [c for c in result["cells"] if c["row"] == "DyDiT-S λ=0.3"]
    assert skipped and all(c["status"] == SKIPPED and "CUDA" in c["reason"] for c in skipped)
