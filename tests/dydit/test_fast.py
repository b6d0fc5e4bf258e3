"""The compute-skipping path equals the masked reference path, edge cases included."""
import pytest
import torch

from dydit.fast import FastDyDiT, fast_block, runs, width_plan, widths_from_masks
from dydit.models import BlockMasks, create_model, randomize_


@pytest.fixture(scope="module")
def model():
    return randomize_(create_model("DyDiT-S/4", input_size=16), seed=1, std=0.1).eval()


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def random_masks(model, batch, seed, edit=None):
    """Random BlockMasks per block (width shared by the batch, tokens per sample); edit(i, h, c, tok)."""
    g = torch.Generator().manual_seed(seed)
    H, T = model.num_heads, model.x_embedder.num_patches
    masks = []
    for i in range(len(model.blocks)):
        h = (torch.rand(H, generator=g) > 0.5).float()
        c = (torch.rand(H, generator=g) > 0.5).float()
        h[0] = c[0] = 1.0  # group 0 is always on
        tok = (torch.rand(batch, T, generator=g) > 0.4).float()
        if edit:
            edit(i, h, c, tok)
        masks.append(BlockMasks(h.expand(batch, H).clone(), c.expand(batch, H).clone(), tok))
    return masks


def compare(model, masks, x, t, y):
    with torch.no_grad():
        ref = model(x, t, y, masks=masks)
        out = FastDyDiT(model)(x, t, y, widths=widths_from_masks(masks), token_masks=[m.tokens for m in masks])
    return rel_err(out, ref)


def edge_cases(i, h, c, tok):
    if i == 0:  # no token kept in this block
        tok.zero_()
    elif i == 1:  # only the always-on head and channel group
        h[1:] = 0
        c[1:] = 0
    elif i == 2:  # uneven token counts across the batch: one sample keeps all, one keeps one token
        tok[0] = 1
        tok[1] = 0
        tok[1, 5] = 1
    elif i == 3:  # everything on
        h[:] = 1
        c[:] = 1
        tok[:] = 1
    elif i == 4:  # alternating heads: many contiguous runs
        h[:] = torch.tensor([1.0, 0.0] * (len(h) // 2))


def test_fast_equals_masked_on_random_masks_with_edge_cases(model):
    x, t, y = torch.randn(3, 4, 16, 16), torch.full((3,), 321.0), torch.tensor([0, 5, 1000])
    masks = random_masks(model, 3, seed=0, edit=edge_cases)
    assert [int(m.tokens.sum()) for m in masks[:1]] == [0]
    assert compare(model, masks, x, t, y) <= 1e-5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_equals_masked_on_other_random_masks(model, seed):
    x, t, y = torch.randn(2, 4, 16, 16), torch.full((2,), 50.0), torch.tensor([3, 4])
    assert compare(model, random_masks(model, 2, seed), x, t, y) <= 1e-5


def calibrated_routers(model, seed=0):
    """Routers that switch off about half of everything, varying with t and across tokens."""
    m = randomize_(create_model("DyDiT-S/4", input_size=16), seed=seed, std=0.1).eval()
    m.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in m.blocks:
            for r in (block.attn_rate.router, block.mlp_rate.router):
                r.weight.copy_(torch.randn(r.weight.shape, generator=g) * 3.0)
                r.bias.zero_()
            block.token_selection.mlp_head[2].bias.zero_()
    return m


def test_fast_with_its_own_routers_equals_masked_with_cfg_batch(model):
    m = calibrated_routers(model)
    x = torch.randn(4, 4, 16, 16)
    y = torch.tensor([1, 2, 1000, 1000])
    fast = FastDyDiT(m).prepare([999.0, 500.0, 0.0])
    fractions = []
    for step in (999.0, 500.0, 0.0):
        t = torch.full((4,), step)
        record = []
        with torch.no_grad():
            ref = m.forward_with_cfg(x, t, y, cfg_scale=1.5)
            m(torch.cat([x[:2], x[:2]]), t, y, record=record)
            out = fast.forward_with_cfg(x, t, y, cfg_scale=1.5)
        assert rel_err(out, ref) <= 1e-5
        fractions.append(sum(float(r.heads[0].mean()) for r in record) / len(record))
        tokens_on = torch.stack([r.tokens.mean() for r in record])
        assert 0 < float(tokens_on.mean()) < 1, "calibrated routers should drop some tokens"
    assert len(set(fractions)) > 1, "widths should change with t"


def test_width_plan_is_shared_by_the_batch_and_matches_the_routers(model):
    m = calibrated_routers(model, seed=4)
    steps = [999.0, 750.0, 500.0, 250.0, 0.0]
    plan = width_plan(m, steps)
    assert set(plan) == set(steps)
    for step in steps:
        record = []
        with torch.no_grad():
            m(torch.randn(2, 4, 16, 16), torch.full((2,), step), torch.tensor([1, 2]), record=record)
        assert plan[step] == widths_from_masks(record)
        assert all(h[0] == 0 and g[0] == 0 for h, g in plan[step])


def test_fast_path_rejects_a_batch_of_mixed_timesteps(model):
    with pytest.raises(ValueError, match="one timestep per batch"):
        FastDyDiT(model)(torch.randn(2, 4, 16, 16), torch.tensor([1.0, 2.0]), torch.tensor([0, 1]))


def test_fast_path_follows_weight_updates(model):
    m = calibrated_routers(model, seed=5)
    fast = FastDyDiT(m)
    x, t, y = torch.randn(2, 4, 16, 16), torch.full((2,), 300.0), torch.tensor([1, 2])
    with torch.no_grad():
        before = fast(x, t, y)
        m.blocks[0].mlp.fc1.weight.mul_(2.0)
        m.blocks[1].attn.qkv.weight.mul_(2.0)  # its sliced copy is cached: the cache must notice
        after, ref = fast(x, t, y), m(x, t, y)
    assert rel_err(after, before) > 1e-4
    assert rel_err(after, ref) <= 1e-5


def test_attention_weight_cache_is_bounded_and_optional(model):
    m = calibrated_routers(model, seed=6)
    x, y = torch.randn(2, 4, 16, 16), torch.tensor([1, 2])
    steps = [900.0, 600.0, 300.0, 0.0]
    cached, uncached = FastDyDiT(m), FastDyDiT(m, cache_bytes=0)
    with torch.no_grad():
        for step in steps + steps:
            t = torch.full((2,), step)
            assert rel_err(uncached(x, t, y), cached(x, t, y)) <= 1e-5  # views vs copies: sum order
    assert uncached._cached_bytes == 0 and cached._cached_bytes > 0
    size = cached._cached_bytes
    with torch.no_grad():
        cached(x, torch.full((2,), steps[0]), y)  # a pattern seen before: no new copy
    assert cached._cached_bytes == size
    cached.clear_cache()  # frees the copies; the next call slices again, same numbers
    assert cached._cached_bytes == 0 and not cached._cache
    with torch.no_grad():
        t = torch.full((2,), steps[1])
        assert rel_err(uncached(x, t, y), cached(x, t, y)) <= 1e-5
    assert 0 < cached._cached_bytes < size


def test_runs():
    assert runs((0, 1, 2, 5, 7, 8)) == [(0, 3), (5, 6), (7, 9)]
    assert runs((0,)) == [(0, 1)]


def test_fast_block_does_not_touch_skipped_tokens(model):
    block = model.blocks[0]
    x, c = torch.randn(2, 16, model.hidden_size), torch.randn(2, model.hidden_size)
    keep = torch.zeros(2, 16)
    keep[0, 3] = 1
    heads = tuple(range(model.num_heads))
    with torch.no_grad():
        out = fast_block(block, x, c, (heads, heads), keep)
        attn_only = fast_block(block, x, c, (heads, heads), torch.zeros(2, 16))
    changed = (out - attn_only).abs().sum(-1) > 0
    assert changed.tolist() == keep.bool().tolist()
