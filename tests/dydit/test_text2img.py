"""dydit/text2img.py: a text-to-image FLUX (with DyFLUX's routers) behind DiT's (x, t, y) interface, trained by
dydit.train_step's objective like a DyDiT."""
import torch
from diffusers import FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel

from dydit.flow import FlowMatching
from dydit.flux import add_token_routers, add_width_routers
from dydit.text2img import PAD_ID, TextToImageFlux
from dydit.train_step import TrainingObjective

SIZE = (8, 16)  # (H, W) pixels, one channel: 4 x 8 = 32 image tokens


def model(dynamic=True, seed=0):
    torch.manual_seed(seed)
    flux = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                  pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
    if dynamic:
        add_width_routers(add_token_routers(flux))
    text = CLIPTextModel(CLIPTextConfig(vocab_size=20, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=6, pad_token_id=PAD_ID,
                                        eos_token_id=1, bos_token_id=1))
    return TextToImageFlux(flux, text, SIZE)


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 20, (n, 6), generator=g)
    ids[:, 4:] = PAD_ID
    return torch.randn(n, 1, *SIZE, generator=g), torch.rand(n, generator=g), ids


def test_packing_is_flux_s_2x2_patches_and_inverts():
    m, (x, _, _) = model(), batch()
    tokens = m.pack(x)
    assert tokens.shape == (4, 32, 4) and torch.equal(tokens[0, 0], x[0, 0, :2, :2].flatten())
    assert torch.equal(m.unpack(tokens), x)


def test_the_objective_trains_it_like_a_dydit_and_the_fast_path_equals_the_masked_one():
    m = model().train()
    objective = TrainingObjective(m, FlowMatching(), flops_weight=1.0)
    x, t, y = batch()
    torch.manual_seed(0)
    out = objective(x, y, t, torch.randn_like(x), lambda_t=0.5, complete=True)
    assert torch.isfinite(out["loss"]) and float(out["flops_ratio"]) > 0.95  # routers start all on
    assert float(out["complete"]) > 0 and float(out["flops_loss"]) > 0
    out["loss"].backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert grads["text_encoder.embeddings.token_embedding.weight"].abs().sum() > 0  # trained together
    assert grads["transformer.transformer_blocks.0.token_selection.router.weight"].abs().sum() > 0
    # the FLOPs loss reaches the routers: without it (weight 0) their gradient differs
    again = model().train()
    torch.manual_seed(0)
    TrainingObjective(again, FlowMatching(), flops_weight=0.0)(x, y, t, torch.randn_like(x), lambda_t=0.5,
                                                               complete=True)["loss"].backward()
    name = "transformer.transformer_blocks.0.token_selection.router.weight"
    assert not torch.allclose(dict(again.named_parameters())[name].grad, grads[name])
    static = TrainingObjective(model(dynamic=False), FlowMatching())
    assert float(static(x, y, t, torch.randn_like(x))["flops_ratio"]) == 1.0  # no routers, no FLOPs loss
    m.eval()
    with torch.no_grad():
        for block in [*m.transformer.transformer_blocks, *m.transformer.single_transformer_blocks]:
            block.token_selection.router.bias.zero_()  # drop some tokens
        masked = m(x, torch.full((4,), 0.3), y)
        m.fast = True
        fast = m(x, torch.full((4,), 0.3), y)
    assert torch.allclose(fast, masked, atol=1e-5)


def test_prompt_dropout_gives_the_empty_prompt_in_training_only():
    m, (x, t, y) = model(), batch(n=64)
    m.train()
    m.text_dropout = 1.0
    empty = torch.full_like(y, PAD_ID)
    with torch.no_grad():
        torch.manual_seed(0)
        dropped = m(x, t, y, masks=m.all_on(64, x.device))
        m.eval()
        as_empty = m(x, t, empty, masks=m.all_on(64, x.device))
    assert torch.allclose(dropped, as_empty, atol=1e-5)


def test_dydit_sampling_samples_it_from_prompts_with_cfg_on_the_empty_prompt_and_the_fast_path():
    """dydit.sampling's flow samplers take it as they take SiT: labels are token ids, and the unconditional
    half of CFG is the empty prompt (null_class = PAD_ID fills every token)."""
    from dydit import sampling
    m = model().eval()
    with torch.no_grad():
        for block in [*m.transformer.transformer_blocks, *m.transformer.single_transformer_blocks]:
            block.token_selection.router.bias.zero_()  # drop some tokens
    _, _, ids = batch(n=2)
    noise = torch.randn(2, 1, *SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        masked = sampling.sample_latents(m, "flow-euler", noise, ids, 4, cfg_scale=2.0, guided_channels=None,
                                         null_class=PAD_ID)
        m.fast = True
        fast = sampling.sample_latents(m, "flow-euler", noise, ids, 4, cfg_scale=2.0, guided_channels=None,
                                       null_class=PAD_ID)
    assert masked.shape == noise.shape and torch.isfinite(masked).all()
    assert torch.allclose(fast, masked, atol=1e-4)


def test_static_lora_on_dyflux_adapts_every_block_linear_trains_routers_and_merges_for_the_fast_path():
    import pytest
    from dydit.lora import add_static_lora, merge_static_lora, trainable_parameters
    m = add_static_lora(model(), rank=2).eval()
    names = set(trainable_parameters(m))
    adapted = {n.split(".lora_A")[0] for n in names if ".lora_A." in n}
    assert "transformer.transformer_blocks.0.attn.to_q" in adapted and "transformer.transformer_blocks.0.ff.net.2" in adapted
    assert "transformer.single_transformer_blocks.0.proj_mlp" in adapted
    assert "transformer.single_transformer_blocks.0.proj_out" in adapted and "transformer.proj_out" not in adapted
    assert any("token_selection" in n for n in names) and any("attn_rate" in n for n in names)  # routers learn
    assert not any(n.startswith("text_encoder.") for n in names)  # the text encoder is frozen with the base
    for n, p in m.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    x, _, y = batch()
    t = torch.full((4,), 0.3)
    with torch.no_grad():
        for block in [*m.transformer.transformer_blocks, *m.transformer.single_transformer_blocks]:
            block.token_selection.router.bias.zero_()  # drop some tokens
        before = m(x, t, y)
        m.fast = True
        with pytest.raises(ValueError, match="merge_static_lora"):  # slicing would drop the update
            m(x, t, y)
        merge_static_lora(m)
        fast = m(x, t, y)
        m.fast = False
        after = m(x, t, y)
    assert type(m.transformer.transformer_blocks[0].attn.to_q) is torch.nn.Linear
    assert torch.allclose(before, after, atol=1e-5) and torch.allclose(fast, after, atol=1e-5)


def test_td_lora_on_dyflux_starts_as_its_base_gates_follow_the_timestep_and_the_fast_path_equals_the_masked():
    from dydit.lora import TDLoRALinear, add_td_lora, trainable_parameters
    x, _, y = batch()
    t = torch.full((4,), 0.3)
    base = model().eval()
    with torch.no_grad():
        for block in [*base.transformer.transformer_blocks, *base.transformer.single_transformer_blocks]:
            block.token_selection.router.bias.zero_()  # drop some tokens
        plain = base(x, t, y)
    m = add_td_lora(base, rank=2, experts=3)
    with torch.no_grad():
        assert torch.allclose(m(x, t, y), plain, atol=1e-6)  # B = 0: the base model exactly
    flux = m.transformer
    assert isinstance(flux.single_transformer_blocks[0].proj_mlp, TDLoRALinear)
    assert isinstance(flux.transformer_blocks[0].attn.add_q_proj, TDLoRALinear) and not isinstance(flux.proj_out,
                                                                                                     TDLoRALinear)
    names = set(trainable_parameters(m))
    assert any("td_lora_gates" in n for n in names) and any("token_selection" in n for n in names)
    assert not any(n.startswith("text_encoder.") or n.endswith("base.weight") for n in names)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_b" in n or "td_lora_gates" in n:
                p.normal_(std=0.2)
        masked = m(x, t, y)
        m.fast = True
        fast = m(x, t, y)
        m.fast = False
        gates_early = flux.transformer_blocks[0].ff.net[2].gates.clone()
        flux.single_transformer_blocks[0].token_selection.router.bias.fill_(-1e4)  # a block that keeps no token
        none_kept = m(x, t, y)
        m.fast = True
        assert torch.allclose(m(x, t, y), none_kept, atol=1e-5)  # the experts see no row: nothing to add
        m.fast = False
        m(x, torch.full((4,), 0.9), y)
    assert not torch.allclose(masked, plain, atol=1e-4)  # the experts act
    assert torch.allclose(fast, masked, atol=1e-5)  # gathered rows carry their sample's gates
    assert not torch.allclose(flux.transformer_blocks[0].ff.net[2].gates, gates_early)  # gates follow t
