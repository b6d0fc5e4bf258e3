"""Flow matching (dydit/flow.py) against SiT's formulas, and its samplers on fields with known solutions."""
import pytest
import torch

from dydit import flow
from dydit.sampling import noise_for


def test_interpolant_velocity_and_loss_are_sits():
    """SiT's ICPlan: alpha_t = t, sigma_t = 1 - t, u_t = d_alpha x1 + d_sigma x0 = x1 - x0; loss mean_flat."""
    g = torch.Generator().manual_seed(0)
    x1, x0 = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    t = torch.tensor([0.0, 0.25, 1.0])
    xt = flow.interpolate(x1, x0, t)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], x1[2])
    assert torch.allclose(xt[1], 0.25 * x1[1] + 0.75 * x0[1])
    assert torch.equal(flow.velocity_target(x1, x0), x1 - x0)
    v_hat = torch.randn(3, 4, 2, 2, generator=g)
    expected = torch.stack([((v_hat[i] - (x1[i] - x0[i])) ** 2).mean() for i in range(3)])
    assert torch.allclose(flow.flow_loss(v_hat, x1, x0), expected)
    t = flow.sample_times(10_000, torch.Generator().manual_seed(1))
    assert 0.0 <= float(t.min()) and float(t.max()) < 1.0 and abs(float(t.mean()) - 0.5) < 0.01
    t = flow.sample_times(8, torch.Generator().manual_seed(1), stratified=True)
    assert all(i % 4 <= 4 * float(v) < i % 4 + 1 for i, v in enumerate(t))
    objective = flow.FlowMatching()
    assert torch.equal(objective.q_sample(x1, torch.full((3,), 0.25), x0), flow.interpolate(x1, x0, torch.full((3,), 0.25)))
    assert torch.allclose(objective.losses_from_output(v_hat, x1, None, None, x0)["loss"], expected)
    with pytest.raises(ValueError, match="SiT"):
        objective.losses_from_output(torch.cat([v_hat, v_hat], 1), x1, None, None, x0)


def test_score_from_velocity_is_sits_and_exact_for_a_gaussian():
    """Data x1 = 0: p_t = N(0, (1-t)^2), score -x / (1-t)^2; the exact velocity there is -x / (1-t)."""
    x, t = torch.randn(5, 3), torch.full((5,), 0.3)
    v = -x / 0.7
    assert torch.allclose(flow.score_from_velocity(v, x, t), -x / 0.7 ** 2)


@pytest.mark.parametrize("sampler", ["flow-euler", "flow-heun"])
def test_ode_samplers_integrate_a_constant_field_exactly(sampler):
    """v(x, t) = c: x(1) = x(0) + c whatever the grid, for Euler and Heun alike."""
    c = torch.randn(2, 4, 3, 3)
    noise = torch.randn(2, 4, 3, 3)
    out = flow.sample_flow(lambda x, t, y: c.clone(), sampler, noise, torch.zeros(2, dtype=torch.long),
                           steps=7, cfg_scale=1.0)
    assert torch.allclose(out, noise + c, atol=1e-5)


def test_heun_integrates_a_field_linear_in_t_exactly_and_euler_does_not():
    """v(x, t) = a t: x(1) = x(0) + a / 2 (the trapezoid rule is exact for it)."""
    a = torch.randn(1, 4, 2, 2)
    noise = torch.randn(1, 4, 2, 2)

    def field(x, t, y):
        return a * t.view(-1, 1, 1, 1)
    heun = flow.sample_flow(field, "flow-heun", noise, torch.zeros(1, dtype=torch.long), steps=5, cfg_scale=1.0)
    assert torch.allclose(heun, noise + a / 2, atol=1e-5)
    euler = flow.sample_flow(field, "flow-euler", noise, torch.zeros(1, dtype=torch.long), steps=5, cfg_scale=1.0)
    assert not torch.allclose(euler, noise + a / 2, atol=1e-3)


def test_the_model_sees_t_from_noise_to_data():
    seen = []

    def record(x, t, y):
        seen.append(float(t[0]))
        return torch.zeros_like(x)
    flow.sample_flow(record, "flow-euler", torch.zeros(1, 4, 2, 2), torch.zeros(1, dtype=torch.long), steps=4,
                     cfg_scale=1.0)
    assert seen == pytest.approx(flow.flow_timesteps("flow-euler", 4)) and seen[0] == 0.0 and seen[-1] < 1.0
    assert all(a < b for a, b in zip(seen, seen[1:]))


def test_sde_matches_sits_euler_maruyama_and_is_reproducible_per_image():
    """For x1 = 0 data the exact velocity is -x / (1 - t); the SDE's steps are SiT's, noise per (seed, index)."""
    def velocity(x, t, y):
        return -x / (1 - t.view(-1, 1, 1, 1))
    noise, gens = noise_for([3, 4], 7, (4, 2, 2))
    labels = torch.zeros(2, dtype=torch.long)
    a = flow.sample_flow(velocity, "flow-sde", noise, labels, steps=20, generators=gens, cfg_scale=1.0)
    noise2, gens2 = noise_for([4], 7, (4, 2, 2))
    b = flow.sample_flow(velocity, "flow-sde", noise2, labels[:1], steps=20, generators=gens2, cfg_scale=1.0)
    assert torch.equal(a[1:], b)  # image 4 alone equals image 4 in a batch
    # by hand: SiT's sde.sample + the "Mean" last step
    x, g = noise[1:].clone(), noise_for([4], 7, (4, 2, 2))[1][0]
    times = torch.linspace(0, 0.96, 20)
    dt = float(times[1] - times[0])
    for t in times[:-1]:
        t = float(t)
        v = -x / (1 - t)
        drift = v + (1 - t) * (t * v - x) / (1 - t)
        x = x + drift * dt + (2 * (1 - t)) ** 0.5 * torch.randn((1, 4, 2, 2), generator=g) * dt ** 0.5
    t = 0.96
    v = -x / (1 - t)
    x = x + (v + (1 - t) * (t * v - x) / (1 - t)) * 0.04
    assert torch.allclose(b, x, atol=1e-5)


def test_guidance_combines_conditional_and_unconditional_velocities():
    def model(x, t, y):
        return torch.where((y == 10).view(-1, 1, 1, 1), torch.zeros_like(x), torch.ones_like(x))
    out = flow.guided_velocity(model, torch.zeros(2, 4, 2, 2), torch.zeros(2), torch.tensor([1, 2]), 4.0,
                               guided_channels=None, null_class=10)
    assert torch.allclose(out, torch.full_like(out, 4.0))  # uncond 0 + 4 (cond 1 - uncond 0)
