"""DyFLUX (dydit/flux.py): token routers on diffusers' FLUX transformer. The masked path is diffusers' FLUX when
every token is kept, the compute-skipping path equals the masked one (CFG batch, mixed masks), and the public
release's checkpoint layout loads and computes what the release's inference code computes."""
import pytest
import torch
from diffusers import FluxTransformer2DModel

from dydit.flux import (FluxMasks, FluxTokenRouter, add_token_routers, add_width_routers, dyflux_forward,
                        load_release_checkpoint)

CONFIG = dict(patch_size=1, in_channels=8, num_layers=2, num_single_layers=2, attention_head_dim=16,
              num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(4, 6, 6))
N, L = 16, 4  # image tokens (a 4 x 4 grid of packed latents), text tokens


def flux(seed=0, router_bias=0.0):
    torch.manual_seed(seed)
    model = add_token_routers(FluxTransformer2DModel(**CONFIG)).eval()
    with torch.no_grad():
        for p in model.parameters():  # diffusers zero-initializes nothing here, but make every layer matter
            p.add_(torch.randn_like(p) * 0.05)
        for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
            block.token_selection.router.bias.fill_(router_bias)  # 0: about half the tokens kept
    return model


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    img_ids = torch.stack([torch.zeros(N), rows.flatten(), cols.flatten()], dim=1).float()
    return dict(hidden_states=torch.randn(batch, N, 8, generator=g),
                encoder_hidden_states=torch.randn(batch, L, 32, generator=g),
                pooled_projections=torch.randn(batch, 16, generator=g),
                timestep=torch.full((batch,), 0.7), img_ids=img_ids, txt_ids=torch.zeros(L, 3))


def test_with_every_token_kept_the_masked_path_is_diffusers_flux():
    model, x = flux(), inputs()
    ones = [FluxMasks(torch.ones(2, N))] * 4
    with torch.no_grad():
        ours = dyflux_forward(model, **x, masks=ones)
        theirs = model(**x).sample
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_the_fast_path_equals_the_masked_path_with_its_routers_on_a_cfg_batch():
    model, x = flux(), inputs(batch=2)
    x = {k: torch.cat([v, v]) if k not in ("img_ids", "txt_ids") else v for k, v in x.items()}  # [cond; cond]-like
    x["encoder_hidden_states"][2:] = 0.0  # the unconditional half: an empty prompt's embedding
    record_masked, record_fast = [], []
    with torch.no_grad():
        masked = dyflux_forward(model, **x, record=record_masked)
        fast = dyflux_forward(model, **x, fast=True, record=record_fast)
    assert torch.allclose(fast, masked, atol=1e-5)
    kept = torch.stack([m.tokens.mean() for m in record_masked])
    assert 0 < float(kept.mean()) < 1, "the routers at bias 0 should drop some tokens"
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(record_masked, record_fast))  # the same tokens kept


@pytest.mark.parametrize("seed", [0, 1])
def test_the_fast_path_equals_the_masked_path_on_mixed_masks(seed):
    """Per block: one sample keeping nothing, one everything, the others at random."""
    model, x = flux(seed), inputs(batch=3, seed=seed)
    g = torch.Generator().manual_seed(seed)
    masks = []
    for _ in range(4):
        m = (torch.rand(3, N, generator=g) > 0.5).float()
        m[0], m[1] = 0.0, 1.0
        masks.append(FluxMasks(m))
    with torch.no_grad():
        masked = dyflux_forward(model, **x, masks=masks)
        fast = dyflux_forward(model, **x, masks=masks, fast=True)
    assert torch.allclose(fast, masked, atol=1e-5)


def release_single_block(block, hidden_states, temb, rotary, text_len):
    """The release's FluxSingleTransformerBlock.forward at inference (DyFLUX/flux_models/transformer_flux_dyn.py),
    on diffusers' modules: kept image rows gathered by nonzero(), run through proj_mlp and proj_out with their
    attention output, scattered into zeros; then residual + gate * (text, image)."""
    img_len = hidden_states.shape[1] - text_len
    residual = hidden_states
    ff_output_img = torch.zeros(hidden_states.shape[0] * img_len, hidden_states.shape[-1])
    norm_hidden_states, gate = block.norm(hidden_states, emb=temb)
    attn_output = block.attn(hidden_states=norm_hidden_states, image_rotary_emb=rotary)
    token_mask = block.token_selection.logits(hidden_states[:, text_len:], temb, hidden_states[:, :text_len])
    token_mask = (token_mask.sigmoid() > 0.5).float()
    text, img = norm_hidden_states[:, :text_len], norm_hidden_states[:, text_len:]
    text = block.proj_out(torch.cat([attn_output[:, :text_len], block.act_mlp(block.proj_mlp(text))], dim=2))
    token_idx = token_mask.reshape(-1).nonzero()[:, 0]
    if token_idx.numel() > 0:
        img = block.act_mlp(block.proj_mlp(img.reshape(-1, img.shape[-1])[token_idx]))
        img_attn_out = attn_output[:, text_len:].reshape(-1, attn_output.shape[-1])[token_idx]
        ff_output_img[token_idx] = block.proj_out(torch.cat([img_attn_out, img], dim=1))
    out = torch.cat([text, ff_output_img.reshape(hidden_states.shape[0], img_len, -1)], dim=1)
    return residual + gate.unsqueeze(1) * out, token_mask


def test_a_release_layout_checkpoint_loads_and_computes_what_the_release_computes(tmp_path):
    source = flux(seed=3)
    path = tmp_path / "dyflux.pt"
    torch.save({"module": source.state_dict()}, path)  # the release's layout: {"module": state dict}
    keys = torch.load(path, weights_only=True)["module"]
    assert "single_transformer_blocks.1.token_selection.linear_t.weight" in keys
    assert "transformer_blocks.0.token_selection.router.bias" in keys and "transformer_blocks.0.ff.net.2.weight" in keys
    torch.manual_seed(9)
    model = load_release_checkpoint(FluxTransformer2DModel(**CONFIG), keys).eval()
    x = inputs()
    with torch.no_grad():
        assert torch.equal(dyflux_forward(model, **x, fast=True), dyflux_forward(source, **x, fast=True))
        # one single-stream block against the release's own inference code, token for token
        block = model.single_transformer_blocks[0]
        temb = model.time_text_embed(x["timestep"] * 1000, x["pooled_projections"])
        rotary = model.pos_embed(torch.cat((x["txt_ids"], x["img_ids"])))
        txt, img = torch.randn(2, L, 32), torch.randn(2, N, 32)
        reference, release_mask = release_single_block(block, torch.cat([txt, img], dim=1), temb, rotary, L)
        from dydit.flux import FluxStep, single_block
        record = []
        ours_txt, ours_img = single_block(block, img, txt, FluxStep(temb, rotary, fast=True, record=record))
    assert torch.equal(record[0].tokens, release_mask) and 0 < float(release_mask.mean()) < 1
    assert torch.allclose(torch.cat([ours_txt, ours_img], dim=1), reference, atol=1e-5)
    with pytest.raises(ValueError, match="not a DyFLUX checkpoint"):  # plain FLUX weights: no routers
        plain = {k: v for k, v in keys.items() if "token_selection" not in k}
        load_release_checkpoint(FluxTransformer2DModel(**CONFIG), plain)


def test_routers_start_keeping_every_token_and_learn_through_the_masked_path():
    model = flux(router_bias=5.0)
    router = model.transformer_blocks[0].token_selection
    assert isinstance(router, FluxTokenRouter)
    fresh = FluxTokenRouter(32)
    assert float(fresh.router.bias.detach()) == 5.0  # the release's init
    record = []
    with torch.no_grad():
        dyflux_forward(model, **inputs(), record=record)
    assert all(bool(m.tokens.all()) for m in record)
    model.train()
    out = dyflux_forward(model, **inputs())
    out.square().mean().backward()
    assert router.router.weight.grad is not None and router.router.weight.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="model.eval"):
        dyflux_forward(model, **inputs(), fast=True)
    with pytest.raises(ValueError, match="add_token_routers"):
        dyflux_forward(FluxTransformer2DModel(**CONFIG), **inputs())


def test_the_analytic_flops_equal_fvcore_with_and_without_skipped_tokens():
    """dydit.flux_flops counts from the config what fvcore counts on the run: diffusers' FLUX (less the last block's
    text rows, which feed nothing and which dydit.flux does not run), every token kept, the routers' own choices,
    given masks."""
    from dydit.flux_flops import BlockPlan, FluxShape, flux_macs, last_text_macs
    model, x = flux(), inputs(batch=1)
    shape = FluxShape.of(model.config)
    diffusers = fvcore_macs(model, tuple(x.values()), forward=lambda *a: model(**dict(zip(x, a))).sample)
    assert diffusers - last_text_macs(shape, L) == flux_macs(shape, N, L) == count(model, x, masks=[ones(1)] * 4)
    record = []
    with torch.no_grad():
        dyflux_forward(model, **x, record=record)
    plans = [BlockPlan(float(m.tokens.mean())) for m in record]
    assert min(p.kept for p in plans) < 1 and count(model, x) == flux_macs(shape, N, L, plans, token_routers=True)
    masks = [FluxMasks((torch.rand(1, N, generator=torch.Generator().manual_seed(i)) > 0.5).float()) for i in range(4)]
    assert count(model, x, masks=masks) == flux_macs(shape, N, L, [BlockPlan(float(m.tokens.mean())) for m in masks])


def fvcore_macs(*args, **kwargs):
    from dydit.flops import fvcore_macs
    return fvcore_macs(*args, **kwargs)


def count(model, x, **kwargs):
    """fvcore's MACs of the fast path on inputs x."""
    return fvcore_macs(model, tuple(x.values()), forward=lambda *a: dyflux_forward(model, **dict(zip(x, a)), fast=True,
                                                                                      **kwargs))


def ones(batch):
    return FluxMasks(torch.ones(batch, N))


#################################################################################
#                     Width (TDW): heads and channel groups                     #
#################################################################################

def wide_flux(seed=0):
    """FLUX with token routers and DyDiT's width routers drawn at random: some heads and groups off, varying
    with the step."""
    model = add_width_routers(flux(seed))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
            for router in (block.attn_rate.router, block.mlp_rate.router):
                router.weight.copy_(torch.randn(router.weight.shape, generator=g) * 0.5)
                router.bias.zero_()
    return model


def test_width_routers_at_init_keep_everything_and_the_masked_path_is_diffusers_flux():
    model, x = add_width_routers(flux()), inputs()
    record = []
    with torch.no_grad():
        ours = dyflux_forward(model, **x, masks=[ones(2)] * 4)
        dyflux_forward(model, **x, record=record)
        theirs = model(**x).sample
    assert torch.allclose(ours, theirs, atol=1e-5)  # dydit.flux._attention on diffusers' modules = its processor
    assert all(bool(m.heads.all()) and bool(m.groups.all()) for m in record)


def test_with_widths_the_fast_path_equals_the_masked_path_and_widths_follow_the_step():
    model = wide_flux()
    per_step = []
    for t in (0.9, 0.2):
        x = {**inputs(batch=3), "timestep": torch.full((3,), t)}
        masked_record, fast_record = [], []
        with torch.no_grad():
            masked = dyflux_forward(model, **x, record=masked_record)
            fast = dyflux_forward(model, **x, fast=True, record=fast_record)
        assert torch.allclose(fast, masked, atol=1e-5), t
        heads = torch.stack([m.heads for m in masked_record])  # (blocks, B, H)
        assert bool((heads == heads[:, :1]).all())  # shared by the batch: the step decides
        assert 0 < float(heads.mean()) < 1 and 0 < float(torch.stack([m.groups for m in masked_record]).mean()) < 1
        per_step.append(heads[:, 0])
    assert not torch.equal(*per_step)
    # the FLOPs the fast path ran, counted by fvcore, are what the plan of its masks says (but the width routers:
    # their masks reach the fast path through the host, so fvcore's trace drops them as dead code; they run)
    x = {**inputs(batch=1), "timestep": torch.full((1,), 0.9)}
    record = []
    with torch.no_grad():
        dyflux_forward(model, **x, record=record)
    from dydit.flux_flops import BlockPlan, FluxShape, flux_macs
    plans = [BlockPlan(float(m.tokens.mean()), float(m.heads.mean()), float(m.groups.mean())) for m in record]
    width_routers = 4 * 2 * 32 * (2 - 1)  # 4 blocks x (head + group router) x D x (H - 1)
    assert count(model, x) + width_routers == flux_macs(FluxShape.of(model.config), N, L, plans, token_routers=True,
                                                        width_routers=2)


def test_the_fast_path_refuses_widths_that_differ_within_the_batch():
    model, x = wide_flux(), inputs(batch=2)
    heads = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    masks = [FluxMasks(torch.ones(2, N), heads, torch.ones(2, 2))] * 4
    with torch.no_grad(), pytest.raises(ValueError, match="shared by the batch"):
        dyflux_forward(model, **x, masks=masks, fast=True)


def test_a_training_step_with_the_flops_loss_moves_the_ratio_toward_lambda():
    """FluxObjective (flow matching + DyDiT's FLOPs loss): from routers that keep everything (ratio 1), Adam steps
    on the routers bring the training ratio toward λ = 0.5, and the FLOPs loss is what does it (without it, the
    same steps leave the ratio far higher)."""
    from dydit.flux_train import FluxObjective
    x = inputs(batch=4)
    noise = torch.randn(4, N, 8, generator=torch.Generator().manual_seed(1))

    def train(flops_weight):
        model = add_width_routers(flux(router_bias=5.0)).train()
        objective = FluxObjective(model, N, L, flops_weight=flops_weight)
        routers = [p for name, p in model.named_parameters() if "token_selection" in name or "_rate" in name]
        optimizer = torch.optim.Adam(routers, lr=0.05)
        torch.manual_seed(0)
        ratios = []
        for _ in range(25):
            out = objective(x["hidden_states"], x["encoder_hidden_states"], x["pooled_projections"], x["img_ids"],
                            x["txt_ids"], torch.full((4,), 0.6), noise, lambda_t=0.5)
            optimizer.zero_grad()
            out["loss"].backward()  # flow + FLOPs loss; only the routers step here
            optimizer.step()
            ratios.append(float(out["flops_ratio"]))
        return ratios

    with_loss, without = train(5.0), train(0.0)
    assert with_loss[0] > 0.95 and abs(with_loss[-1] - 0.5) < 0.1, with_loss
    assert without[-1] > with_loss[-1] + 0.15, (without, with_loss)


def test_the_registry_builds_flux_and_dyflux_from_diffusers_configs():
    from dydit.registry import FLUX_MODELS, create_model, entry, is_known
    assert set(FLUX_MODELS) == {f"{p}FLUX-{s}" for p in ("", "Dy") for s in ("Dev", "Lite", "Mini")} and is_known("DyFLUX-Lite")
    e = entry("DyFLUX-Lite")
    assert (e.static, e.dynamic, e.is_dynamic, e.config["num_layers"], e.config["num_single_layers"]) == (
        "FLUX-Lite", "DyFLUX-Lite", True, 8, 38)
    assert (e.hidden_size, entry("FLUX-Mini").hidden_size) == (3072, 128)  # the widths the mini's recipe compares
    with torch.device("meta"):
        lite, dy = create_model("FLUX-Lite"), create_model("DyFLUX-Lite")
    assert isinstance(lite, FluxTransformer2DModel) and not hasattr(lite.transformer_blocks[0], "token_selection")
    assert isinstance(dy.single_transformer_blocks[37].token_selection, FluxTokenRouter)
