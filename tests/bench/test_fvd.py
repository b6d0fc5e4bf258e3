"""bench/metrics/fvd.py: FVD is the Fréchet distance of the clip features' Gaussians."""
import numpy as np
import pytest
import torch
from scipy import linalg

from bench.metrics import fvd
from bench.metrics.fvd import fvd_from_features


def frechet(a, b):
    """The formula: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def test_fvd_is_the_frechet_formula_on_clip_features():
    g = np.random.default_rng(0)
    real = g.normal(size=(300, 16))
    fake = g.normal(loc=0.3, scale=1.2, size=(250, 16))
    assert fvd_from_features(fake, real) == pytest.approx(frechet(fake, real), rel=1e-6)
    assert fvd_from_features(real, real) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="not the same network"):
        fvd_from_features(fake[:, :8], real)
    with pytest.raises(ValueError, match="N >= 2"):
        fvd_from_features(fake[:1], real)


#################################################################################
#              I3D features, the real clips, the reference command              #
#################################################################################

class FakeI3D(torch.nn.Module):
    """StyleGAN-V's I3D call signature; its 'features' record what it was fed: per-clip channel means, frame means,
    the top rows' mean (which tells H from W) and channel stds."""

    def forward(self, x: torch.Tensor, rescale: bool, resize: bool, return_features: bool) -> torch.Tensor:
        assert x.dtype == torch.uint8 and rescale and resize and return_features
        v = x.float()  # (B, 3, F, H, W)
        top = v[:, :, :, : v.shape[3] // 2].mean((1, 2, 3, 4))[:, None]
        return torch.cat([v.mean((2, 3, 4)), v.mean((1, 3, 4)), top, v.std((2, 3, 4))], 1)  # (B, 3 + F + 1 + 3)


@pytest.fixture
def i3d_file(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(FakeI3D()).save(str(path))
    return path


def test_clips_reach_the_i3d_as_stylegan_v_feeds_them(i3d_file):
    detector = fvd.load_i3d(i3d_file)
    clips = np.random.default_rng(0).integers(0, 256, size=(5, 4, 8, 6, 3), dtype=np.uint8)  # H 8 != W 6
    features = fvd.clip_features(clips, detector, batch_size=2, progress=False)  # three batches
    assert features.shape == (5, 3 + 4 + 1 + 3) and features.dtype == np.float64
    c = clips.astype(np.float64)
    assert np.allclose(features[:, :3], c.mean((1, 2, 3)))  # channels stay channels: (N, F, H, W, C) -> (B, C, F, ...)
    assert np.allclose(features[:, 3:7], c.mean((2, 3, 4)))  # frames stay frames
    assert np.allclose(features[:, 7], c[:, :, :4].mean((1, 2, 3, 4)))  # rows stay rows (H before W)
    grey = fvd.clip_features(clips[..., :1], detector, progress=False)  # one channel: repeated to three
    assert np.allclose(grey[:, 0], grey[:, 1]) and np.allclose(grey[:, 0], c[..., 0].mean((1, 2, 3)))
    with pytest.raises(ValueError, match="uint8"):
        fvd.clip_features(clips.astype(np.float32), detector)
    with pytest.raises(ValueError, match="torch.jit.load failed"):
        fvd.load_i3d(i3d_file.with_name("missing.pt"))


def _frames(root, videos, size=(16, 12)):
    from PIL import Image
    g = np.random.default_rng(1)
    for name, count in videos.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(g.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(
                root / name / f"{i:05d}.png")


def test_real_clips_follow_lattes_tools(tmp_path):
    """Frames centre-cropped then resized; videos shorter than frames x stride left out; mirrored copies in the draw;
    every stride-th frame from an offset; deterministic per seed."""
    from PIL import Image
    _frames(tmp_path, {"a": 10, "b": 8, "c": 9, "d": 12})
    drawn = list(fvd.real_clips(tmp_path, clips=6, frames=3, stride=3, resolution=8, seed=0))  # all 6 (3 x 2)
    assert {(n, f) for n, f, _ in drawn} == {(n, f) for n in "acd" for f in (False, True)}  # b: 8 < 9 frames
    clips = {(n, f): c for n, f, c in drawn}
    assert all(c.shape == (3, 8, 8, 3) and c.dtype == np.uint8 for c in clips.values())

    def frame(i):  # c's frame i as Latte's tools make it: the centre 12 x 12 of 16 x 12, resized with LANCZOS
        with Image.open(tmp_path / "c" / f"{i:05d}.png") as im:
            return np.asarray(im.convert("RGB").crop((2, 0, 14, 12)).resize((8, 8), Image.LANCZOS))
    at = [np.stack([frame(o + 3 * k) for k in range(3)]) for o in range(3)]  # 9 frames, a span of 7: offsets 0-2
    assert any(np.array_equal(clips["c", False], a) for a in at)
    assert any(np.array_equal(clips["c", True], a[:, :, ::-1]) for a in at)  # mirrored: columns reversed
    again = [c for _, _, c in fvd.real_clips(tmp_path, clips=6, frames=3, stride=3, resolution=8, seed=0)]
    assert all(np.array_equal(x, y) for x, (_, _, y) in zip(again, drawn))
    plain = list(fvd.real_clips(tmp_path, clips=3, frames=3, stride=3, resolution=8, mirror=False))
    assert sorted(n for n, _, _ in plain) == ["a", "c", "d"] and not any(f for _, f, _ in plain)
    with pytest.raises(ValueError, match="3 of 4 videos have 9 frames.*twice with mirrored copies: 6 clips, 7 asked"):
        next(fvd.real_clips(tmp_path, clips=7, frames=3, stride=3, resolution=8))
    with pytest.raises(ValueError, match="no video folders"):
        next(fvd.real_clips(tmp_path / "a", clips=2))
    (tmp_path / "d" / "00003.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="00003.png: not a readable image"):
        list(fvd.real_clips(tmp_path, clips=6, frames=3, stride=3, resolution=8, seed=0))


def test_the_reference_command_writes_the_features_and_protocol_the_fvd_checks(tmp_path, i3d_file, capsys):
    from bench.cli import main
    _frames(tmp_path / "frames", {f"v{i}": 6 for i in range(3)})
    out = tmp_path / "ref" / "ucf.npz"
    argv = ["fvd-reference", "--frames", str(tmp_path / "frames"), "--i3d", str(i3d_file), "--out", str(out),
            "--clips", "4", "--clip-frames", "2", "--stride", "3", "--resolution", "8", "--device", "cpu"]
    assert main(argv) == 0
    reference, protocol = fvd.load_reference(out)
    assert reference.shape == (4, 3 + 2 + 1 + 3)
    assert (protocol["clip_frames"], protocol["stride"], protocol["resolution"], protocol["mirror"]) == (2, 3, 8, True)
    # the FVD of the same clips against the reference, through the cell's path, is the formula on equal features: 0
    clips = np.stack([c for _, _, c in fvd.real_clips(tmp_path / "frames", clips=4, frames=2, stride=3, resolution=8)])
    np.savez(tmp_path / "samples.npz", arr_0=clips[::-1])
    result = fvd.evaluate_clips(tmp_path / "samples.npz", out, i3d_file)
    assert result["clips"] == 4 and result["fvd"] == pytest.approx(0.0, abs=1e-4)
    # clips the reference was not made for, or another I3D, are refused
    np.savez(tmp_path / "long.npz", arr_0=np.concatenate([clips, clips], 1))
    with pytest.raises(ValueError, match="its real clips are 2 frames of 8², these are 4 of 8 x 8"):
        fvd.evaluate_clips(tmp_path / "long.npz", out, i3d_file)
    other = tmp_path / "other_i3d.pt"
    torch.jit.script(FakeI3D()).save(str(other))
    other.write_bytes(other.read_bytes() + b"\0")  # another file: another sha256
    with pytest.raises(ValueError, match="made with another I3D"):
        fvd.evaluate_clips(tmp_path / "samples.npz", out, other)
    # one-line errors: no frames folder, --out a folder
    assert main(argv[:2] + [str(tmp_path / "nope")] + argv[3:]) == 2
    assert "error: --frames" in capsys.readouterr().err
    assert main(argv[:5] + ["--out", str(tmp_path)] + argv[7:]) == 2
    assert "is not a file" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", arr_0=clips)
    with pytest.raises(ValueError, match="not an FVD reference"):
        fvd.load_reference(tmp_path / "bad.npz")


def test_a_latte_rows_fvd_cell_samples_clips_and_judges_their_i3d_features(tmp_path, i3d_file, monkeypatch):
    """The full profile's FVD cell on stand-in assets: a random Latte-S/8 checkpoint, a tiny VAE, the fake I3D and a
    reference of random features; sampled once, its FVD the formula on the sampled clips' features, then reused."""
    import dataclasses

    from bench import assets, sample
    from bench.measure import quality
    from bench.measure.base import Context
    from dydit.models import randomize_
    from dydit.registry import create_model
    from dydit.sampling import SamplerSpec, random_vae
    from tests.bench.runner_helpers import item
    torch.save({"ema": randomize_(create_model("Latte-S/8"), std=0.01).state_dict()}, tmp_path / "latte.pt")
    vae = random_vae()
    vae.save_pretrained(tmp_path / "vae")
    import json

    from dydit.fileio import sha256_file
    reference = np.random.default_rng(2).normal(size=(8, 3 + 16 + 1 + 3))
    it = item("Latte-S/8", "fvd", "latte", name="Tiny Latte", column="fvd",
              sampler=SamplerSpec(name="ddim", steps=2, cfg_scale=2.0, num_samples=3, batch_size=3))
    upsampling = 2 ** (len(vae.config.block_out_channels) - 1)  # the stand-in VAE's (SD's: 8)
    size = upsampling * quality.sample_spec(it, tmp_path / "latte.pt", tmp_path / "vae").latent_size
    protocol = {"clip_frames": 16, "resolution": size, "i3d_sha256": sha256_file(i3d_file)}
    np.savez(tmp_path / "ref.npz", features=reference, protocol=np.array(json.dumps(protocol)))
    (tmp_path / "assets.toml").write_text("\n".join(
        f'[assets.{name}]\nfiles = [{{ path = "{path}" }}]\nsource = "test"' for name, path in (
            ("latte", "latte.pt"), ("vae-ft-ema", "vae/diffusion_pytorch_model.safetensors"),
            ("i3d-fvd", i3d_file.name), ("ucf-ref", "ref.npz"))))
    manifest = assets.load_manifest(tmp_path / "assets.toml")
    monkeypatch.setattr(assets, "load_manifest", lambda path=None: manifest)
    runs, real_run = [], sample.run
    monkeypatch.setattr(sample, "run", lambda *a, **k: runs.append(a) or real_run(*a, **k, progress=False))
    it = dataclasses.replace(it, cell=dataclasses.replace(it.cell, fid_reference="ucf-ref"))
    ctx = Context(profile="full", device="cpu", assets_root=tmp_path, work_dir=tmp_path / "work")
    value = quality.MEASUREMENT(ctx).measure_group([it], ctx)[it.key]
    assert len(runs) == 1 and np.isfinite(value)
    with np.load(quality.samples_dir("Tiny Latte", runs[0][0], ctx) / "samples.npz") as f:
        clips = f["arr_0"]
    assert clips.shape[:2] == (3, 16) and clips.shape[-1] == 3  # Latte's 16 frames, decoded frame by frame
    features = fvd.clip_features(clips, fvd.load_i3d(i3d_file), progress=False)
    assert value == pytest.approx(fvd_from_features(features, reference), rel=1e-9)
    assert quality.MEASUREMENT(ctx).measure_group([it], ctx)[it.key] == value and len(runs) == 1  # metrics.json
