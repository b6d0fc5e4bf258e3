"""The compute-skipping path equals the masked reference path, edge cases included."""
import pytest
import torch

from dydit.fast import FastDyDiT, fast_block, runs, width_plan, widths_from_masks
from dydit.models import BlockMasks, randomize_
from dydit.registry import create_model


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


#################################################################################
#          Plan and sliced weights follow the weights; inference mode only      #
#################################################################################

def inputs(batch=2, step=300.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 16, 16, generator=g), torch.full((batch,), step), torch.arange(batch) + 1


def plan_widths(m, x, t, y):
    """The widths the masked path uses at t (from its own record)."""
    record = []
    with torch.no_grad():
        m(x, t, y, record=record)
    return widths_from_masks(record)


@pytest.mark.parametrize("change", ["load_state_dict", "data", "in_place", "t_embedder"])
def test_plan_follows_router_changes(model, change):
    m, other = calibrated_routers(model, seed=7), calibrated_routers(model, seed=8)
    steps = [900.0, 300.0]
    fast = FastDyDiT(m).prepare(steps)
    x, _, y = inputs()
    with torch.no_grad():
        for s in steps:
            fast(x, torch.full((2,), s), y)  # plan (and slices) of the old routers in use
    before = [plan_widths(m, x, torch.full((2,), s), y) for s in steps]
    routers = [(r.router, o.router) for b, ob in zip(m.blocks, other.blocks)
               for r, o in ((b.attn_rate, ob.attn_rate), (b.mlp_rate, ob.mlp_rate))]
    if change == "load_state_dict":
        m.load_state_dict(other.state_dict())
    elif change == "data":  # set_data: the version counter does not move
        for r, o in routers:
            r.weight.data = o.weight.detach().clone()
    elif change == "in_place":
        with torch.no_grad():
            for r, o in routers:
                r.weight.copy_(o.weight)
    else:  # the timestep embedding feeds every router
        w = m.t_embedder.mlp[2].weight
        w.data = -w.data
    for s, old in zip(steps, before):
        t = torch.full((2,), s)
        new = plan_widths(m, x, t, y)
        assert new != old, "the change should move the widths"
        with torch.no_grad():
            out, ref = fast(x, t, y), m(x, t, y)
        assert fast.plan[s] == new
        assert rel_err(out, ref) <= 1e-5


def test_fast_path_follows_dtype_moves(model):
    m = calibrated_routers(model, seed=9)
    fast = FastDyDiT(m)
    x, t, y = inputs()
    with torch.no_grad():
        fast(x, t, y)  # float32 slices cached
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            m.to(dtype)
            out, ref = fast(x.to(dtype), t, y), m(x.to(dtype), t, y)
            assert out.dtype == dtype
            assert rel_err(out, ref) <= tol


@pytest.mark.parametrize("names", [("attn.qkv.weight", "attn.proj.weight"), ("mlp.fc1.weight", "mlp.fc2.weight"),
                                   ("attn.qkv.bias", "mlp.fc1.bias")])
def test_fast_path_follows_replaced_attention_and_mlp_weights(model, names):
    m = calibrated_routers(model, seed=10)
    fast = FastDyDiT(m)
    x, t, y = inputs()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        before = fast(x, t, y)
        for block in m.blocks:
            for name in names:  # p.data = other: set_data keeps the version counter
                p = block.get_parameter(name)
                p.data = torch.randn(p.shape, generator=g) * 0.1
        out, ref = fast(x, t, y), m(x, t, y)
    assert rel_err(out, before) > 1e-3
    assert rel_err(out, ref) <= 1e-5


def test_a_new_storage_at_the_old_address_is_noticed(model):
    """An allocator may hand a replacement the freed address of the old weights; an alias stands in for it."""
    m = calibrated_routers(model, seed=10)
    fast = FastDyDiT(m)
    x, t, y = inputs()
    with torch.no_grad():
        fast(x, t, y)
        for block in m.blocks:
            p = block.mlp.fc1.weight
            address, version = p.data_ptr(), p._version
            w = torch.from_numpy(p.detach().numpy())  # another storage over the same memory
            w.mul_(-1.0)
            p.data = w
            assert p.data_ptr() == address and p._version == version
        out, ref = fast(x, t, y), m(x, t, y)
    assert rel_err(out, ref) <= 1e-5


def live_bytes(fast):
    return sum(w.numel() * w.element_size() for weights in fast._cache.values() for w in weights)


def patterns(fast, steps):
    """(block, layer, active) of every sliced (not full-width) pattern the steps use."""
    H = fast.model.num_heads
    return {(i, layer, active) for s in steps for i, widths in enumerate(fast.plan[s])
            for layer, active in zip(("attn", "mlp"), widths) if len(active) < H}


def test_cache_holds_only_slices_of_the_current_weights(model):
    m = calibrated_routers(model, seed=11)
    fast = FastDyDiT(m)
    steps = [900.0, 500.0, 100.0]
    x, _, y = inputs()

    def run(steps, dtype=torch.float32):
        with torch.no_grad():
            for s in steps:
                fast(x.to(dtype), torch.full((2,), s), y)

    run(steps)
    count, size = len(fast._cache), fast._cached_bytes
    assert count == len(patterns(fast, steps)) and size == live_bytes(fast) > 0
    with torch.no_grad():
        for block in m.blocks:  # in place: the versions move
            block.attn.qkv.weight.mul_(1.5)
            block.mlp.fc1.weight.mul_(1.5)
    run(steps[:1])  # the old slices are freed, those of patterns not used again too
    assert len(fast._cache) == len(patterns(fast, steps[:1])) and fast._cached_bytes == live_bytes(fast)
    run(steps)
    assert len(fast._cache) == count and fast._cached_bytes == size == live_bytes(fast)
    m.double()
    run(steps, torch.float64)
    assert len(fast._cache) == count and fast._cached_bytes == 2 * size == live_bytes(fast)
    assert all(w.dtype == torch.float64 for weights in fast._cache.values() for w in weights)


def test_fast_path_refuses_train_mode(model):
    m = calibrated_routers(model, seed=12)
    fast = FastDyDiT(m)
    x, t, y = inputs()
    m.train()  # after wrapping
    with pytest.raises(RuntimeError, match=r"inference path: call model\.eval\(\) first"):
        fast(x, t, y)
    m.eval()
    m.blocks[2].token_selection.train()  # one router in train mode samples Gumbel masks
    with pytest.raises(RuntimeError, match="model.eval"):
        fast(x, t, y)
    m.eval()
    with torch.no_grad():
        assert rel_err(fast(x, t, y), m(x, t, y)) <= 1e-5


def test_complete_model_runs_the_dit_path(model):
    m = calibrated_routers(model, seed=13)
    fast = FastDyDiT(m).prepare([400.0])
    x, t, y = inputs(batch=4, step=400.0)
    y[2:] = 1000
    with torch.no_grad():
        dynamic = m(x, t, y)
        m.complete_model = True
        ref, ref_cfg = m(x, t, y), m.forward_with_cfg(x, t, y, cfg_scale=1.5)
        out, out_cfg = fast(x, t, y), fast.forward_with_cfg(x, t, y, cfg_scale=1.5)
    assert rel_err(dynamic, ref) > 1e-3, "the routers should skip something"
    assert rel_err(out, ref) <= 1e-6 and rel_err(out_cfg, ref_cfg) <= 1e-6


def test_prepare_caches_the_schedules_most_used_patterns_within_the_budget_whatever_the_call_order(model):
    """With a plan, what is cached is chosen by use over the schedule (not first come), within the budget."""
    m = calibrated_routers(model, seed=5)
    steps = [float(s) for s in range(999, 0, -37)]  # 27 timesteps: patterns repeat between neighbours
    x, _, y = inputs()
    unlimited = FastDyDiT(m, cache_bytes=1 << 40).prepare(steps)
    uses = {}
    for s in steps:
        for i, widths in enumerate(unlimited.plan[s]):
            for layer, active in zip(("attn", "mlp"), widths):
                if len(active) < m.num_heads:
                    uses[(i, layer, active)] = uses.get((i, layer, active), 0) + 1
    assert max(uses.values()) > 1 and min(uses.values()) == 1, "the test needs patterns used more and less often"
    budget = live_bytes_of_all(unlimited, steps, x, y) // 3
    cached = []
    for order in (steps, steps[::-1]):
        fast = FastDyDiT(m, cache_bytes=budget).prepare(steps)
        with torch.no_grad():
            for s in order:
                fast(x, torch.full((2,), s), y)
        assert 0 < fast._cached_bytes <= budget
        keys = {(i, layer, active) for i, b in enumerate(m.blocks) for layer, module in (("attn", b.attn), ("mlp", b.mlp))
                for (mid, active) in fast._cache if mid == id(module)}
        cached.append(keys)
    assert cached[0] == cached[1], "the cached patterns must not depend on the call order"
    left_out = [uses[k] for k in uses if k not in cached[0]]
    assert max(uses, key=uses.get) in cached[0] and left_out, "the most used pattern first; the budget leaves some out"
    assert sum(uses[k] for k in cached[0]) / len(cached[0]) > sum(left_out) / len(left_out)


def live_bytes_of_all(fast, steps, x, y):
    with torch.no_grad():
        for s in steps:
            fast(x, torch.full((2,), s), y)
    return fast._cached_bytes


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_equals_masked_with_td_lora(model, seed):
    """TD-LoRA on: the fast path slices each adapter's A and B with its heads / channel groups and gates the
    gathered tokens with their own sample's gates (random masks with the edge cases, and the cache off)."""
    import copy
    from dydit.lora import add_td_lora, trainable_parameters
    m = add_td_lora(copy.deepcopy(model), rank=2, experts=3).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in trainable_parameters(m).items():
            if "lora_" in name or "td_lora_gates" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    x, t, y = torch.randn(3, 4, 16, 16), torch.tensor([321.0, 321.0, 321.0]), torch.tensor([0, 5, 1000])
    masks = random_masks(m, 3, seed=seed, edit=edge_cases)
    with torch.no_grad():
        ref = m(x, t, y, masks=masks)
        base = model(x, t, y, masks=masks)
        for cache in (0, 1 << 30):
            out = FastDyDiT(m, cache_bytes=cache)(x, t, y, widths=widths_from_masks(masks),
                                                  token_masks=[mk.tokens for mk in masks])
            assert rel_err(out, ref) <= 1e-5
    assert rel_err(ref, base) > 1e-3, "the adapters must change the output for the test to mean anything"


def test_compiled_attention_equals_the_plain_fast_path_on_every_width(model):
    """compile_mode (off by default): the attention core traced by torch.compile (aot_eager: the same graph as
    inductor's, without codegen, so the test takes seconds) gives the plain fast path's output at every width,
    full width included; one graph serves every head count (dynamic shapes)."""
    import torch._dynamo
    m = calibrated_routers(model)
    x, _, y = inputs(batch=2)
    steps = (999.0, 500.0, 0.0)
    plain = FastDyDiT(m).prepare(steps)
    assert plain.compile_mode is None  # default off: no GPU has measured it
    torch._dynamo.reset()
    compiled = FastDyDiT(m, compile_mode="reduce-overhead", compile_backend="aot_eager").prepare(steps)
    heads_seen = set()
    for step in steps:
        t = torch.full((2,), step)
        heads_seen |= {len(h) for h, _ in plain.plan.get(step) or width_plan(m, [step])[step]}
        with torch.no_grad():
            assert torch.allclose(compiled(x, t, y), plain(x, t, y), rtol=1e-5, atol=1e-6)
    # several head counts ran through the compiled core, in at most two graphs (dynamic shapes): the whole weights
    # (parameters) and every sliced width, not one compile per width pattern
    assert len(heads_seen) > 2, heads_seen
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 2
    with pytest.raises(ValueError, match="unknown compile_mode"):
        FastDyDiT(m, compile_mode="fastest")
