"""The sampling setup as data: the samplers' names and default steps, the paper's defaults, and SamplerSpec,
the one form of a sampling setup. No torch here: suite files and the CLI check a setup before torch loads.
dydit/sampling.py runs it.
"""
from dataclasses import dataclass
from typing import Optional

RANDOM_VAE = "random-tiny"  # a VAE argument that means: a tiny random VAE (random_vae; pipeline checks only)
LATENT_SCALE = 0.18215  # SD VAE latents are scaled by this in DiT's training; divide before decoding

# sampler name -> default number of steps (the paper's Table 4 settings; DPM-Solver++ also runs 10), then
# the flow-matching samplers of a velocity model (SiT; dydit.flow): SiT's SDE sampler 250 for FID, ODE 50
DIFFUSION_SAMPLERS = {"ddpm": 250, "ddim": 50, "dpm-solver++": 20}
FLOW_SAMPLERS = {"flow-euler": 50, "flow-heun": 50, "flow-sde": 250}
SDE_LAST_STEP = 0.04  # SiT's default last_step_size: the stride of 250 steps over [0, 1]
SDE_DIFFUSION_NORM = 1.0  # SiT's default diffusion_norm
SAMPLERS = {**DIFFUSION_SAMPLERS, **FLOW_SAMPLERS}
LABELS = ("uniform", "balanced")
PRECISIONS = ("fp32", "tf32", "bf16")  # bf16: autocast (the ci profile's FID-5K, bench/estimate.py)

# The paper's sampling setup: the one set of defaults, held by SamplerSpec below.
DEFAULT_SAMPLER = "ddpm"
DEFAULT_CFG_SCALE = 1.5
DEFAULT_GUIDED_CHANNELS = 3  # DiT's guidance of the first 3 latent channels (DiT issue #41); None: all
DEFAULT_LABELS = "uniform"  # a random class per image, as DiT's sample_ddp.py
DEFAULT_NUM_SAMPLES = 50000
DEFAULT_BATCH_SIZE = 32  # per GPU and per shard
DEFAULT_PRECISION = "tf32"  # DiT's sample_ddp.py samples with TF32 on (no effect on a CPU)


@dataclass(frozen=True)
class SamplerSpec:
    """How to sample: the one form of a sampling setup, from a suite file (bench.suite resolves
    [suite.sampler] < row < column < cell into one) to the sampling run (bench.sample.SampleSpec), the
    whole-loop timer (bench.timing.loop) and the mini reproduction. Values are checked where they enter."""
    name: str = DEFAULT_SAMPLER  # a sampler of SAMPLERS
    steps: Optional[int] = None  # None: the sampler's default (SAMPLERS: ddpm 250, ddim 50, ...)
    cfg_scale: float = DEFAULT_CFG_SCALE  # classifier-free guidance scale; 1 = no guidance
    guided_channels: Optional[int] = DEFAULT_GUIDED_CHANNELS  # None: every channel
    labels: str = DEFAULT_LABELS  # LABELS: "uniform" (as DiT's sample_ddp.py) or "balanced"
    num_samples: int = DEFAULT_NUM_SAMPLES
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE  # per process and per shard; also the timed batch of s/image
    precision: str = DEFAULT_PRECISION  # "tf32" (as DiT's sample_ddp.py), "fp32" or "bf16" (autocast)
    deepcache_interval: int = 0  # N > 1: DeepCache (dydit.deepcache), the whole model every N steps; 0: none

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.name!r}; known: {', '.join(SAMPLERS)}")
        if self.steps is None:
            object.__setattr__(self, "steps", SAMPLERS[self.name])
