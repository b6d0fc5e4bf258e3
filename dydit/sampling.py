"""Sampling: diffusers schedulers on the DiT schedule, flow samplers, classifier-free guidance, the loops, VAE decoding.

DDPM (learned-range variance), DDIM and DPM-Solver++ are diffusers' schedulers configured with DiT's
training schedule (dydit/diffusion.py: 1000 steps, linear betas 1e-4..0.02). A velocity model (SiT,
dydit/flow.py) samples with diffusers' flow-matching ODE schedulers (flow-euler, flow-heun) or SiT's
SDE sampler (flow-sde), the one hand-written sampler: no library has it (see sample_flow).
The loop takes any model_fn(x, t, y) -> output (DiT, the masked DyDiT, FastDyDiT); a model_fn with a
`prepare(timesteps)` method (FastDyDiT) is handed the sampler's actual timesteps first, so a DyDiT
computes its width plan once for exactly the steps it will run.

Randomness is per image: the initial noise, the DDPM step noise and a uniform label all come from CPU
generators seeded by (seed, global index), so an image does not depend on batch, rank or restart.
"""
import contextlib
from pathlib import Path

import numpy as np
import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                       FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler)

from dydit import weights
from dydit.deepcache import DeepCache
from dydit.diffusion import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS
from dydit.flow import score_from_velocity
from dydit.models import cfg_forward

# the setup as data (re-exported: sampling.SAMPLERS, sampling.SamplerSpec, ...)
from dydit.sampler_spec import (  # noqa: F401
    RANDOM_VAE, LATENT_SCALE, DIFFUSION_SAMPLERS, FLOW_SAMPLERS, SDE_LAST_STEP, SDE_DIFFUSION_NORM, SAMPLERS,
    LABELS, PRECISIONS, DEFAULT_SAMPLER, DEFAULT_CFG_SCALE, DEFAULT_GUIDED_CHANNELS, DEFAULT_LABELS,
    DEFAULT_NUM_SAMPLES, DEFAULT_BATCH_SIZE, DEFAULT_PRECISION, SamplerSpec)


# The config of stabilityai/sd-vae-ft-ema (diffusers AutoencoderKL), so a single weights file suffices.
SD_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, act_fn="silu", norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), sample_size=256, scaling_factor=LATENT_SCALE,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)


@contextlib.contextmanager
def precision(name, device="cuda"):
    """TF32 matmuls and convolutions on ("tf32", as DiT's sample_ddp.py) or off ("fp32"), or bf16 autocast on
    `device`'s type ("bf16": matmuls and convolutions in bfloat16, the rest fp32); restored after."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; known: {', '.join(PRECISIONS)}")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
    try:
        if name == "bf16":
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


#################################################################################
#                                  Schedulers                                   #
#################################################################################

def make_scheduler(sampler, steps=None):
    """A fresh diffusers scheduler on DiT's schedule with its timesteps set (schedulers keep state)."""
    common = dict(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_start=BETA_START, beta_end=BETA_END,
                  beta_schedule="linear")
    if sampler == "ddpm":
        # "linspace" gives round(i * 999 / (steps - 1)): DiT's space_timesteps(1000, "250") exactly.
        # DiT samples with clip_denoised=False, hence clip_sample=False.
        scheduler = DDPMScheduler(**common, variance_type="learned_range", clip_sample=False,
                                  timestep_spacing="linspace")
    elif sampler == "ddim":
        # "leading" gives 0, 20, ..., 980 for 50 steps: DiT's space_timesteps(1000, "ddim50"); eta = 0
        scheduler = DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True,
                                  timestep_spacing="leading", steps_offset=0)
    elif sampler == "dpm-solver++":
        scheduler = DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    else:
        raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    scheduler.set_timesteps(steps or SAMPLERS[sampler])
    return scheduler


def sampler_timesteps(sampler, steps=None):
    """The model timesteps a sampler will visit, in order (what a DyDiT width plan is computed for): integers
    in [0, 1000) for a diffusion sampler, times in [0, 1] for a flow sampler."""
    if sampler in FLOW_SAMPLERS:
        return flow_timesteps(sampler, steps)
    return [int(t) for t in make_scheduler(sampler, steps).timesteps]


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


#################################################################################
#                          Per-image randomness                                  #
#################################################################################

NOISE_STREAM, LABEL_STREAM = 0, 1


def index_generator(seed, index, stream=NOISE_STREAM):
    """A CPU generator for one image, seeded from (seed, global index, stream) by numpy's SeedSequence."""
    hi, lo = np.random.SeedSequence([seed, index, stream]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(hi) << 32 | int(lo))


def labels_for(indices, seed, mode="uniform", num_classes=1000):
    """Class labels of global indices: uniform random per index (as DiT's sample_ddp.py) or balanced."""
    if mode == "uniform":
        return torch.tensor([int(torch.randint(num_classes, (1,), generator=index_generator(seed, i, LABEL_STREAM)))
                             for i in indices], dtype=torch.long)
    if mode == "balanced":  # index mod K: every class N/K times when K divides N
        return torch.tensor([i % num_classes for i in indices], dtype=torch.long)
    raise ValueError(f"unknown label mode {mode!r}; known: {', '.join(LABELS)}")


def noise_for(indices, seed, shape):
    """(initial noise (B, *shape), per-image generators that go on to draw the DDPM step noise)."""
    generators = [index_generator(seed, i) for i in indices]
    noise = torch.cat([torch.randn((1, *shape), generator=g) for g in generators])
    return noise, generators


#################################################################################
#                             Guidance and the loop                              #
#################################################################################

def guided_output(model_fn, z, t, y, cfg_scale, guided_channels=3, null_class=1000):
    """Model output for latents z (B, ...) with classifier-free guidance in one batched call.

    The conditional and unconditional halves run as one batch of 2B. guided_channels=3 is DiT's
    guidance (the first 3 of 4 latent channels, DiT issue #41, what the paper's FID used);
    None guides every channel of eps. The learned-sigma channels come from the conditional half.
    """
    if cfg_scale == 1.0:  # no guidance: the conditional model alone (half the compute)
        return model_fn(z, t, y)
    batch = torch.cat([z, z]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_class)])
    return cfg_forward(model_fn, *batch, cfg_scale, guided_channels)[: len(z)]


@torch.no_grad()
def sample_latents(model_fn, sampler, noise, labels, steps=None, generators=None, cfg_scale=1.5,
                   guided_channels=3, null_class=1000, deepcache_interval=0):
    """Runs a diffusers scheduler from noise (B, C, H, W) to clean latents, guided by labels (B,).

    deepcache_interval N > 1: the model runs whole at steps 0, N, 2N, ... and from cached block outputs
    in between (dydit.deepcache: model_fn must be a DiT, DyDiT or FastDyDiT); 0 or 1: no cache.
    A flow sampler (flow-euler, flow-heun, flow-sde) integrates a velocity model instead (sample_flow)."""
    if deepcache_interval > 1:
        model_fn = DeepCache(model_fn, deepcache_interval)  # one per run: it keeps this batch's branches
    if sampler in FLOW_SAMPLERS:
        return sample_flow(model_fn, sampler, noise, labels, steps, generators, cfg_scale, guided_channels, null_class)
    scheduler = make_scheduler(sampler, steps)
    if hasattr(model_fn, "prepare"):  # FastDyDiT: width plan for exactly these timesteps; DeepCache: step 0
        model_fn.prepare([float(t) for t in scheduler.timesteps])
    device = noise.device
    z, y = noise * scheduler.init_noise_sigma, labels.to(device)
    channels = z.shape[1]
    for timestep in scheduler.timesteps:
        t = torch.full((len(z),), int(timestep), device=device, dtype=torch.long)
        out = guided_output(model_fn, scheduler.scale_model_input(z, timestep), t, y, cfg_scale,
                            guided_channels, null_class).float()
        if sampler == "ddpm":
            # DDPMScheduler(learned_range) splits [eps (C), v (C)] itself; v in [-1, 1] interpolates the
            # log variance between the posterior variance and beta_t, exactly as DiT's learned sigma.
            if out.shape[1] != 2 * channels:
                raise ValueError(f"DDPM with learned-range variance needs a learned-sigma model "
                                 f"({2 * channels} output channels); this one has {out.shape[1]}")
        else:
            out = out[:, :channels]  # DDIM / DPM-Solver++ take eps only
        z = scheduler.step(out, timestep, z, generator=generators).prev_sample
    return z


@torch.no_grad()
def sample_flow(model_fn, sampler, noise, labels, steps=None, generators=None, cfg_scale=1.5, guided_channels=3,
                null_class=1000):
    """Integrates a velocity model from noise (t = 0) to data (t = 1). generators: per-image CPU generators
    (dydit.sampling.noise_for) that draw the SDE's step noise, so an image depends on (seed, index) only."""
    if hasattr(model_fn, "prepare"):  # FastDyDiT: the width plan of exactly these times
        model_fn.prepare(flow_timesteps(sampler, steps))
    x, y = noise, labels.to(noise.device)

    def velocity(x, t):
        return guided_output(model_fn, x, torch.full((len(x),), float(t), device=x.device), y, cfg_scale,
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


#################################################################################
#                                    VAE                                         #
#################################################################################

def load_vae(path):
    """diffusers AutoencoderKL from local weights: a diffusers folder, or one .safetensors/.bin/.pt file.

    A folder (or a file beside config.json) uses that config; otherwise the built-in sd-vae-ft-ema
    config. Single files in the original LDM layout are converted by diffusers' own converter.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / "config.json").is_file() and (path.is_dir() or path.stem == "diffusion_pytorch_model"):
        return AutoencoderKL.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False).eval()
    if path.is_dir():
        raise weights.CheckpointError(f"{path} is a folder without config.json: expected a diffusers VAE folder "
                                      f"(config.json + diffusion_pytorch_model.safetensors) or one weights file")
    state = weights.read(path)
    state = state.get("state_dict", state)
    vae = AutoencoderKL(**SD_VAE_CONFIG)
    if not any(k.startswith("decoder.up_blocks.") for k in state):  # LDM layout (decoder.up.N...)
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
        state = convert_ldm_vae_checkpoint(state, dict(vae.config))
    vae.load_state_dict(state)
    return vae.eval()


def random_vae(seed=0):
    """A tiny random-weight AutoencoderKL (latent x2 upsampling) for pipeline checks; images are noise."""
    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         scaling_factor=LATENT_SCALE).eval()


@torch.no_grad()
def decode_to_uint8(vae, latents):
    """Latents (B, 4, h, w) -> uint8 RGB images (B, H, W, 3), with DiT's conversion (x127.5 + 128, clamp)."""
    return to_uint8(vae.decode(latents / LATENT_SCALE).sample)


def to_uint8(pixels):
    """Pixels (B, C, H, W) in [-1, 1] -> uint8 images (B, H, W, C) on the CPU, DiT's conversion (x127.5 + 128,
    clamp): a VAE's output, or a pixel-space model's samples (the mini's digits)."""
    return torch.clamp(127.5 * pixels + 128.0, 0, 255).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8).numpy()

