"""The mini's measurements on tiny random models: what the records say (FLOPs ratio, widths per step,
MLP FLOPs per patch) must match what the model computed. Seconds each; no training."""
import numpy as np
import pytest
import torch

from bench.mini import evaluate
from dydit import sampling
from dydit.sampling import SamplerSpec
from dydit.fast import FastDyDiT
from dydit.flops import analytic_macs, dit_macs, dynamic_macs
from dydit.models import randomize_
from dydit.registry import create_model

FEW = SamplerSpec(name="ddim", steps=4, cfg_scale=2.0, num_samples=6, batch_size=3, seed=0, guided_channels=None)


def dydit(token_bias=35.0, width_bias=15.0, seed=0):
    m = randomize_(create_model("DyDiT-Mini/2", input_size=8), seed=seed, std=0.05).eval()
    for block in m.blocks:
        for router in (block.attn_rate.router, block.mlp_rate.router):
            router.weight.data.zero_()
            router.bias.data.fill_(width_bias)
        block.token_selection.mlp_head[2].weight.data.zero_()
        block.token_selection.mlp_head[2].bias.data.fill_(token_bias)
    return m


def test_all_on_dydit_costs_the_dit_plus_its_routers_and_dit_costs_one():
    m = dydit()
    rec = evaluate.Recorder(m)
    images, labels, pixels = evaluate.sample_digits(m, FEW, rec)
    assert images.shape == (6, 8, 8, 1) and images.dtype == np.uint8 and labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert len(rec.calls) == 2 * FEW.steps  # two batches of 3, one call per step each
    assert evaluate.flops_ratio(m, rec.calls) == pytest.approx(analytic_macs(m) / dit_macs(m), rel=1e-9)
    dit = randomize_(create_model("DiT-Mini/2", input_size=8), seed=0, std=0.05).eval()
    dit_rec = evaluate.Recorder(dit)
    evaluate.sample_digits(dit, FEW, dit_rec)
    assert evaluate.flops_ratio(dit, dit_rec.calls) == 1.0


def test_no_tokens_and_one_group_cost_only_attention_and_a_share_of_nothing():
    m = dydit(token_bias=-35.0, width_bias=-15.0)  # head 0 and group 0 only; no token reaches an MLP
    rec = evaluate.Recorder(m)
    _, _, pixels = evaluate.sample_digits(m, FEW, rec)
    per_patch = evaluate.patch_mlp_flops(m, rec.calls, len(pixels))
    assert per_patch.shape == (6, 16) and float(per_patch.abs().max()) == 0.0
    t, heads, groups = evaluate.widths_per_step(m, rec.calls)
    assert sorted(t.tolist()) == sorted(set(t.tolist())) and len(t) == FEW.steps
    assert np.allclose(heads, 1 / 4) and np.allclose(groups, 1 / 4)
    assert evaluate.flops_ratio(m, rec.calls) < 0.35


def test_width_that_shrinks_with_t_gives_a_negative_late_minus_early():
    m = dydit()
    for block in m.blocks:  # logits fall with t: the t-embedding's sin/cos code t, so fit a router to it
        t = torch.linspace(0, 999, 64)
        emb = m.t_embedder(t).detach()
        target = (500.0 - t)[:, None].expand(-1, 3) / 50.0  # on at small t, off at large t
        solution = torch.linalg.lstsq(torch.cat([emb, torch.ones(64, 1)], 1), target).solution
        for router in (block.attn_rate.router, block.mlp_rate.router):
            router.weight.data.copy_(solution[:-1].T)
            router.bias.data.copy_(solution[-1])
    rec = evaluate.Recorder(m)
    evaluate.sample_digits(m, SamplerSpec(name="ddim", steps=10, cfg_scale=2.0, num_samples=2, batch_size=2, guided_channels=None), rec)
    assert evaluate.width_late_minus_early(m, rec.calls) < -0.5


def test_ink_over_background_follows_where_the_tokens_run():
    m = dydit()
    rec = evaluate.Recorder(m)
    _, _, pixels = evaluate.sample_digits(m, FEW, rec)
    pixels = -torch.ones_like(pixels)
    pixels[:, :, :4, :] = 1.0  # the top half is ink (patches of rows 0-1 of the 4 x 4 grid)
    for _, _, record in rec.calls:  # the MLP ran on the top-half tokens only
        for masks in record:
            masks.tokens[:, 8:] = 0
    assert evaluate.ink_over_background(m, rec.calls, pixels) > 1e6  # background got nothing
    for _, _, record in rec.calls:
        for masks in record:
            masks.tokens[:] = 1
    assert evaluate.ink_over_background(m, rec.calls, pixels) == pytest.approx(1.0)


def test_speed_times_the_paths_on_the_sampled_runs_inputs_and_reports_the_records_flops():
    m = dydit(token_bias=-35.0)  # no token runs its MLP: the fast path is cheaper than the DiT
    static = create_model("DiT-Mini/2", input_size=8).eval()
    spec = SamplerSpec(name="ddim", steps=8, cfg_scale=2.0, num_samples=2, batch_size=2, seed=0, guided_channels=None)
    times = evaluate.timed_timesteps(spec, 2)
    assert len(times) == 2
    calls = []
    inputs = evaluate.trajectory_inputs(lambda x, t, y: calls.append(int(t[0])) or m(x, t, y), spec,
                                        (m.in_channels, m.input_size, m.input_size), torch.tensor([0, 1]), 10, times)
    # the first image's noise at the first step, and a later step's input is the run's own x_t, not fresh noise
    assert [int(t[0]) for _, t, _ in inputs] == [int(t) for t in times] and inputs[0][2].tolist() == [0, 1, 10, 10]
    noise, _ = sampling.noise_for(range(2), spec.seed, (m.in_channels, m.input_size, m.input_size))
    assert torch.equal(inputs[0][0][:2], noise) and not torch.allclose(inputs[1][0][:2], noise)
    schedule = [int(t) for t in sampling.sampler_timesteps("ddim", 8)]
    assert calls == schedule[: schedule.index(int(times[-1]))]  # stopped at the last timed step
    fast = FastDyDiT(m).prepare([float(t) for t in times])
    seen = []
    out = evaluate.speed(spec, inputs, {"dit": static, "fast": fast, "masked": m},
                         lambda inputs: seen.append([int(t[0]) for _, t, _ in inputs]) or evaluate.recorded_flops_ratio(
                             fast, inputs, lambda r: dynamic_macs(m, r), dit_macs(m)), repeats=2)
    assert seen == [[int(t) for t in times]] and out["calls_timed"] == 2 and out["batch"] == 4
    assert len(out["speedup_rounds"]) == 2 and {"dit", "fast", "masked"} <= set(out)
    assert 0 < out["flops_ratio_timed"] < 1
    with pytest.raises(ValueError, match="never called the model"):
        evaluate.trajectory_inputs(m, spec, (m.in_channels, m.input_size, m.input_size), torch.tensor([0, 1]), 10, [3])
