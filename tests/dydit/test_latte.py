"""dydit/latte.py: Latte in the official key layout (Vchitect/Latte models/latte.py), and DyLatte's masked and
compute-skipping paths; dydit/latte_flops.py against fvcore."""
import pytest
import torch

from dydit.checkpoints import CheckpointError, load_checkpoint
from dydit.flops import count_params, fvcore_macs
from dydit.latte import FastDyLatte
from dydit.latte_flops import block_flops_ratio, latte_macs
from dydit.models import DiTBlock, randomize_
from dydit.registry import create_model

# the official Latte-XL/2 for UCF-101 (16 frames, 256 x 256: 32 x 32 latents, 101 classes), key -> shape, as
# models/latte.py builds it (no norm parameters: every LayerNorm is elementwise_affine=False)
XL, D = 28, 1152
OFFICIAL_XL = {"pos_embed": (1, 256, D), "temp_embed": (1, 16, D), "x_embedder.proj.weight": (D, 4, 2, 2),
               "x_embedder.proj.bias": (D,), "t_embedder.mlp.0.weight": (D, 256), "t_embedder.mlp.0.bias": (D,),
               "t_embedder.mlp.2.weight": (D, D), "t_embedder.mlp.2.bias": (D,),
               "y_embedder.embedding_table.weight": (102, D), "final_layer.linear.weight": (32, D),
               "final_layer.linear.bias": (32,), "final_layer.adaLN_modulation.1.weight": (2 * D, D),
               "final_layer.adaLN_modulation.1.bias": (2 * D,)}
for i in range(XL):
    OFFICIAL_XL.update({f"blocks.{i}.attn.qkv.weight": (3 * D, D), f"blocks.{i}.attn.qkv.bias": (3 * D,),
                        f"blocks.{i}.attn.proj.weight": (D, D), f"blocks.{i}.attn.proj.bias": (D,),
                        f"blocks.{i}.mlp.fc1.weight": (4 * D, D), f"blocks.{i}.mlp.fc1.bias": (4 * D,),
                        f"blocks.{i}.mlp.fc2.weight": (D, 4 * D), f"blocks.{i}.mlp.fc2.bias": (D,),
                        f"blocks.{i}.adaLN_modulation.1.weight": (6 * D, D),
                        f"blocks.{i}.adaLN_modulation.1.bias": (6 * D,)})


def test_latte_xl_2_has_the_official_keys_and_shapes():
    with torch.device("meta"):
        model = create_model("Latte-XL/2")
        unconditional = create_model("Latte-XL/2", num_classes=0)  # FaceForensics, SkyTimelapse, Taichi-HD
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == OFFICIAL_XL
    assert count_params(model) == 673_799_072 + (256 + 16) * D  # + the frozen sin-cos tables, as DiT's 675 M
    assert set(unconditional.state_dict()) == set(OFFICIAL_XL) - {"y_embedder.embedding_table.weight"}


def mini(name="Latte-Mini/2", seed=0):
    return randomize_(create_model(name), seed=seed, std=0.1).eval()


def clips(batch=2, seed=0, frames=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 1, 16, 16, generator=g), torch.tensor([700, 700]), torch.tensor([3, 7])


def official_forward(model, x, t, y):
    """A transcription of models/latte.py's forward (extras=2) on the model's modules: the reference layout."""
    b, f = x.shape[:2]
    h = model.x_embedder(x.reshape(b * f, *x.shape[2:])) + model.pos_embed
    T = h.shape[1]
    t_emb, y_emb = model.t_embedder(t), model.y_embedder(y, False)
    spatial = t_emb.repeat_interleave(f, 0) + y_emb.repeat_interleave(f, 0)  # repeat(t, 'n d -> (n c) d', c=f)
    temporal = t_emb.repeat_interleave(T, 0) + y_emb.repeat_interleave(T, 0)
    for i in range(0, len(model.blocks), 2):
        h = DiTBlock.forward(model.blocks[i], h, spatial)
        h = h.reshape(b, f, T, -1).permute(0, 2, 1, 3).reshape(b * T, f, -1)  # '(b f) t d -> (b t) f d'
        if i == 0:
            h = h + model.temp_embed
        h = DiTBlock.forward(model.blocks[i + 1], h, temporal)
        h = h.reshape(b, T, f, -1).permute(0, 2, 1, 3).reshape(b * f, T, -1)  # '(b t) f d -> (b f) t d'
    out = model.unpatchify(model.final_layer(h, spatial))
    return out.reshape(b, f, *out.shape[1:])


def test_an_official_layout_checkpoint_loads_through_the_checkpoint_loader_and_computes_latte(tmp_path):
    source = mini(seed=1)
    path = tmp_path / "latte.pt"
    torch.save({"model": source.state_dict(), "ema": source.state_dict(), "opt": {}}, path)  # train.py's layout
    model = create_model("Latte-Mini/2").eval()
    report = load_checkpoint(model, path)
    assert report.source == "ema"
    x, t, y = clips()
    with torch.no_grad():
        out = model(x, t, y)
        assert out.shape == (2, 8, 2, 16, 16)  # learned sigma: eps and the variance interpolation per frame
        assert torch.allclose(out, official_forward(model, x, t, y), atol=1e-6)
    image_model = randomize_(create_model("DiT-Mini/2"))  # another layout: refused, saying what differs
    with pytest.raises(CheckpointError, match="temp_embed"):
        load_checkpoint(model, image_model.state_dict())
    with pytest.raises(ValueError, match="clips of 8 frames"):
        model(x[:, :4], t, y)


@torch.no_grad()
def half_tokens(model, x, t, y):
    """Token routers biased so each block keeps about half its tokens (on these inputs)."""
    for block in model.blocks:
        logits = []
        hook = block.token_selection.mlp_head.register_forward_hook(lambda m, i, o: logits.append(o))
        model(x, t, y)
        hook.remove()
        block.token_selection.mlp_head[2].bias.sub_(logits[0].median())


def test_dylatte_fast_path_equals_the_masked_path_with_mixed_masks_in_spatial_and_temporal_blocks():
    model = mini("DyLatte-Mini/2", seed=2)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for block in model.blocks:
            for router in (block.attn_rate.router, block.mlp_rate.router):
                router.weight.copy_(torch.randn(router.weight.shape, generator=g) * 3.0)
                router.bias.zero_()
            block.token_selection.mlp_head[2].bias.zero_()
    x, t, y = clips()
    half_tokens(model, x, t, y)
    record, fast_record = [], []
    with torch.no_grad():
        masked = model(x, t, y, record=record)
        fast = FastDyLatte(model)(x, t, y, token_masks=[r.tokens for r in record])
        FastDyLatte(model)(x, t, y, record=fast_record)  # its own routers: the same decisions up to rounding
    assert torch.allclose(fast, masked, atol=1e-5)
    agree = torch.cat([(a.tokens == b.tokens).flatten() for a, b in zip(record, fast_record)]).float().mean()
    assert float(agree) > 0.99  # a logit within rounding of 0 may go either way
    spatial, temporal = record[0].tokens, record[1].tokens
    assert spatial.shape == (2 * 8, 64) and temporal.shape == (2 * 64, 8)  # (sequences, tokens of a sequence)
    assert 0 < float(spatial.mean()) < 1 and 0 < float(temporal.mean()) < 1  # mixed in both block types
    heads = torch.cat([r.heads.sum(-1) for r in record])
    assert 0 < float(heads.min()) and float(heads.min()) < 4  # widths vary too
    ratio = block_flops_ratio(model, record)
    assert ratio.shape == (2,) and 0.1 < float(ratio.min()) < 1.0


def test_analytic_flops_equal_fvcore_for_latte_and_the_dylatte_fast_path():
    latte = mini()
    x, t, y = clips(batch=1)
    t = t[:1]
    y = y[:1]
    assert latte_macs(latte) == pytest.approx(fvcore_macs(latte, inputs=(x, t, y)), rel=1e-6)
    dy = mini("DyLatte-Mini/2", seed=4)
    half_tokens(dy, x, t, y)
    fast = FastDyLatte(dy)
    record = []
    with torch.no_grad():
        fast(x, t, y, record=record)
    counted = fvcore_macs(dy, inputs=(x, t, y), forward=fast)
    analytic = float(latte_macs(dy, record)[0])
    assert abs(counted - analytic) / analytic < 0.01
    assert analytic < latte_macs(dy, static=True)


def test_a_training_step_with_the_flops_loss_moves_dylattes_ratio_toward_lambda():
    """dydit.train_step's objective on DyLatte (DiT's diffusion loss + the FLOPs loss): from routers that keep
    everything, Adam steps on the routers bring the training ratio toward λ = 0.5; without the FLOPs loss they don't."""
    from dydit.diffusion import GaussianDiffusion
    from dydit.train_step import TrainingObjective
    x, _, y = clips(batch=2)
    t = torch.tensor([300, 800])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))

    def train(flops_weight):
        torch.manual_seed(0)
        model = create_model("DyLatte-Mini/2").train()
        with torch.no_grad():
            for block in model.blocks:  # DyFLUX's bias 5 (the mini's recipe): the routers can move in a few steps
                block.token_selection.mlp_head[2].bias.fill_(5.0)
                for router in (block.attn_rate.router, block.mlp_rate.router):
                    router.bias.fill_(5.0)
        objective = TrainingObjective(model, GaussianDiffusion(), flops_weight=flops_weight)
        routers = [p for name, p in model.named_parameters() if "token_selection" in name or "_rate" in name]
        optimizer = torch.optim.Adam(routers, lr=0.05)
        ratios = []
        for _ in range(25):
            out = objective(x, y, t, noise, lambda_t=0.5)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            ratios.append(float(out["flops_ratio"]))
        return ratios

    with_loss, without = train(5.0), train(0.0)
    assert with_loss[0] > 0.9 and abs(with_loss[-1] - 0.5) < 0.1, with_loss
    assert without[-1] > with_loss[-1] + 0.15, (without, with_loss)


def test_latte_starts_from_its_image_dit_as_lattes_train_py_does(tmp_path):
    """load_matching: every tensor of the image DiT whose name and shape match (the blocks by index, embedders,
    final layer); the temporal table and a class table of another size keep their init; another model is refused."""
    from dydit.checkpoints import CheckpointError, load_matching, save_checkpoint
    from dydit.registry import entry
    assert entry("Latte-Mini/2").image_model == "DiT-Mini/2" and entry("DyLatte-XL/2").image_model == "DiT-XL/2"
    from dydit.registry import LATTE_MODELS, is_known
    assert all(is_known(e.image_model) for e in LATTE_MODELS.values())
    torch.manual_seed(0)
    dit = create_model("DiT-Mini/2")
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(torch.randn_like(p))
    save_checkpoint(dit, tmp_path / "dit.safetensors")
    latte = create_model("Latte-Mini/2")  # 40 classes, 8 frames
    fresh_table = latte.y_embedder.embedding_table.weight.clone()
    report = load_matching(latte, tmp_path / "dit.safetensors")
    assert set(report.fresh_keys) == {"temp_embed", "y_embedder.embedding_table.weight"}
    assert report.unexpected_keys == ["y_embedder.embedding_table.weight"]  # 11 rows there, 41 here
    for name, tensor in dit.state_dict().items():
        if name not in report.fresh_keys:
            assert torch.equal(latte.state_dict()[name], tensor), name
    assert torch.equal(latte.y_embedder.embedding_table.weight, fresh_table)
    save_checkpoint(create_model("FLUX-Mini"), tmp_path / "flux.safetensors")
    with pytest.raises(CheckpointError, match=r"only \d+ of the model.s \d+ tensors match it by name and shape"):
        load_matching(latte, tmp_path / "flux.safetensors")


def test_init_matching_needs_a_checkpoint_and_no_adapter():
    from dydit.train_config import TrainConfig, TrainError
    with pytest.raises(TrainError, match="give init_checkpoint"):
        TrainConfig(model="Latte-Mini/2", init_matching=True).validate()
    with pytest.raises(TrainError, match="no adapter"):
        TrainConfig(model="DyLatte-Mini/2", init_checkpoint="x.pt", init_matching=True, adapter="lora").validate()
