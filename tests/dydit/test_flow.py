"""Flow matching (dydit/flow.py) against SiT's formulas; its samplers are tested in test_sampling.py."""
import pytest
import torch

from dydit import flow


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
