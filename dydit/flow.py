"""Flow matching as SiT trains it (willisma/SiT, transport/): the interpolant, the loss, the training times.

SiT's linear interpolant (its ICPlan) joins noise and data over t in [0, 1], t = 0 noise, t = 1 data:
    x_t = t * x1 + (1 - t) * eps,    velocity  dx_t/dt = x1 - eps,
the model predicts the velocity, and the loss is mean((v_hat - (x1 - eps))^2) per sample, t ~ U[0, 1)
(SiT's train_eps = 0 for a velocity model). The timestep embedding is DiT's, applied to the raw t (no
x1000); SiT-XL/2 = DiT-XL/2 without learned sigma (dydit.registry's "SiT-*").

The samplers (diffusers' flow-matching ODE schedulers, SiT's SDE sampler) are in dydit/sampling.py.
"""
import torch


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
