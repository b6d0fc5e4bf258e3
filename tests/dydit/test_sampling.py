"""Samplers (diffusers on DiT's schedule; the flow samplers), guidance, per-image randomness, the VAE (dydit/sampling.py)."""
import numpy as np
import pytest
import torch

from dydit import sampling
from dydit.weights import CheckpointError
from dydit.models import DiT, randomize_
from dydit.registry import create_model

LATENT = 8
# diffusers' DPM-Solver scheduler calls np.array(copy=False) on a tensor (numpy 2; harmless)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture(scope="module")
def model():
    """A tiny learned-sigma DiT (8 output channels) with random weights."""
    return randomize_(create_model("DiT-S/8", input_size=LATENT), std=0.01).eval()


def test_timesteps_are_dits_respacing():
    # DiT space_timesteps(1000, "250"): round(i * 999 / 249); "ddim50": 0, 20, ..., 980
    assert sampling.sampler_timesteps("ddpm") == [round(i * 999 / 249) for i in range(250)][::-1]
    assert sampling.sampler_timesteps("ddim") == list(range(980, -1, -20))
    assert len(sampling.sampler_timesteps("dpm-solver++", 10)) == 10
    with pytest.raises(ValueError, match="unknown sampler"):
        sampling.make_scheduler("euler")


def test_ddpm_learned_range_step_is_dits_formula():
    """One diffusers DDPM step equals guided-diffusion's p_sample with learned-range variance."""
    steps, k = 250, 100
    scheduler = sampling.make_scheduler("ddpm", steps)
    t, t_prev = int(scheduler.timesteps[k]), int(scheduler.timesteps[k + 1])
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    v = torch.rand(2, 4, 4, 4, generator=g) * 2 - 1  # learned-range output in [-1, 1]
    out = scheduler.step(torch.cat([eps, v], 1), t, x, generator=torch.Generator().manual_seed(7)).prev_sample

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphabar = torch.cumprod(1 - betas, 0)
    a_t, a_prev = alphabar[t], alphabar[t_prev]
    beta = 1 - a_t / a_prev  # the respaced beta
    posterior_var = beta * (1 - a_prev) / (1 - a_t)
    frac = (v.double() + 1) / 2
    log_var = frac * torch.log(beta) + (1 - frac) * torch.log(posterior_var)
    x0 = (x.double() - (1 - a_t).sqrt() * eps.double()) / a_t.sqrt()
    mean = beta * a_prev.sqrt() / (1 - a_t) * x0 + (1 - a_prev) * (1 - beta).sqrt() / (1 - a_t) * x.double()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out.double(), mean + torch.exp(0.5 * log_var) * noise, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(sampling.SAMPLERS))
def test_each_sampler_runs_with_learned_sigma_and_cfg(model, name):
    noise, generators = sampling.noise_for(range(3), 0, (4, LATENT, LATENT))
    labels = sampling.labels_for(range(3), 0)
    z = sampling.sample_latents(model, name, noise, labels, steps=4, generators=generators, cfg_scale=1.5)
    assert z.shape == noise.shape and torch.isfinite(z).all()
    assert not torch.allclose(z, noise)
    again = sampling.sample_latents(model, name, noise, labels, steps=4,
                                    generators=sampling.noise_for(range(3), 0, (4, LATENT, LATENT))[1])
    torch.testing.assert_close(z, again, rtol=0, atol=0)  # same per-image generators: same images


def test_ddpm_needs_learned_sigma():
    sit = randomize_(create_model("SiT-S/8", input_size=LATENT)).eval()  # 4 output channels
    noise, generators = sampling.noise_for(range(2), 0, (4, LATENT, LATENT))
    with pytest.raises(ValueError, match="learned-sigma"):
        sampling.sample_latents(sit, "ddpm", noise, torch.zeros(2, dtype=torch.long), 2, generators)
    sampling.sample_latents(sit, "ddim", noise, torch.zeros(2, dtype=torch.long), 2)  # eps-only samplers are fine


def test_guidance_is_one_batch_and_matches_dits_forward_with_cfg(model):
    calls = []

    def model_fn(x, t, y):
        calls.append(len(x))
        return model(x, t, y)
    z, t, y = torch.randn(3, 4, LATENT, LATENT), torch.full((3,), 500), torch.tensor([1, 2, 3])
    null = torch.full_like(y, 1000)
    for channels in (3, None):
        out = sampling.guided_output(model_fn, z, t, y, 1.5, channels)
        ref = model.forward_with_cfg(torch.cat([z, z]), torch.cat([t, t]), torch.cat([y, null]), 1.5, channels)[:3]
        torch.testing.assert_close(out, ref)
    assert calls == [6, 6]  # conditional and unconditional halves in one call
    three, four = (sampling.guided_output(model, z, t, y, 4.0, c) for c in (3, None))
    torch.testing.assert_close(three[:, :3], four[:, :3])
    assert not torch.allclose(three[:, 3], four[:, 3])  # DiT's guidance leaves channel 3 unguided
    torch.testing.assert_close(sampling.guided_output(model, z, t, y, 1.0), model(z, t, y))


def test_model_fn_with_prepare_gets_the_sampler_timesteps(model):
    class Planned:
        def prepare(self, timesteps):
            self.timesteps = list(timesteps)

        def __call__(self, x, t, y):
            return model(x, t, y)
    fn = Planned()
    noise, _ = sampling.noise_for(range(2), 0, (4, LATENT, LATENT))
    sampling.sample_latents(fn, "dpm-solver++", noise, torch.zeros(2, dtype=torch.long), steps=3)
    assert fn.timesteps == [float(t) for t in sampling.sampler_timesteps("dpm-solver++", 3)]


def test_fast_dydit_samples_what_the_masked_dydit_samples():
    """FastDyDiT (width plan for the sampler's timesteps) in the loop gives the masked reference's latents."""
    from dydit.fast import FastDyDiT
    dydit = randomize_(create_model("DyDiT-S/8", input_size=LATENT), std=0.01).eval()  # random routers too
    noise, _ = sampling.noise_for(range(2), 0, (4, LATENT, LATENT))
    labels = sampling.labels_for(range(2), 0)
    for name in sampling.SAMPLERS:
        masked, fast = (sampling.sample_latents(fn, name, noise, labels, 3,
                                                sampling.noise_for(range(2), 0, noise.shape[1:])[1])
                        for fn in (dydit, FastDyDiT(dydit)))
        torch.testing.assert_close(fast, masked, rtol=1e-4, atol=1e-4 * float(masked.abs().max()))


def test_noise_and_labels_depend_only_on_seed_and_index():
    noise, _ = sampling.noise_for([5, 6, 7], seed=1, shape=(4, 2, 2))
    alone, _ = sampling.noise_for([6], seed=1, shape=(4, 2, 2))
    torch.testing.assert_close(noise[1:2], alone, rtol=0, atol=0)
    assert not torch.equal(noise[0], noise[1])
    assert not torch.equal(sampling.noise_for([6], seed=2, shape=(4, 2, 2))[0], alone)
    assert sampling.labels_for([5, 6, 7], 1).tolist()[1:] == sampling.labels_for([6, 7], 1).tolist()
    balanced = sampling.labels_for(range(3000), 0, "balanced")
    assert np.bincount(balanced.numpy(), minlength=1000).tolist() == [3] * 1000
    uniform = sampling.labels_for(range(2000), 0, "uniform")
    assert 0 <= int(uniform.min()) and int(uniform.max()) < 1000 and len(set(uniform.tolist())) > 800


def test_vae_decodes_to_uint8_and_loads_from_a_folder_or_a_single_file(tmp_path, monkeypatch):
    vae = sampling.random_vae(seed=3)
    latents = torch.randn(2, 4, LATENT, LATENT)
    images = sampling.decode_to_uint8(vae, latents)
    assert images.dtype == np.uint8 and images.shape == (2, 2 * LATENT, 2 * LATENT, 3)
    vae.save_pretrained(tmp_path / "folder")  # a diffusers folder: config.json + weights
    for path in (tmp_path / "folder", tmp_path / "folder" / "diffusion_pytorch_model.safetensors"):
        np.testing.assert_array_equal(sampling.decode_to_uint8(sampling.load_vae(path), latents), images)
    # a single weights file uses the built-in config (here a tiny one in place of sd-vae-ft-ema's)
    from safetensors.torch import save_file
    monkeypatch.setattr(sampling, "SD_VAE_CONFIG", {k: v for k, v in vae.config.items() if not k.startswith("_")})
    save_file(vae.state_dict(), str(tmp_path / "single.safetensors"))
    np.testing.assert_array_equal(sampling.decode_to_uint8(sampling.load_vae(tmp_path / "single.safetensors"), latents),
                                  images)
    with pytest.raises(CheckpointError, match="config.json"):
        sampling.load_vae(tmp_path)


# ------------------------------------------------------------ flow samplers, on fields with known solutions

@pytest.mark.parametrize("sampler", ["flow-euler", "flow-heun"])
def test_ode_samplers_integrate_a_constant_field_exactly(sampler):
    """v(x, t) = c: x(1) = x(0) + c whatever the grid, for Euler and Heun alike."""
    c = torch.randn(2, 4, 3, 3)
    noise = torch.randn(2, 4, 3, 3)
    out = sampling.sample_flow(lambda x, t, y: c.clone(), sampler, noise, torch.zeros(2, dtype=torch.long),
                               steps=7, cfg_scale=1.0)
    assert torch.allclose(out, noise + c, atol=1e-5)


def test_heun_integrates_a_field_linear_in_t_exactly_and_euler_does_not():
    """v(x, t) = a t: x(1) = x(0) + a / 2 (the trapezoid rule is exact for it)."""
    a = torch.randn(1, 4, 2, 2)
    noise = torch.randn(1, 4, 2, 2)

    def field(x, t, y):
        return a * t.view(-1, 1, 1, 1)
    heun = sampling.sample_flow(field, "flow-heun", noise, torch.zeros(1, dtype=torch.long), steps=5, cfg_scale=1.0)
    assert torch.allclose(heun, noise + a / 2, atol=1e-5)
    euler = sampling.sample_flow(field, "flow-euler", noise, torch.zeros(1, dtype=torch.long), steps=5, cfg_scale=1.0)
    assert not torch.allclose(euler, noise + a / 2, atol=1e-3)


def test_the_model_sees_t_from_noise_to_data():
    seen = []

    def record(x, t, y):
        seen.append(float(t[0]))
        return torch.zeros_like(x)
    sampling.sample_flow(record, "flow-euler", torch.zeros(1, 4, 2, 2), torch.zeros(1, dtype=torch.long), steps=4,
                         cfg_scale=1.0)
    assert seen == pytest.approx(sampling.flow_timesteps("flow-euler", 4)) and seen[0] == 0.0 and seen[-1] < 1.0
    assert all(a < b for a, b in zip(seen, seen[1:]))


def test_sde_matches_sits_euler_maruyama_and_is_reproducible_per_image():
    """For x1 = 0 data the exact velocity is -x / (1 - t); the SDE's steps are SiT's, noise per (seed, index)."""
    def velocity(x, t, y):
        return -x / (1 - t.view(-1, 1, 1, 1))
    noise, gens = sampling.noise_for([3, 4], 7, (4, 2, 2))
    labels = torch.zeros(2, dtype=torch.long)
    a = sampling.sample_flow(velocity, "flow-sde", noise, labels, steps=20, generators=gens, cfg_scale=1.0)
    noise2, gens2 = sampling.noise_for([4], 7, (4, 2, 2))
    b = sampling.sample_flow(velocity, "flow-sde", noise2, labels[:1], steps=20, generators=gens2, cfg_scale=1.0)
    assert torch.equal(a[1:], b)  # image 4 alone equals image 4 in a batch
    # by hand: SiT's sde.sample + the "Mean" last step
    x, g = noise[1:].clone(), sampling.noise_for([4], 7, (4, 2, 2))[1][0]
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


def test_flow_guidance_combines_conditional_and_unconditional_velocities():
    def model(x, t, y):
        return torch.where((y == 10).view(-1, 1, 1, 1), torch.zeros_like(x), torch.ones_like(x))
    out = sampling.guided_output(model, torch.zeros(2, 4, 2, 2), torch.zeros(2), torch.tensor([1, 2]), 4.0,
                                 guided_channels=None, null_class=10)
    assert torch.allclose(out, torch.full_like(out, 4.0))  # uncond 0 + 4 (cond 1 - uncond 0)


def test_precision_switches_tf32_and_restores_it():
    def flags():
        return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    before = flags()
    for mode, inside in (("tf32", (True, True)), ("fp32", (False, False))):
        with sampling.precision(mode):
            assert flags() == inside
        assert flags() == before
    with pytest.raises(RuntimeError), sampling.precision("tf32"):
        raise RuntimeError("restored on the way out too")
    assert flags() == before


def test_bf16_autocasts_the_model_and_samples_close_to_fp32():
    """precision("bf16"): matmuls in bfloat16 under autocast on the given device, TF32 off, the sample finite and
    near the fp32 one (a tiny DiT, DDIM-4)."""
    torch.manual_seed(0)
    model = randomize_(DiT(input_size=8, patch_size=4, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                           num_classes=10)).eval()  # DiT zero-initializes its output layer: nothing to round
    noise = torch.randn(2, 4, 8, 8)
    labels = torch.tensor([1, 2])
    out = {}
    for mode in ("fp32", "bf16"):
        with sampling.precision(mode, "cpu"):
            assert torch.is_autocast_enabled("cpu") == (mode == "bf16")
            out[mode] = sampling.sample_latents(model, "ddim", noise, labels, 4, cfg_scale=1.5, null_class=10)
    assert out["bf16"].dtype == torch.float32 and torch.isfinite(out["bf16"]).all()
    assert (out["bf16"] - out["fp32"]).abs().max() < 0.1 and not torch.equal(out["bf16"], out["fp32"])
    with pytest.raises(ValueError, match="unknown precision"):
        with sampling.precision("fp16"):
            pass
