"""The params and FLOPs measurements: real counts of small configs, one build per model, dynamic skips."""
import pytest

from bench.measure import flops, params
from bench.measure.base import Context, Skip
from dydit.flops import analytic_macs
from dydit.registry import create_model
from dydit.sampling import SamplerSpec
from tests.bench.runner_helpers import item


def measure(module, *items, ctx=None):
    """The outcomes of one group of cells, in order."""
    ctx = ctx or Context()
    out = module.MEASUREMENT(ctx).measure_group(list(items), ctx)
    return [out[i.key] for i in items]


def test_params_in_millions_counted_once_per_group(monkeypatch):
    built = []
    real = params.create_model
    monkeypatch.setattr(params, "create_model", lambda name: built.append(name) or real(name))
    a, b = item("DiT-S/2", name="a"), item("DiT-S/2", name="b")
    assert params.MEASUREMENT(Context()).group_key(a) == params.MEASUREMENT(Context()).group_key(b)
    assert measure(params, a, b) == [pytest.approx(32.963360)] * 2  # PAPER.md §1
    assert measure(params, item("DyDiT-S/2")) == [pytest.approx(33.120740)]
    assert built == ["DiT-S/2", "DyDiT-S/2"]


def test_static_gflops_are_fvcore_macs_and_each_model_is_built_once_per_group(monkeypatch):
    built = []
    real = flops.create_model
    monkeypatch.setattr(flops, "create_model", lambda name: built.append(name) or real(name))
    first, again = measure(flops, item(metric="gflops", name="a"), item(metric="gflops", name="b"))
    assert first == pytest.approx(analytic_macs(create_model("DiT-S/8")) / 1e9, rel=1e-9)
    assert again == first and built == ["DiT-S/8"]


def test_unknown_metric_is_an_error():
    (fid,) = measure(flops, item(metric="fid"))
    assert isinstance(fid, ValueError) and "not 'fid'" in str(fid)
    (gflops,) = measure(params, item(metric="gflops"))
    assert isinstance(gflops, ValueError) and "not 'gflops'" in str(gflops)


def test_dynamic_gflops_skip_names_the_missing_checkpoint(tmp_path):
    (skip,) = measure(flops, item("DyDiT-XL/2", "gflops_dynamic", "dydit-xl-2-lambda0.7"),
                      ctx=Context(assets_root=tmp_path))
    assert isinstance(skip, Skip)
    assert "dydit-xl-2-lambda0.7" in str(skip) and "new_dydit0.7.pt" in str(skip)
    assert "huggingface.co" in str(skip)  # where to get it


def test_dynamic_gflops_with_the_checkpoint_need_a_gpu(tmp_path):
    ckpt = tmp_path / "checkpoints" / "new_dydit0.5.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"weights")
    (skip,) = measure(flops, item("DyDiT-XL/2", "gflops_dynamic", "dydit-xl-2-lambda0.5"),
                      ctx=Context(assets_root=tmp_path, device="cpu"))
    assert isinstance(skip, Skip) and "CUDA" in str(skip)


def test_average_run_gmacs_over_a_real_sampling_run():
    from dydit.models import randomize_
    model = randomize_(create_model("DyDiT-S/8", input_size=16), seed=0, std=0.1).eval()
    for block in model.blocks:  # routers as at init: everything on, so every call costs the all-on count
        for r in (block.attn_rate.router, block.mlp_rate.router):
            r.weight.data.zero_()
            r.bias.data.fill_(15.0)
        block.token_selection.mlp_head[2].weight.data.zero_()
        block.token_selection.mlp_head[2].bias.data.fill_(35.0)
    sampler = SamplerSpec(name="ddim", steps=3, cfg_scale=1.5)
    full = flops.average_run_gmacs(model, sampler, images=3, batch=2)
    assert full == pytest.approx(analytic_macs(model) / 1e9, rel=1e-9)
    for block in model.blocks[::2]:  # every other block now skips its MLP: no token, one channel group
        block.token_selection.mlp_head[2].bias.data.fill_(-35.0)
        block.mlp_rate.router.bias.data.fill_(-15.0)
    fewer = flops.average_run_gmacs(model, sampler, images=3, batch=2)
    assert fewer < 0.8 * full
