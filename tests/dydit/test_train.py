"""Training (dydit/train.py, dydit/train_step.py) on tiny models and random data, a few steps each."""
import pytest
import torch
from torch.utils.data import Dataset

from dydit.checkpoints import CheckpointError, is_router_key, load_checkpoint
from dydit.diffusion import GaussianDiffusion
from dydit.flops import block_flops_ratio
from dydit.registry import create_model
from dydit.train import checkpoints_of, train
from dydit.train_config import NonFiniteLoss, TrainConfig, TrainError
from dydit.train_step import StepRandom, TrainingObjective, flops_target, learning_rate, router_noise, update_ema


class RandomLatents(Dataset):
    """n random (1, 8, 8) latents with labels; random augmentation from torch's RNG (a flip, a jitter)."""

    def __init__(self, n=6, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, 8, 8, generator=g)
        self.y = torch.randint(0, 10, (n,), generator=g)
        self.num_classes = 10

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i] + 0.01 * torch.randn(self.x[i].shape)
        return (x.flip(-1) if torch.rand(()) < 0.5 else x), int(self.y[i])


def tiny(**overrides):
    """DyDiT-Mini/2 on 8 x 8 inputs (16 tokens), every part of the objective switched on."""
    base = dict(model="DyDiT-Mini/2", global_batch_size=4, max_steps=4, lr=1e-3, lr_warmup=2, lr_cosine=True,
                flops_ratio=0.5, flops_hold=1, flops_warmup=2, complete_loss=True, complete_loss_until=3,
                stratified_timesteps=True, grad_clip=1.0, ema_decay=0.9, log_every=1, ckpt_every=2)
    return TrainConfig(**{**base, **overrides})


def tensors(result):
    return {**{f"model.{k}": v for k, v in result.model.state_dict().items()},
            **{f"ema.{k}": v for k, v in result.ema.state_dict().items()}}


def batch(model, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, model.in_channels, model.input_size, model.input_size, generator=g),
            torch.randint(0, 10, (n,), generator=g), torch.randint(0, 1000, (n,), generator=g))


#################################################################################
#                               Objective                                       #
#################################################################################

def test_dydit_at_init_has_the_dit_loss():
    """Same weights, batch, noise and class dropout: all-on routers give the DiT's loss."""
    dit = create_model("DiT-Mini/2", input_size=8)
    dydit = create_model("DyDiT-Mini/2", input_size=8)
    load_checkpoint(dydit, dit.state_dict())  # DiT -> DyDiT, routers fresh (all on)
    x, y, t = batch(dit)
    noise = torch.randn_like(x)
    draws = StepRandom(seed=3, step=0, rows=slice(0, 4), global_batch=4, device="cpu")
    dit_out = TrainingObjective(dit.train(), GaussianDiffusion())(x, y, t, noise, draws=draws)
    dy_out = TrainingObjective(dydit.train(), GaussianDiffusion())(x, y, t, noise, lambda_t=1.0, complete=True,
                                                                   draws=draws)
    torch.testing.assert_close(dy_out["diffusion"], dit_out["diffusion"], rtol=1e-6, atol=0)
    assert dy_out["flops_ratio"].item() == pytest.approx(1.0, abs=1e-6)
    assert dy_out["flops_loss"].item() < 1e-10
    assert dit_out["loss"].item() == dit_out["diffusion"].item()  # plain DiT: the diffusion loss only


def test_gradients_reach_the_routers_through_the_straight_through_masks():
    model = create_model("DyDiT-Mini/2", input_size=8).train()
    x, y, t = batch(model)
    out = TrainingObjective(model, GaussianDiffusion())(x, y, t, torch.randn_like(x), lambda_t=0.5)
    out["loss"].backward()
    for block in model.blocks:
        for p in (block.attn_rate.router.weight, block.mlp_rate.router.weight, block.attn_rate.router.bias,
                  block.token_selection.mlp_head[2].weight):
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_flops_loss_pulls_the_eval_ratio_toward_lambda():
    model = create_model("DyDiT-Mini/2", input_size=8)
    objective = TrainingObjective(model, GaussianDiffusion())
    routers = [p for n, p in model.named_parameters() if ".attn_rate." in n or ".mlp_rate." in n or "token_sel" in n]
    opt = torch.optim.AdamW(routers, lr=0.1, weight_decay=0)
    x, y, t = batch(model, n=16)

    def eval_ratio():
        model.eval()
        record = []
        with torch.no_grad():
            model(x, t, y, record=record)
        model.train()
        return block_flops_ratio(model, record).mean().item()
    assert eval_ratio() == 1.0
    for _ in range(20):
        out = objective(x, y, t, torch.randn_like(x), lambda_t=0.5)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert abs(eval_ratio() - 0.5) < 0.1


def test_without_router_noise_the_training_masks_are_the_eval_decision():
    model = create_model("DyDiT-Mini/2", input_size=8)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # routers on their decision boundary: half the heads, groups and tokens either way
        for name, p in model.named_parameters():
            if ".attn_rate." in name or ".mlp_rate." in name or "token_sel" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x, y, t = batch(model, n=8)

    def masks(train, noise=1.0):
        model.train(train)
        model.set_router_noise(noise)
        record = []
        model(x, t, y, record=record)
        return torch.cat([torch.cat([m.heads, m.channels, m.tokens], 1).flatten() for m in record])
    eval_masks = masks(False)
    assert 0.2 < eval_masks.mean() < 0.8
    assert torch.equal(masks(True, 0.0), eval_masks)  # noise 0: the eval decision, in training
    assert not torch.equal(masks(True, 1.0), eval_masks)  # the official noise: other masks
    loss = masks(True, 0.0).sum()
    loss.backward()  # the straight-through gradient is still there
    assert model.blocks[0].attn_rate.router.weight.grad.abs().sum() > 0


def test_schedules():
    assert [router_noise(s, 100, 0.2) for s in (0, 79, 80, 89, 99)] == pytest.approx([1.0, 1.0, 0.95, 0.5, 0.0])
    assert router_noise(99, 100, 0.0) == 1.0  # no anneal: the official noise throughout
    assert [flops_target(s, 0.5, hold=2, warmup=4) for s in (0, 1, 2, 4, 6, 100)] == [1, 1, 1, 0.75, 0.5, 0.5]
    assert flops_target(0, 0.7, hold=0, warmup=0) == 0.7
    assert [learning_rate(s, 1.0, warmup=4) for s in (0, 3, 4, 99)] == [0.25, 1.0, 1.0, 1.0]
    assert learning_rate(4, 1.0, warmup=4, cosine=True, max_steps=14) == 1.0
    assert learning_rate(9, 1.0, warmup=4, cosine=True, max_steps=14) == pytest.approx(0.5)
    assert learning_rate(14, 1.0, warmup=4, cosine=True, max_steps=14, min_lr=0.1) == pytest.approx(0.1)


#################################################################################
#                               The loop                                        #
#################################################################################

def test_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    data = RandomLatents()
    whole = train(tiny(), data, tmp_path / "whole", progress=False)
    part = train(tiny(), data, tmp_path / "part", stop_after=1, progress=False)
    assert part.step == 1 and checkpoints_of(tmp_path / "part")[-1].name == "0000001.pt"
    torch.manual_seed(123)  # a restart is another process: nothing may depend on the global RNG
    resumed = train(tiny(log_every=3), data, tmp_path / "part", resume=True, progress=False)  # run-only change
    assert resumed.step == whole.step == 4
    a, b = tensors(whole), tensors(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    opt_a = torch.load(whole.checkpoint, weights_only=True)["opt"]["state"]
    opt_b = torch.load(resumed.checkpoint, weights_only=True)["opt"]["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])
    steps = [__import__("json").loads(line)["step"] for line in (tmp_path / "part" / "log.jsonl").open()]
    assert steps == [1, 3, 4]


def test_exactly_one_optimizer_step_per_iteration(tmp_path, monkeypatch):
    calls = []
    original = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (calls.append(1), original(self, *a, **k))[1])
    result = train(tiny(max_steps=3), RandomLatents(), tmp_path, progress=False)
    assert len(calls) == 3
    state = torch.load(result.checkpoint, weights_only=True)["opt"]["state"]
    assert {float(s["step"]) for s in state.values()} == {3.0}


def test_checkpoint_is_the_official_layout_and_loads_its_ema(tmp_path):
    result = train(tiny(max_steps=2), RandomLatents(), tmp_path, progress=False)
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert set(ckpt) == {"model", "ema", "opt", "args", "step"} and ckpt["step"] == 2
    assert "blocks.0.attn_rate.router.weight" in ckpt["ema"] and not any(k.startswith("module.") for k in ckpt["ema"])
    fresh = create_model("DyDiT-Mini/2", input_size=8)
    assert load_checkpoint(fresh, result.checkpoint).source == "ema"
    x, y, t = batch(fresh)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x, t, y), result.ema.eval()(x, t, y))
    assert not torch.equal(result.ema.state_dict()["blocks.0.mlp.fc1.weight"],
                           result.model.state_dict()["blocks.0.mlp.fc1.weight"])


def test_dit_training_and_dydit_finetuning_from_its_checkpoint(tmp_path):
    dit = train(tiny(model="DiT-Mini/2", max_steps=2), RandomLatents(), tmp_path / "dit", progress=False)
    first = [__import__("json").loads(line) for line in (tmp_path / "dit" / "log.jsonl").open()][0]
    assert first["complete"] == 0 and first["flops_loss"] == 0 and first["loss"] == pytest.approx(first["diffusion"])
    ft = train(tiny(init_checkpoint=str(dit.checkpoint), max_steps=1), RandomLatents(), tmp_path / "ft",
               progress=False)
    assert ft.step == 1


def test_a_finetune_from_a_dit_is_a_function_of_its_seed_not_of_the_callers_rng(tmp_path):
    """The fresh routers' random first layer comes from the run's seed: two fine-tunes with the caller's RNG in
    different states end bit-identical (before, the mini's DyDiTs differed between runs from the first step), and
    the caller's RNG is left alone."""
    dit = train(tiny(model="DiT-Mini/2", max_steps=1), RandomLatents(), tmp_path / "dit", progress=False)
    runs = []
    for name, rng_seed in (("a", 1), ("b", 2)):
        torch.manual_seed(rng_seed)
        before = torch.random.get_rng_state()
        runs.append(tensors(train(tiny(init_checkpoint=str(dit.checkpoint), max_steps=2), RandomLatents(),
                                  tmp_path / name, progress=False)))
        assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    other = tensors(train(tiny(init_checkpoint=str(dit.checkpoint), max_steps=2, seed=1), RandomLatents(),
                          tmp_path / "seed1", progress=False))
    key = "model.blocks.0.token_selection.mlp_head.0.weight"
    assert not torch.equal(runs[0][key], other[key])  # another seed, other routers


#################################################################################
#                               Bad input                                       #
#################################################################################

@pytest.mark.parametrize("lam", [0.0, -0.1, 1.5])
def test_lambda_outside_0_1_is_refused(lam, tmp_path):
    with pytest.raises(TrainError, match=r"\(0, 1\]"):
        train(tiny(flops_ratio=lam), RandomLatents(), tmp_path)


def test_a_checkpoint_of_another_size_is_refused(tmp_path):
    path = tmp_path / "dit-s.pt"
    torch.save(create_model("DiT-S/8", input_size=8).state_dict(), path)
    with pytest.raises(CheckpointError, match="size mismatch"):
        train(tiny(init_checkpoint=str(path)), RandomLatents(), tmp_path / "run")
    assert not checkpoints_of(tmp_path / "run")


def test_resume_with_another_config_names_the_fields(tmp_path):
    train(tiny(max_steps=1), RandomLatents(), tmp_path, progress=False)
    with pytest.raises(TrainError, match=r"flops_ratio 0.5 \(saved\) vs 0.6 \(now\); lr 0.001 \(saved\) vs 0.002"):
        train(tiny(max_steps=1, lr=2e-3, flops_ratio=0.6), RandomLatents(), tmp_path, resume=True)
    with pytest.raises(TrainError, match="already holds checkpoints"):
        train(tiny(max_steps=1), RandomLatents(), tmp_path)


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """lr 1e30: the first update is finite (Adam moves each weight by ~lr), the next forward overflows."""
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at step 2 .*0000001\.pt"):
        train(tiny(lr=1e30, lr_warmup=0, lr_cosine=False, grad_clip=None, ckpt_every=1, max_steps=5),
              RandomLatents(), tmp_path, progress=False)
    assert [p.name for p in checkpoints_of(tmp_path)] == ["0000001.pt"]
    state = torch.load(checkpoints_of(tmp_path)[-1], weights_only=True)
    assert all(torch.isfinite(v).all() for v in list(state["model"].values()) + list(state["ema"].values()))
    load_checkpoint(create_model("DyDiT-Mini/2", input_size=8), checkpoints_of(tmp_path)[-1])


def test_too_many_classes_in_the_data_is_refused(tmp_path):
    data = RandomLatents()
    data.num_classes = 11
    with pytest.raises(TrainError, match="11 classes"):
        train(tiny(), data, tmp_path)


def test_training_does_not_touch_the_callers_rng(tmp_path):
    """train() leaves the global RNG alone (all its randomness derives from (seed, step))."""
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    train(tiny(max_steps=1), RandomLatents(), tmp_path, progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("routers, frozen, learning", [("width", "token_selection", "attn_rate"),
                                                       ("token", "attn_rate", "token_selection")])
def test_the_ablation_freezes_the_other_routers_at_keep_everything(routers, frozen, learning, tmp_path):
    """TDW only / SDT only: the frozen routers end as they began (keep all); the others learn."""
    start = create_model("DyDiT-Mini/2", input_size=8).state_dict()
    result = train(tiny(routers=routers, max_steps=3), RandomLatents(), tmp_path, progress=False)
    after = result.model.state_dict()
    for name in start:
        if f".{frozen}." in name:
            assert torch.equal(after[name], start[name]), name
    assert any(not torch.equal(after[n], start[n]) for n in start if f".{learning}." in n)


def test_the_ablation_needs_a_dydit(tmp_path):
    with pytest.raises(TrainError, match="routers='width' is a DyDiT ablation"):
        train(tiny(model="DiT-Mini/2", routers="width"), RandomLatents(), tmp_path)
    with pytest.raises(TrainError, match="bad routers"):
        train(tiny(routers="heads"), RandomLatents(), tmp_path)


def test_update_ema_copies_the_named_parameters_and_averages_the_rest():
    model, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    update_ema(ema, model, 0.9, copied=frozenset({"bias"}))
    assert torch.equal(ema.bias, model.bias)
    torch.testing.assert_close(ema.weight, 0.9 * before["weight"] + 0.1 * model.weight)


def test_without_ema_routers_the_ema_carries_the_raw_routers(tmp_path):
    """TrainConfig.ema_routers=False: the EMA model's routers are the trained model's, its other weights averaged."""
    result = train(tiny(ema_routers=False, max_steps=3), RandomLatents(), tmp_path, progress=False)
    model, ema = result.model.state_dict(), result.ema.state_dict()
    routers = [k for k in model if is_router_key(k)]
    assert routers and all(torch.equal(model[k], ema[k]) for k in routers)
    assert not torch.equal(model["blocks.0.attn.qkv.weight"], ema["blocks.0.attn.qkv.weight"])
    with pytest.raises(TrainError, match="ema_routers is a DyDiT setting"):
        train(tiny(model="DiT-Mini/2", ema_routers=False), RandomLatents(), tmp_path / "dit", progress=False)


def test_token_router_bias_and_lr_scale(tmp_path):
    """The mini's SDT recipe: the bias is set when a run starts (a resume keeps the trained one), and the token
    routers' Adam steps are token_router_lr_scale times the others' (the first step moves each weight ~lr)."""
    recipe = dict(token_router_bias=5.0, token_router_lr_scale=10.0, lr_warmup=0, lr_cosine=False, grad_clip=None,
                  ckpt_every=1, flops_hold=0, flops_warmup=0)  # lambda_t = 0.5 from step 0: the FLOPs loss pulls
    start = create_model("DyDiT-Mini/2", input_size=8).state_dict()
    result = train(tiny(max_steps=2, **recipe), RandomLatents(), tmp_path / "run", stop_after=1, progress=False)
    after = result.model.state_dict()
    bias = "blocks.0.token_selection.mlp_head.2.bias"
    step = abs(float(after[bias]) - 5.0)
    assert 5e-3 < step < 2e-2  # Adam's first step: lr x 10 (1e-3 x 10), from 5.0, not from the init's 35
    width = "blocks.0.mlp_rate.router.bias"
    assert float((after[width] - start[width]).abs().max()) < 2e-3  # the other parameters: lr
    resumed = train(tiny(max_steps=2, **recipe), RandomLatents(), tmp_path / "run", resume=True, progress=False)
    assert abs(float(resumed.model.state_dict()[bias]) - float(after[bias])) < 2e-2  # not reset to 5.0
    with pytest.raises(TrainError, match="token_router_bias is a DyDiT setting"):
        train(tiny(model="DiT-Mini/2", token_router_bias=5.0), RandomLatents(), tmp_path / "dit")
    with pytest.raises(TrainError, match="token_router_lr_scale is a DyDiT setting"):
        train(tiny(model="DiT-Mini/2", token_router_lr_scale=10.0), RandomLatents(), tmp_path / "dit2")
    frozen = train(tiny(routers="width", max_steps=1, **recipe), RandomLatents(), tmp_path / "tdw", progress=False)
    assert frozen.step == 1  # TDW only: the token routers are frozen, the scale has nothing to scale
    with pytest.raises(TrainError, match="bad token_router_lr_scale"):
        train(tiny(token_router_lr_scale=0.0), RandomLatents(), tmp_path / "zero")


#################################################################################
#                       DyDiT++: flow matching, adapters                         #
#################################################################################

def test_flow_matching_trains_a_dysit_with_the_flops_loss(tmp_path):
    result = train(tiny(model="DySiT-Mini/2", objective="flow", max_steps=3), RandomLatents(), tmp_path,
                   progress=False)
    log = [__import__("json").loads(line) for line in (tmp_path / "log.jsonl").open()]
    assert result.step == 3 and all(r["loss"] > 0 and r["flops_loss"] >= 0 for r in log)
    with pytest.raises(ValueError, match="use a SiT"):  # a learned-sigma model has no velocity head
        train(tiny(model="DyDiT-Mini/2", objective="flow", max_steps=1), RandomLatents(), tmp_path / "bad",
              progress=False)


@pytest.mark.parametrize("adapter", ["td-lora", "lora"])
def test_an_adapter_run_keeps_the_base_and_saves_only_what_it_trains(adapter, tmp_path):
    from dydit.fileio import sha256_file
    from dydit.lora import unmerged_static_lora
    from dydit.checkpoints import load_trained
    base_path = tmp_path / "base.pt"
    torch.save(create_model("DyDiT-Mini/2", input_size=8).state_dict(), base_path)
    base = torch.load(base_path, weights_only=True)
    config = tiny(adapter=adapter, adapter_rank=2, adapter_experts=2, init_checkpoint=str(base_path), max_steps=3)
    result = train(config, RandomLatents(), tmp_path / "run", progress=False)
    for name, value in result.model.state_dict().items():  # frozen: the base's weights, bit for bit
        plain = name.replace(".base_layer.", ".").replace(".base.", ".").replace("t_embedder.embedder.",
                                                                                 "t_embedder.")
        if plain in base and "rate" not in name and "token_selection" not in name:
            assert torch.equal(value, base[plain]), name
    saved = torch.load(result.checkpoint, weights_only=True)
    assert saved["base_sha256"] == sha256_file(base_path)
    assert not any(k.endswith("attn.qkv.base.weight") or "base_layer" in k for k in saved["model"])
    loaded = load_trained(result.checkpoint, {"input_size": 8}, merge=False)
    merged = load_trained(result.checkpoint, {"input_size": 8})  # static LoRA merged into its base
    x, y, t = batch(loaded)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y), result.ema(x, t, y))
        torch.testing.assert_close(merged(x, t, y), result.ema(x, t, y), rtol=1e-5, atol=1e-6)
    assert not unmerged_static_lora(merged)
    assert bool(unmerged_static_lora(loaded)) == (adapter == "lora")
    torch.save(create_model("DyDiT-Mini/2", input_size=8).state_dict() | {"pos_embed": base["pos_embed"] + 1},
               base_path)
    with pytest.raises(TrainError, match="sha256"):
        load_trained(result.checkpoint, {"input_size": 8})


def test_load_trained_gives_the_ema_or_the_raw_weights(tmp_path):
    from dydit.checkpoints import adapter_run_model, load_trained
    result = train(tiny(), RandomLatents(), tmp_path / "run", progress=False)
    ema, raw = (load_trained(result.checkpoint, {"input_size": 8}, use_ema=flag) for flag in (True, False))
    x, y, t = batch(ema)
    with torch.no_grad():
        assert torch.equal(ema(x, t, y), result.ema(x, t, y))
        assert torch.equal(raw(x, t, y), result.model(x, t, y))
        assert not torch.equal(ema(x, t, y), raw(x, t, y))
    assert adapter_run_model(result.checkpoint) is None and adapter_run_model(tmp_path / "nowhere.pt") is None


def test_an_adapter_run_resumes_bit_identically(tmp_path):
    base_path = tmp_path / "base.pt"
    torch.save(create_model("DyDiT-Mini/2", input_size=8).state_dict(), base_path)
    config = dict(adapter="td-lora", adapter_rank=2, adapter_experts=2, init_checkpoint=str(base_path))
    whole = train(tiny(**config), RandomLatents(), tmp_path / "whole", progress=False)
    train(tiny(**config), RandomLatents(), tmp_path / "cut", stop_after=2, progress=False)
    resumed = train(tiny(**config), RandomLatents(), tmp_path / "cut", resume=True, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(tensors(whole).values(), tensors(resumed).values()))


def test_an_adapter_needs_its_base():
    with pytest.raises(TrainError, match="give init_checkpoint"):
        tiny(adapter="td-lora").validate()


def test_a_checkpoint_older_than_a_config_field_resumes_as_its_default():
    import dataclasses

    from dydit.train import config_differences
    saved = dataclasses.asdict(TrainConfig())
    del saved["router_noise_anneal"]  # written before the field existed: trained as its default does
    assert config_differences(saved, TrainConfig()) == []
    assert config_differences(saved, TrainConfig(router_noise_anneal=0.2)) == [
        "router_noise_anneal 0.0 (saved) vs 0.2 (now)"]
