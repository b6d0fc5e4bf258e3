"""DeepCache: full steps every N, cached steps reuse pre-gate branches; FLOPs as documented; fast == masked."""
import pytest
import torch

from dydit import sampling
from dydit.deepcache import DeepCache, cached_step_macs, is_full_step
from dydit.fast import FastDyDiT
from dydit.flops import fvcore_macs
from dydit.models import randomize_
from dydit.registry import create_model
from tests.dydit.test_fast import calibrated_routers

LATENT = 16


@pytest.fixture(scope="module")
def dit():
    return randomize_(create_model("DiT-S/4", input_size=LATENT), seed=2, std=0.1).eval()


@pytest.fixture(scope="module")
def dydit():
    """Routers that drop heads, channel groups (varying with t) and tokens."""
    return calibrated_routers(randomize_(create_model("DyDiT-S/4", input_size=LATENT), seed=1, std=0.1).eval())


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, LATENT, LATENT, generator=g), torch.tensor([3, 1000])[:batch]


def run(model_fn, name="ddim", steps=6, interval=0):
    noise, generators = sampling.noise_for(range(2), 0, (4, LATENT, LATENT))
    return sampling.sample_latents(model_fn, name, noise, torch.tensor([1, 7]), steps, generators, 1.5,
                                   deepcache_interval=interval)


@pytest.mark.parametrize("name", list(sampling.SAMPLERS))
def test_interval_1_is_exactly_no_cache(dit, dydit, name):
    for fn in (dit, FastDyDiT(dydit)):
        assert torch.equal(run(fn, name, 4, interval=1), run(fn, name, 4, interval=0))


@pytest.mark.parametrize("which", ["dit", "masked", "fast"])
def test_a_full_step_that_keeps_branches_returns_the_plain_forward(dit, dydit, which):
    fn = {"dit": dit, "masked": dydit, "fast": FastDyDiT(dydit)}[which]
    x, y = inputs()
    t = torch.full((2,), 400)
    with torch.no_grad():
        assert torch.equal(DeepCache(fn, 3).full(x, t, y, keep=True), fn(x, t, y))


@pytest.mark.parametrize("which", ["dit", "masked", "fast"])
def test_a_cached_step_on_the_full_steps_inputs_gives_its_output(dit, dydit, which):
    """Reused pre-gate branches + recomputed gates rebuild the same residual stream at the same (x, t, y);
    at another t only the gates (and embedders) change, so the output moves."""
    fn = {"dit": dit, "masked": dydit, "fast": FastDyDiT(dydit)}[which]
    cache = DeepCache(fn, 2)
    x, y = inputs()
    t = torch.full((2,), 400)
    full = cache.full(x, t, y)
    torch.testing.assert_close(cache.cached(x, t, y), full, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cache.cached(x, torch.full((2,), 900), y), full, atol=1e-4)


def test_steps_follow_the_interval(dit):
    assert [is_full_step(i, 3) for i in range(7)] == [True, False, False, True, False, False, True]
    assert all(is_full_step(i, n) for n in (0, 1) for i in range(5))
    calls = []
    cache = DeepCache(dit, 3)
    full, cached = cache.full, cache.cached
    cache.full = lambda *a, **k: calls.append("full") or full(*a, **k)
    cache.cached = lambda *a: calls.append("cached") or cached(*a)
    run(cache, "ddim", 7)
    assert calls == ["full", "cached", "cached", "full", "cached", "cached", "full"]
    run(cache, "ddim", 2)  # prepare() starts every run at a full step
    assert calls[-2:] == ["full", "cached"]


@pytest.mark.parametrize("which", ["dit", "dydit"])
def test_a_cached_steps_flops_are_the_documented_count(dit, dydit, which):
    model = dit if which == "dit" else dydit
    cache = DeepCache(model, 2)
    x, y = inputs(batch=1)
    t = torch.full((1,), 500)
    cache.full(x, t, y)
    measured = fvcore_macs(model, (x, t, y), forward=cache.cached)
    assert measured == cached_step_macs(model)
    a_block = 6 * model.hidden_size ** 2  # adaLN alone is already 6D^2 of a full block: a cached one is tiny
    assert cached_step_macs(model) < fvcore_macs(model, (x, t, y)) / 10 and 2 * model.hidden_size ** 2 < a_block


@pytest.mark.parametrize("name,interval", [("ddim", 2), ("ddpm", 3), ("dpm-solver++", 2)])
def test_fast_path_with_deepcache_equals_masked_path_with_deepcache(dydit, name, interval):
    masked = run(dydit, name, 6, interval)
    fast = run(FastDyDiT(dydit), name, 6, interval)
    torch.testing.assert_close(fast, masked, rtol=1e-4, atol=1e-4 * float(masked.abs().max()))
    assert not torch.allclose(masked, run(dydit, name, 6, 0), atol=1e-3), "cached steps should change the result"


def test_fast_path_records_masks_on_full_steps_only(dydit):
    cache = DeepCache(FastDyDiT(dydit), 2)
    x, y = inputs()
    records = []
    for step in (900, 800, 700):
        record = []
        cache(x, torch.full((2,), step), y, record=record)
        records.append(len(record))
    assert records == [len(dydit.blocks), 0, len(dydit.blocks)]
    assert (cache.full_steps, cache.cached_steps) == (2, 1)


def test_errors(dit):
    with pytest.raises(ValueError, match=">= 0"):
        DeepCache(dit, -1)
    with pytest.raises(TypeError, match="wraps a DiT"):
        DeepCache(lambda x, t, y: x, 2)
    cache = DeepCache(dit, 2)
    x, y = inputs()
    with pytest.raises(RuntimeError, match="full step first"):
        cache.cached(x, torch.full((2,), 5), y)
    cache.full(x, torch.full((2,), 5), y)
    with pytest.raises(ValueError, match="one batch"):
        cache.cached(x[:1], torch.full((1,), 5), y[:1])
