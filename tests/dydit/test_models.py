"""DiT / DyDiT reference models: sizes, checkpoint layout, router semantics."""
import pytest
import torch

from dydit.flops import count_params
from dydit.models import BlockMasks, DiT, DyDiT, randomize_
from dydit.registry import create_model

PAPER_PARAMS = {  # PAPER.md section 1-2: the official architectures, pos_embed included
    "DiT-S/2": 32_963_360, "DiT-B/2": 130_512_416, "DiT-L/2": 458_102_816, "DiT-XL/2": 675_129_632,
    "DyDiT-S/2": 33_120_740, "DyDiT-B/2": 131_158_964, "DyDiT-L/2": 460_416_776, "DyDiT-XL/2": 678_424_644,
}


def meta_model(name, **kwargs):
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_param_counts_match_the_official_architectures(name):
    assert count_params(meta_model(name)) == PAPER_PARAMS[name]


def test_dit_xl_state_dict_has_the_official_key_layout():
    sd = meta_model("DiT-XL/2").state_dict()
    assert len(sd) == 292
    expected = {
        "pos_embed": (1, 256, 1152), "x_embedder.proj.weight": (1152, 4, 2, 2),
        "y_embedder.embedding_table.weight": (1001, 1152), "t_embedder.mlp.0.weight": (1152, 256),
        "t_embedder.mlp.2.weight": (1152, 1152), "blocks.27.attn.qkv.weight": (3456, 1152),
        "blocks.0.attn.proj.weight": (1152, 1152), "blocks.0.mlp.fc1.weight": (4608, 1152),
        "blocks.0.mlp.fc2.weight": (1152, 4608), "blocks.0.adaLN_modulation.1.weight": (6912, 1152),
        "final_layer.linear.weight": (32, 1152), "final_layer.adaLN_modulation.1.weight": (2304, 1152),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any("norm" in k for k in sd), "DiT LayerNorms have no affine parameters"


def test_dydit_xl_adds_the_official_router_keys():
    dit, dydit = meta_model("DiT-XL/2").state_dict(), meta_model("DyDiT-XL/2").state_dict()
    extra = {k: tuple(v.shape) for k, v in dydit.items() if k not in dit}
    assert set(dit) <= set(dydit)
    assert len(extra) == 28 * 8
    assert extra["blocks.3.attn_rate.router.weight"] == (15, 1152)
    assert extra["blocks.3.mlp_rate.router.bias"] == (15,)
    assert extra["blocks.3.token_selection.mlp_head.0.weight"] == (72, 1152)
    assert extra["blocks.3.token_selection.mlp_head.2.weight"] == (1, 72)


def tiny_pair(seed=0):
    """A random DiT and a DyDiT holding the same backbone weights, routers at their init."""
    dit = randomize_(create_model("DiT-S/4", input_size=16), seed=seed, std=0.05).eval()
    dydit = create_model("DyDiT-S/4", input_size=16).eval()
    missing, unexpected = dydit.load_state_dict(dit.state_dict(), strict=False)
    assert not unexpected and all("rate" in k or "token_selection" in k for k in missing)
    return dit, dydit


def inputs(batch=3, size=16):
    return torch.randn(batch, 4, size, size), torch.tensor([10.0, 500.0, 999.0][:batch]), torch.tensor([1, 7, 1000][:batch])


def test_dydit_with_routers_at_init_equals_dit():
    dit, dydit = tiny_pair()
    x, t, y = inputs()
    record = []
    with torch.no_grad():
        out = dydit(x, t, y, record=record)
        ref = dit(x, t, y)
    assert all(bool(m.heads.all() and m.channels.all() and m.tokens.all()) for m in record)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_complete_model_ignores_the_routers():
    dit, dydit = tiny_pair()
    for block in dydit.blocks:  # routers that would switch everything off
        torch.nn.init.constant_(block.attn_rate.router.bias, -50.0)
        torch.nn.init.constant_(block.token_selection.mlp_head[2].bias, -50.0)
    x, t, y = inputs()
    with torch.no_grad():
        assert not torch.allclose(dydit(x, t, y), dit(x, t, y), atol=1e-4)
        dydit.complete_model = True
        torch.testing.assert_close(dydit(x, t, y), dit(x, t, y), rtol=1e-6, atol=1e-6)


def test_eval_masks_are_deterministic_threshold_and_head_zero_is_always_on():
    _, dydit = tiny_pair()
    for block in dydit.blocks:
        torch.nn.init.normal_(block.attn_rate.router.weight, std=1.0)
        torch.nn.init.constant_(block.attn_rate.router.bias, -0.5)
    x, t, y = inputs()
    rec1, rec2 = [], []
    with torch.no_grad():
        dydit(x, t, y, record=rec1)
        dydit(x, t, y, record=rec2)
    t_emb = dydit.t_embedder(t)
    for block, m1, m2 in zip(dydit.blocks, rec1, rec2):
        assert torch.equal(m1.heads, m2.heads)
        assert bool((m1.heads[:, 0] == 1).all())
        expected = (torch.sigmoid(block.attn_rate.router(t_emb)) > 0.5).float()
        assert torch.equal(m1.heads[:, 1:], expected)


def test_training_masks_are_binary_and_gradients_reach_every_router():
    _, dydit = tiny_pair()
    for block in dydit.blocks:  # logits near 0 so the Gumbel noise flips some masks
        for r in (block.attn_rate.router, block.mlp_rate.router):
            torch.nn.init.constant_(r.bias, 0.0)
            torch.nn.init.normal_(r.weight, std=0.1)
        torch.nn.init.normal_(block.token_selection.mlp_head[2].weight, std=0.1)
        torch.nn.init.constant_(block.token_selection.mlp_head[2].bias, 0.0)
    dydit.train()
    x, t, y = inputs()
    record = []
    out = dydit(x, t, y, record=record)
    for m in record:
        for mask in (m.heads, m.channels, m.tokens):
            assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}
    assert any(0 < float(m.tokens.detach().mean()) < 1 for m in record), "Gumbel noise should switch some tokens"
    (out.square().mean() + sum(m.heads.sum() + m.channels.sum() + m.tokens.sum() for m in record)).backward()
    for block in dydit.blocks:
        for p in (block.attn_rate.router.weight, block.mlp_rate.router.weight, block.token_selection.mlp_head[0].weight):
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_mask_overrides_skip_the_mlp_of_dropped_tokens_only():
    _, dydit = tiny_pair()
    x, t, y = inputs(batch=1)
    T, H = dydit.x_embedder.num_patches, dydit.num_heads
    none = [BlockMasks(torch.ones(1, H), torch.ones(1, H), torch.zeros(1, T)) for _ in dydit.blocks]
    with torch.no_grad():
        dropped = dydit(x, t, y, masks=none)
        for block in dydit.blocks:  # the same model without any MLP
            block.mlp.fc2.weight.zero_()
            block.mlp.fc2.bias.zero_()
        no_mlp = dydit(x, t, y)
    torch.testing.assert_close(dropped, no_mlp, rtol=1e-6, atol=1e-6)


def test_cfg_guides_three_channels_by_default_and_all_on_request():
    dit, _ = tiny_pair()
    x = torch.randn(2, 4, 16, 16)
    t, y = torch.tensor([500.0, 500.0]), torch.tensor([3, 1000])
    with torch.no_grad():
        raw = dit(torch.cat([x[:1], x[:1]]), t, y)
        three = dit.forward_with_cfg(x, t, y, cfg_scale=4.0)
        four = dit.forward_with_cfg(x, t, y, cfg_scale=4.0, guided_channels=None)
    guided = raw[1:, :3] + 4.0 * (raw[:1, :3] - raw[1:, :3])
    torch.testing.assert_close(three[0, :3], guided[0])
    torch.testing.assert_close(three[:, 3], raw[:, 3])  # the 4th channel is not guided (DiT issue #41)
    torch.testing.assert_close(four[0, 3], raw[1, 3] + 4.0 * (raw[0, 3] - raw[1, 3]))
    torch.testing.assert_close(three[:, 4:], raw[:, 4:])  # learned sigma passes through


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="DyDiT-XL/2"):
        create_model("DiT-XXL/2")


def test_model_classes():
    assert isinstance(meta_model("DyDiT-B/4"), DyDiT) and type(meta_model("DiT-B/8")) is DiT
    assert meta_model("SiT-XL/2").out_channels == 4 and meta_model("DiT-XL/2").out_channels == 8


def test_mini_is_a_one_channel_ten_class_dit_of_16_by_16_inputs():
    dit, dydit = create_model("DiT-Mini/2"), create_model("DyDiT-Mini/2")
    assert (dit.input_size, dit.in_channels, dit.out_channels, dit.x_embedder.num_patches) == (16, 1, 2, 64)
    assert dit.y_embedder.embedding_table.num_embeddings == 11  # ten classes and the null class
    assert count_params(dit) == 1_281_032 and len(dit.blocks) == 4 and dit.num_heads == 4
    assert isinstance(dydit, DyDiT) and count_params(dydit) - count_params(dit) == 4 * (2 * (128 * 3 + 3) + 128 * 8 + 8 + 8 + 1)
    assert create_model("DiT-Mini/2", input_size=8).x_embedder.num_patches == 16  # defaults can be overridden
    out = dydit.eval()(torch.randn(2, 1, 16, 16), torch.tensor([10, 900]), torch.tensor([3, 10]))
    assert out.shape == (2, 2, 16, 16)
