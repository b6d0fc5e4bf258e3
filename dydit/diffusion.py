"""DiT's training objective: Gaussian diffusion with epsilon prediction and a learned-range sigma.

The formulas of facebookresearch/DiT diffusion/gaussian_diffusion.py (from OpenAI's improved-diffusion)
with learn_sigma=True and loss_type MSE: loss = mse(eps) + vb, where vb is the variational-bound term in
bits (KL of the true posterior to the model's Gaussian, the decoder NLL at t = 0) computed on a detached
eps so that it trains only the variance. Schedule: linear betas 1e-4..0.02 over 1000 steps (the constants
below, which dydit/sampling.py configures diffusers' schedulers with). Schedule arrays are float64, taken
per timestep as float32 (DiT's extraction). Only what training needs is here; sampling is diffusers'
(dydit/sampling.py).
"""
import math

import numpy as np
import torch

# DiT's training schedule (facebookresearch/DiT diffusion/__init__.py: linear, 1000 steps)
NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02


def mean_flat(x):
    """Mean over every dimension but the first: (N, ...) -> (N,)."""
    return x.mean(dim=list(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x):
    """The tanh approximation of the standard normal CDF (as ADM and DiT)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """log p(x) of data in [-1, 1] quantised to 256 bins under N(means, e^(2 log_scales)), in nats."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


#################################################################################
#                              Gaussian diffusion                               #
#################################################################################

class GaussianDiffusion:
    """q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0) and DiT's training losses (learned sigma, MSE)."""

    def __init__(self, num_timesteps=NUM_TRAIN_TIMESTEPS, beta_start=BETA_START, beta_end=BETA_END,
                 min_snr_gamma=None):
        """min_snr_gamma: weight the eps MSE by min(SNR_t, gamma) / SNR_t (Hang et al. 2023, Min-SNR); None:
        unweighted, as DiT. The weight is 1 at the noisy steps, where the eps loss barely sees x_0, and below 1
        at the clean ones, whose large eps errors would otherwise dominate the gradient."""
        betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
        alphas_cumprod = np.cumprod(1.0 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        self.num_timesteps = num_timesteps
        snr = alphas_cumprod / (1.0 - alphas_cumprod)
        self.mse_weight = np.ones_like(snr) if min_snr_gamma is None else np.minimum(snr, min_snr_gamma) / snr
        self.betas = betas
        self.alphas_cumprod = alphas_cumprod
        self.sqrt_alphas_cumprod = np.sqrt(alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / alphas_cumprod - 1.0)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # the posterior variance is 0 at t = 0: its log is clipped to the value at t = 1
        self.posterior_log_variance_clipped = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod)
        self.log_betas = np.log(betas)

    @staticmethod
    def _at(arr, t, x):
        """arr[t] as float32 on x's device, shaped (N, 1, ..., 1) to broadcast against x."""
        values = torch.from_numpy(arr).to(t.device)[t].float()
        return values.reshape(-1, *([1] * (x.ndim - 1)))

    def q_sample(self, x_start, t, noise):
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        return (self._at(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + self._at(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior(self, x_start, x_t, t):
        """Mean and clipped log variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at(self.posterior_mean_coef1, t, x_t) * x_start + self._at(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self._at(self.posterior_log_variance_clipped, t, x_t)

    def p_mean_log_variance(self, eps, var_values, x_t, t):
        """The model's Gaussian p(x_{t-1} | x_t): mean from eps (x_0 unclipped), log variance
        interpolated between the posterior's (var_values = -1) and beta_t (var_values = +1)."""
        min_log = self._at(self.posterior_log_variance_clipped, t, x_t)
        max_log = self._at(self.log_betas, t, x_t)
        frac = (var_values + 1) / 2
        log_variance = frac * max_log + (1 - frac) * min_log
        pred_xstart = self._at(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t \
            - self._at(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        mean, _ = self.q_posterior(pred_xstart, x_t, t)
        return mean, log_variance

    def vb_terms_bpd(self, eps, var_values, x_start, x_t, t):
        """(N,) variational-bound term in bits per dim: the decoder NLL at t = 0, else the KL."""
        true_mean, true_log_variance = self.q_posterior(x_start, x_t, t)
        mean, log_variance = self.p_mean_log_variance(eps, var_values, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance)) / math.log(2.0)
        decoder_nll = -mean_flat(discretized_gaussian_log_likelihood(x_start, mean, 0.5 * log_variance)) / math.log(2.0)
        return torch.where(t == 0, decoder_nll, kl)

    def losses_from_output(self, model_output, x_start, x_t, t, noise):
        """{"mse", "vb", "loss"}, each (N,), from a learned-sigma output (N, 2C, H, W), or (N, F, 2C, H, W) for
        clips (dydit.latte's layout: channels after the frames)."""
        channels = channel_dim(x_start)
        eps, var_values = torch.split(model_output, x_start.shape[channels], dim=channels)
        # the bound trains the variance only: the mean it sees is detached
        vb = self.vb_terms_bpd(eps.detach(), var_values, x_start, x_t, t)
        mse = mean_flat((noise - eps) ** 2) * self._at(self.mse_weight, t, t).reshape(-1)
        return {"mse": mse, "vb": vb, "loss": mse + vb}

    def training_losses(self, model_fn, x_start, t, noise, **model_kwargs):
        """DiT's GaussianDiffusion.training_losses (learn_sigma=True, MSE): per-sample losses (N,)."""
        x_t = self.q_sample(x_start, t, noise)
        return self.losses_from_output(model_fn(x_t, t, **model_kwargs), x_start, x_t, t, noise)


def channel_dim(x) -> int:
    """Where the channels are: 1 for images (N, C, H, W), 2 for clips (N, F, C, H, W) as Latte lays them out."""
    return 2 if x.ndim == 5 else 1


#################################################################################
#                                   Timesteps                                   #
#################################################################################

def sample_timesteps(batch, generator, stratified=False, num_timesteps=NUM_TRAIN_TIMESTEPS, device=None):
    """(batch,) training timesteps: uniform over [0, T), or stratified as the official DyDiT code, sample i
    drawn uniformly from quarter i % 4 of [0, T) (i is the index in the *global* batch here)."""
    if not stratified:
        return torch.randint(0, num_timesteps, (batch,), generator=generator, device=device)
    quarter = num_timesteps // 4
    lower = (torch.arange(batch, device=device) % 4) * quarter
    return torch.randint(0, quarter, (batch,), generator=generator, device=device) + lower
