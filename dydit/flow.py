"""Flow matching as SiT trains and samples it (willisma/SiT, transport/): the objective and the samplers.

SiT's linear interpolant (its ICPlan) joins noise and data over t in [0, 1], t = 0 noise, t = 1 data:
    x_t = t * x1 + (1 - t) * eps,    velocity  dx_t/dt = x1 - eps,
the model predicts the velocity, and the loss is mean((v_hat - (x1 - eps))^2) per sample, t ~ U[0, 1)
(SiT's train_eps = 0 for a velocity model). The timestep embedding is DiT's, applied to the raw t (no
x1000); SiT-XL/2 = DiT-XL/2 without learned sigma (dydit.models' "SiT-*").

Samplers, all with classifier-free guidance as SiT does it (dydit.models.cfg_forward on the velocity:
the first 3 channels by default, like DiT):
- ODE: diffusers' FlowMatchEulerDiscreteScheduler / FlowMatchHeunDiscreteScheduler. Their sigma is
  1 - t and their model output is eps - x1 (= -our velocity); we convert and pass the model t = 1 - sigma.
- SDE: SiT's Euler-Maruyama sampler (its default for FID: 250 steps, diffusion form "sigma",
  w(t) = 1 - t, last step "Mean" of size 0.04). No library has it; it is written here after SiT's
  transport.Sampler.sample_sde: drift = v + w(t) * score(x, t), score from the velocity
  (t v - x) / (1 - t), steps over linspace(0, 1 - 0.04, N) and a final noiseless drift step to t = 1.
"""
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from dydit.models import cfg_forward

# sampler name -> default number of steps (SiT: the SDE sampler's 250 for FID; ODE: 50 Euler / Heun steps)
FLOW_SAMPLERS = {"flow-euler": 50, "flow-heun": 50, "flow-sde": 250}
SDE_LAST_STEP = 0.04  # SiT's default last_step_size: the stride of 250 steps over [0, 1]
SDE_DIFFUSION_NORM = 1.0  # SiT's default diffusion_norm


#################################################################################
#                                  Objective                                    #
#################################################################################

def _like(t, x):
    """t (N,) reshaped to broadcast over x (N, ...)."""
    return t.view(-1, *([1] * (x.dim() - 1)))


def interpolate(x1, noise, t):
    """x_t = t x1 + (1 - t) eps: SiT's linear path, t (N,) in [0, 1]."""
    t = _like(t, x1)
    return t * x1 + (1 - t) * noise


def velocity_target(x1, noise):
    """dx_t/dt on the linear path: x1 - eps (the same at every t)."""
    return x1 - noise


def flow_loss(velocity, x1, noise):
    """Per-sample loss (N,): mean over every other dimension of (v_hat - (x1 - eps))^2 (SiT's mean_flat)."""
    return (velocity - velocity_target(x1, noise)).pow(2).flatten(1).mean(1)


def sample_times(batch, generator, stratified=False, device=None):
    """(batch,) training times in [0, 1): uniform, or stratified as DyDiT's timesteps are (sample i from
    quarter i % 4 of [0, 1); i is the index in the global batch)."""
    u = torch.rand(batch, generator=generator, device=device)
    if not stratified:
        return u
    return ((torch.arange(batch, device=device) % 4) + u) / 4


class FlowMatching:
    """The flow-matching objective behind the trainer's interface (dydit.diffusion.GaussianDiffusion's):
    q_sample draws x_t, losses_from_output gives the per-sample loss, sample_times the training times."""

    def q_sample(self, x_start, t, noise):
        return interpolate(x_start, noise, t)

    def losses_from_output(self, model_output, x_start, x_t, t, noise):
        """{"loss": (N,)}: the velocity MSE on the data channels (a model with extra output channels, e.g. a
        learned sigma, would need its own objective: SiT has none)."""
        if model_output.shape[1] != x_start.shape[1]:
            raise ValueError(f"flow matching predicts a velocity of {x_start.shape[1]} channels; the model "
                             f"outputs {model_output.shape[1]} (use a SiT-* model: no learned sigma)")
        return {"loss": flow_loss(model_output, x_start, noise)}

    @staticmethod
    def sample_times(batch, generator, stratified=False, device=None):
        return sample_times(batch, generator, stratified, device)


def score_from_velocity(velocity, x, t):
    """grad log p_t(x) from the velocity on the linear path: (t v - x) / (1 - t) (SiT's get_score_from_velocity)."""
    t = _like(t, x)
    return (t * velocity - x) / (1 - t)


#################################################################################
#                                   Samplers                                    #
#################################################################################

def guided_velocity(model_fn, x, t, y, cfg_scale, guided_channels=3, null_class=1000):
    """The model's velocity at x (B, ...) and times t (B,), guided by labels y (B,) in one batch of 2B."""
    if cfg_scale == 1.0:
        return model_fn(x, t, y)
    batch = torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_class)])
    return cfg_forward(model_fn, *batch, cfg_scale, guided_channels)[: len(x)]


def make_flow_scheduler(sampler, steps=None):
    """A diffusers flow-matching ODE scheduler with its sigmas set (sigma = 1 - t: 1 is noise)."""
    if sampler == "flow-euler":
        scheduler = FlowMatchEulerDiscreteScheduler()
    elif sampler == "flow-heun":
        scheduler = FlowMatchHeunDiscreteScheduler()
    else:
        raise ValueError(f"{sampler!r} is not an ODE flow sampler (flow-euler, flow-heun)")
    scheduler.set_timesteps(steps or FLOW_SAMPLERS[sampler])
    return scheduler


def sde_times(steps=None):
    """The SDE sampler's times: linspace(0, 1 - last step, steps); Euler-Maruyama runs from each but the last,
    and the last step goes from 1 - 0.04 to 1 without noise (SiT's sample_sde: `steps` model calls)."""
    return torch.linspace(0.0, 1.0 - SDE_LAST_STEP, steps or FLOW_SAMPLERS["flow-sde"])


def _ode_times(scheduler):
    """The model time of each of the scheduler's timesteps: 1 - sigma, in float32 as the model sees it."""
    return 1.0 - scheduler.sigmas[:-1]


def flow_timesteps(sampler, steps=None):
    """The model times t in [0, 1] a flow sampler visits, in order (what a DyDiT width plan is made for),
    as the float32 values the model receives."""
    times = sde_times(steps) if sampler == "flow-sde" else _ode_times(make_flow_scheduler(sampler, steps))
    return [float(t) for t in times]


@torch.no_grad()
def sample_flow(model_fn, sampler, noise, labels, steps=None, generators=None, cfg_scale=1.5, guided_channels=3,
                null_class=1000):
    """Integrates a velocity model from noise (t = 0) to data (t = 1). generators: per-image CPU generators
    (dydit.sampling.noise_for) that draw the SDE's step noise, so an image depends on (seed, index) only."""
    if hasattr(model_fn, "prepare"):  # FastDyDiT: the width plan of exactly these times
        model_fn.prepare(flow_timesteps(sampler, steps))
    x, y = noise, labels.to(noise.device)

    def velocity(x, t):
        return guided_velocity(model_fn, x, torch.full((len(x),), float(t), device=x.device), y, cfg_scale,
                               guided_channels, null_class).float()[:, : x.shape[1]]

    if sampler != "flow-sde":
        scheduler = make_flow_scheduler(sampler, steps)
        for timestep, t in zip(scheduler.timesteps, _ode_times(scheduler)):
            # diffusers' flow output is eps - x1 = -velocity, at sigma = 1 - t
            x = scheduler.step(-velocity(x, float(t)), timestep, x).prev_sample
        return x
    if generators is not None and len(generators) != len(x):
        raise ValueError(f"{len(generators)} generators for {len(x)} images")
    times = sde_times(steps)
    dt = float(times[1] - times[0])
    for t in times[:-1]:
        drift = _sde_drift(velocity(x, t), x, float(t))
        dw = _step_noise(x, generators) * dt ** 0.5
        diffusion = SDE_DIFFUSION_NORM * (1 - float(t))  # SiT's "sigma" form: w(t) = 1 - t
        x = x + drift * dt + (2 * diffusion) ** 0.5 * dw
    t = float(times[-1])
    return x + _sde_drift(velocity(x, t), x, t) * SDE_LAST_STEP  # SiT's "Mean" last step


def _sde_drift(velocity, x, t):
    """SiT's SDE drift: v + w(t) * score, w(t) = 1 - t (diffusion form "sigma")."""
    diffusion = SDE_DIFFUSION_NORM * (1 - t)
    return velocity + diffusion * score_from_velocity(velocity, x, torch.full((len(x),), t, device=x.device))


def _step_noise(x, generators):
    """Standard normal noise like x, one image at a time from its own generator (or the global RNG)."""
    if generators is None:
        return torch.randn_like(x)
    return torch.cat([torch.randn((1, *x.shape[1:]), generator=g) for g in generators]).to(x.device)
