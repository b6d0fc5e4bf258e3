"""The params and FLOPs measurements: real counts of small configs, one build per model, dynamic skips."""
import pytest

from bench.measure import flops, params
from bench.measure.base import Context, Skip
from dydit.flops import analytic_macs
from dydit.models import create_model


def row(model="DiT-S/8", checkpoint=None):
    return {"name": "r", "model": model, "checkpoint": checkpoint, "sampler": {"name": "ddpm", "steps": 250}}


def test_params_in_millions_counted_once_per_model(monkeypatch):
    built = []
    real = params.create_model
    monkeypatch.setattr(params, "create_model", lambda name: built.append(name) or real(name))
    ctx = Context()
    assert params.measure(row("DiT-S/2"), "params", ctx) == pytest.approx(32.963360)  # PAPER.md §1
    assert params.measure(row("DiT-S/2"), "params", ctx) == pytest.approx(32.963360)
    assert params.measure(row("DyDiT-S/2"), "params", ctx) == pytest.approx(33.120740)
    assert built == ["DiT-S/2", "DyDiT-S/2"]


def test_static_gflops_are_fvcore_macs_and_each_model_is_built_once(monkeypatch):
    built = []
    real = flops.create_model
    monkeypatch.setattr(flops, "create_model", lambda name: built.append(name) or real(name))
    ctx = Context()
    first = flops.measure(row(), "gflops", ctx)
    assert first == pytest.approx(analytic_macs(create_model("DiT-S/8")) / 1e9, rel=1e-9)
    assert flops.measure(row(), "gflops", ctx) == first and built == ["DiT-S/8"]


def test_unknown_metric_is_an_error():
    with pytest.raises(ValueError, match="not 'fid'"):
        flops.measure(row(), "fid", Context())
    with pytest.raises(ValueError, match="not 'gflops'"):
        params.measure(row(), "gflops", Context())


def test_dynamic_gflops_skip_names_the_missing_checkpoint(tmp_path):
    with pytest.raises(Skip) as info:
        flops.measure(row("DyDiT-XL/2", "dydit-xl-2-lambda0.7"), "gflops_dynamic", Context(assets_root=tmp_path))
    assert "dydit-xl-2-lambda0.7" in str(info.value) and "new_dydit0.7.pt" in str(info.value)
    assert "huggingface.co" in str(info.value)  # where to get it


def test_dynamic_gflops_with_the_checkpoint_need_a_gpu(tmp_path):
    ckpt = tmp_path / "checkpoints" / "new_dydit0.5.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    ctx = Context(assets_root=tmp_path, device="cpu")
    with pytest.raises(Skip, match="CUDA"):
        flops.measure(row("DyDiT-XL/2", "dydit-xl-2-lambda0.5"), "gflops_dynamic", ctx)


def test_average_run_gmacs_over_a_real_sampling_run():
    from dydit.models import randomize_
    model = randomize_(create_model("DyDiT-S/8", input_size=16), seed=0, std=0.1).eval()
    for block in model.blocks:  # routers as at init: everything on, so every call costs the all-on count
        for r in (block.attn_rate.router, block.mlp_rate.router):
            r.weight.data.zero_()
            r.bias.data.fill_(15.0)
        block.token_selection.mlp_head[2].weight.data.zero_()
        block.token_selection.mlp_head[2].bias.data.fill_(35.0)
    sampler = {"name": "ddim", "steps": 3, "cfg_scale": 1.5}
    full = flops.average_run_gmacs(model, sampler, images=3, batch=2)
    assert full == pytest.approx(analytic_macs(model) / 1e9, rel=1e-9)
    for block in model.blocks[::2]:  # every other block now skips its MLP: no token, one channel group
        block.token_selection.mlp_head[2].bias.data.fill_(-35.0)
        block.mlp_rate.router.bias.data.fill_(-15.0)
    fewer = flops.average_run_gmacs(model, sampler, images=3, batch=2)
    assert fewer < 0.8 * full
