"""DiT's training loss (dydit/diffusion.py) against its formulas computed by hand in float64 numpy."""
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from dydit.diffusion import GaussianDiffusion, sample_timesteps
from dydit.train_config import TrainConfig, TrainError

BETAS = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
ABAR = np.cumprod(1.0 - BETAS)
ABAR_PREV = np.append(1.0, ABAR[:-1])


def fixed_batch(t):
    """Fixed x_0 in [-1, 1] (some pixels at the ends, as quantised images), eps, model eps and var values."""
    g = torch.Generator().manual_seed(1)
    n = len(t)
    x0 = torch.rand(n, 2, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    x0[:, 0, 0, 0], x0[:, 0, 0, 1] = -1.0, 1.0
    noise = torch.randn(n, 2, 4, 4, generator=g, dtype=torch.float64)
    eps_hat = noise + 0.3 * torch.randn(n, 2, 4, 4, generator=g, dtype=torch.float64)
    var_values = torch.rand(n, 2, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    return x0, noise, eps_hat, var_values


def by_hand(x0, noise, eps_hat, v, t):
    """ε-MSE and the VB term (bits) for one sample, straight from the DDPM / improved-DDPM formulas."""
    x0, noise, eps_hat, v = (a.numpy() for a in (x0, noise, eps_hat, v))
    a, ap, b = ABAR[t], ABAR_PREV[t], BETAS[t]
    x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * noise
    mse = np.mean((noise - eps_hat) ** 2)
    post_var = lambda s: BETAS[s] * (1 - ABAR_PREV[s]) / (1 - ABAR[s])  # noqa: E731
    post_logvar = math.log(post_var(1) if t == 0 else post_var(t))  # clipped at t = 0
    coef1, coef2 = b * math.sqrt(ap) / (1 - a), (1 - ap) * math.sqrt(1 - b) / (1 - a)
    true_mean = coef1 * x0 + coef2 * x_t
    x0_hat = (x_t - math.sqrt(1 - a) * eps_hat) / math.sqrt(a)
    mean = coef1 * x0_hat + coef2 * x_t
    frac = (v + 1) / 2
    logvar = frac * math.log(b) + (1 - frac) * post_logvar
    if t > 0:
        kl = 0.5 * (-1 + logvar - post_logvar + np.exp(post_logvar - logvar)
                    + (true_mean - mean) ** 2 * np.exp(-logvar))
        return mse, np.mean(kl) / math.log(2)
    cdf = lambda z: 0.5 * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))  # noqa: E731
    std = np.exp(0.5 * logvar)
    plus, minus = cdf((x0 - mean + 1 / 255) / std), cdf((x0 - mean - 1 / 255) / std)
    prob = np.where(x0 < -0.999, plus, np.where(x0 > 0.999, 1 - minus, plus - minus))
    return mse, -np.mean(np.log(np.maximum(prob, 1e-12))) / math.log(2)


def test_losses_match_the_formulas_by_hand_including_the_decoder_nll_at_t0():
    t = torch.tensor([0, 1, 17, 500, 999])
    x0, noise, eps_hat, v = fixed_batch(t)
    diffusion = GaussianDiffusion()
    x_t = diffusion.q_sample(x0, t, noise)
    got = diffusion.losses_from_output(torch.cat([eps_hat, v], dim=1), x0, x_t, t, noise)
    for i, step in enumerate(t.tolist()):
        mse, vb = by_hand(x0[i], noise[i], eps_hat[i], v[i], step)
        np.testing.assert_allclose(got["mse"][i].item(), mse, rtol=1e-6)
        np.testing.assert_allclose(got["vb"][i].item(), vb, rtol=1e-4)
    torch.testing.assert_close(got["loss"], got["mse"] + got["vb"])


def test_kl_term_equals_torch_distributions_kl():
    """Cross-check of the KL with torch.distributions (x_0 away from the quantisation ends)."""
    t = torch.tensor([3, 250, 700])
    x0, noise, eps_hat, v = fixed_batch(t)
    diffusion = GaussianDiffusion()
    x_t = diffusion.q_sample(x0, t, noise)
    vb = diffusion.vb_terms_bpd(eps_hat, v, x0, x_t, t)
    true_mean, true_logvar = diffusion.q_posterior(x0, x_t, t)
    mean, logvar = diffusion.p_mean_log_variance(eps_hat, v, x_t, t)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(true_mean, (0.5 * true_logvar).exp()),
                                           torch.distributions.Normal(mean, (0.5 * logvar).exp()))
    torch.testing.assert_close(vb, kl.mean(dim=(1, 2, 3)) / math.log(2))


def test_q_sample_matches_diffusers_add_noise():
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    t = torch.tensor([0, 10, 999])
    x0, noise, _, _ = fixed_batch(t)
    x0, noise = x0.float(), noise.float()
    torch.testing.assert_close(GaussianDiffusion().q_sample(x0, t, noise), scheduler.add_noise(x0, noise, t))


def test_mse_trains_the_mean_and_vb_only_the_variance():
    t = torch.tensor([0, 400])
    x0, noise, eps_hat, v = fixed_batch(t)
    eps_hat.requires_grad_(True)
    v.requires_grad_(True)
    diffusion = GaussianDiffusion()
    losses = diffusion.losses_from_output(torch.cat([eps_hat, v], 1), x0, diffusion.q_sample(x0, t, noise), t, noise)
    (eps_grad,) = torch.autograd.grad(losses["vb"].sum(), [eps_hat], allow_unused=True, retain_graph=True)
    assert eps_grad is None or not eps_grad.any()
    (v_grad,) = torch.autograd.grad(losses["mse"].sum(), [v], allow_unused=True)
    assert v_grad is None or not v_grad.any()


def test_training_losses_calls_the_model_on_x_t():
    t = torch.tensor([5, 900])
    x0, noise, eps_hat, v = fixed_batch(t)
    diffusion = GaussianDiffusion()
    seen = {}

    def model(x_t, t_in, y):
        seen.update(x_t=x_t, y=y)
        return torch.cat([eps_hat, v], 1)
    losses = diffusion.training_losses(model, x0, t, noise, y=torch.tensor([1, 2]))
    torch.testing.assert_close(seen["x_t"], diffusion.q_sample(x0, t, noise))
    assert losses["loss"].shape == (2,)


def test_stratified_timesteps_cycle_through_the_four_quarters():
    t = sample_timesteps(400, torch.Generator().manual_seed(0), stratified=True)
    quarter = torch.div(t, 250, rounding_mode="floor")
    assert quarter.tolist() == [i % 4 for i in range(400)]
    uniform = sample_timesteps(4000, torch.Generator().manual_seed(0))
    assert uniform.min() >= 0 and uniform.max() <= 999 and len(uniform.unique()) > 900


def test_min_snr_weights_the_eps_loss_at_the_clean_steps_only():
    plain, weighted = GaussianDiffusion(), GaussianDiffusion(min_snr_gamma=5.0)
    snr = plain.alphas_cumprod / (1 - plain.alphas_cumprod)
    assert np.allclose(weighted.mse_weight, np.minimum(snr, 5.0) / snr) and weighted.mse_weight[-1] == 1.0
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 1, 4, 4, generator=g), torch.randn(4, 1, 4, 4, generator=g)
    out = torch.randn(4, 2, 4, 4, generator=g)
    t = torch.tensor([0, 50, 500, 999])
    a = plain.losses_from_output(out, x0, plain.q_sample(x0, t, noise), t, noise)
    b = weighted.losses_from_output(out, x0, weighted.q_sample(x0, t, noise), t, noise)
    assert torch.allclose(b["mse"], a["mse"] * torch.from_numpy(weighted.mse_weight[t.numpy()]).float())
    assert torch.equal(a["vb"], b["vb"]) and torch.equal(a["mse"][2:], b["mse"][2:])  # noisy steps: unchanged
    with pytest.raises(TrainError, match="min_snr_gamma weights the diffusion objective"):
        TrainConfig(model="SiT-Mini/2", objective="flow", min_snr_gamma=5.0).validate()
