"""FVD: the Fréchet distance between I3D features of generated and real clips.

Latte reports FVD as StyleGAN-V's `fvd2048_16f`: 2,048 generated and 2,048 real clips of 16 frames at 256 x 256
(real clips: every 3rd frame on UCF-101), features of the Kinetics-400 I3D before its softmax (StyleGAN-V's
i3d_torchscript.pt). The distance itself is FID's formula on those features; it is torch-fidelity's here, as
for FID (bench.metrics.fidelity), so the two cannot drift apart (StyleGAN-V divides its covariances by N, torch-fidelity
by N - 1: 0.05 % apart at N = 2,048). The I3D network and the real clips' features are assets (suites/assets.toml);
without them the FVD cells are skipped, naming them.

    fvd_from_features(generated, real)                     # (N, 400) feature arrays -> FVD
    i3d = load_i3d("i3d_torchscript.pt")                    # TorchScript: torch.jit.load, never a pickle
    clip_features(clips, i3d)                               # uint8 clips (N, F, H, W, C) -> (N, 400)
    python -m bench fvd-reference --frames UCF101_FRAMES --i3d i3d_torchscript.pt --out ucf101-fvd2048_16f.npz

The detector is fed as StyleGAN-V feeds it: uint8 (B, C, F, H, W), grey repeated to 3 channels, and
I3D_KWARGS (it rescales to [-1, 1] and resizes to 224 x 224 itself). Real clips (real_clips): one per video
folder of frame images (sorted names; `ffmpeg -i v.avi DIR/v/%05d.jpg` makes one); `clips` of the videos long enough
(StyleGAN-V discards short ones) drawn from the seed, FRAMES frames every STRIDE-th from an offset drawn per video,
each frame's shorter side resized to the resolution, then centre-cropped. StyleGAN-V takes its dataset's first 2,048
videos; a UCF-101 folder in name order is in class order, so a draw over all of them is ours (Latte's ordering is not
known here).
"""
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics

from bench.definitions import FVD_CLIPS as CLIPS, FVD_FRAMES as FRAMES, FVD_RESOLUTION as RESOLUTION, \
    FVD_STRIDE as STRIDE
from bench.metrics.fidelity import fid

MIN_CLIPS = 2  # a covariance needs two clips; the protocol uses 2,048
# StyleGAN-V's call: uint8 in, [-1, 1] and 224 x 224 inside the network, the 400 logits before the softmax
I3D_KWARGS = dict(rescale=True, resize=True, return_features=True)
REFERENCE_KEY = "features"  # the real clips' (N, d) features in a reference .npz (`bench fvd-reference`)


def fvd_from_features(features, reference_features) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, d) arrays of clip features."""
    arrays = [torch.as_tensor(np.asarray(f), dtype=torch.float64) for f in (features, reference_features)]
    for name, a in zip(("features", "reference features"), arrays):
        if a.ndim != 2 or len(a) < MIN_CLIPS:
            raise ValueError(f"{name}: an (N, d) array of N >= {MIN_CLIPS} clips' features, got shape {tuple(a.shape)}")
    if arrays[0].shape[1] != arrays[1].shape[1]:
        raise ValueError(f"features of {arrays[0].shape[1]} and {arrays[1].shape[1]} dimensions: not the same network")
    stats, reference = (fid_features_to_statistics(a) for a in arrays)
    return float(fid(stats, reference))


#################################################################################
#                      I3D features of clips (StyleGAN-V's)                     #
#################################################################################

def load_i3d(path, device="cpu"):
    """StyleGAN-V's I3D (i3d_torchscript.pt): a TorchScript archive, read by torch.jit.load (no pickle)."""
    import warnings
    try:
        with warnings.catch_warnings():  # torch 2.x deprecates TorchScript; StyleGAN-V's I3D exists only as one
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
            return torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as err:
        raise ValueError(f"{path}: not a TorchScript archive ({type(err).__name__}): StyleGAN-V's "
                         f"i3d_torchscript.pt is one") from None


@torch.no_grad()
def clip_features(clips, detector, device="cpu", batch_size=16, progress=True) -> np.ndarray:
    """(N, d) float64 features of uint8 clips (N, F, H, W, C), C = 1 or 3, as StyleGAN-V computes them."""
    from tqdm import tqdm
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.dtype != np.uint8 or clips.shape[-1] not in (1, 3):
        raise ValueError(f"clips: uint8 (N, frames, H, W, 1 or 3), got {clips.dtype} {clips.shape}")
    out = []
    for start in tqdm(range(0, len(clips), batch_size), desc="I3D features", unit="batch", disable=not progress):
        x = torch.from_numpy(clips[start:start + batch_size]).permute(0, 4, 1, 2, 3)  # (B, C, F, H, W)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1, 1)
        out.append(detector(x.contiguous().to(device), **I3D_KWARGS).double().cpu())
    return torch.cat(out).numpy()


#################################################################################
#                      The real clips and their reference                       #
#################################################################################

def _frame(path, resolution):
    """uint8 (resolution, resolution, 3): the shorter side resized to `resolution`, centre-cropped."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = resolution / min(im.size)
        im = im.resize((max(resolution, round(im.size[0] * scale)), max(resolution, round(im.size[1] * scale))),
                       Image.BICUBIC)
        left, top = (im.size[0] - resolution) // 2, (im.size[1] - resolution) // 2
        return np.asarray(im.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)


def real_clips(folder, clips=CLIPS, frames=FRAMES, stride=STRIDE, resolution=RESOLUTION, seed=0):
    """Yields (video name, uint8 clip (frames, resolution, resolution, 3)): `clips` videos drawn from the seed among
    those long enough, each's clip from an offset drawn from the seed (module docstring); one clip in memory at a
    time (2,048 clips of 16 frames at 256 x 256 are 6.4 GB)."""
    from bench.metrics.reference import IMAGE_SUFFIXES
    if clips < MIN_CLIPS or frames < 1 or stride < 1 or resolution < 1:
        raise ValueError(f"clips >= {MIN_CLIPS}, frames, stride and resolution >= 1; got {clips}, {frames}, {stride}, "
                         f"{resolution}")
    folder = Path(folder)
    videos = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not videos:
        raise ValueError(f"{folder}: no video folders (one folder of frame images per video, e.g. "
                         f"`ffmpeg -i v.avi {folder}/v/%05d.jpg`)")
    span = (frames - 1) * stride + 1
    listed = [(v, sorted(p for p in v.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)) for v in videos]
    long_enough = [(v, files) for v, files in listed if len(files) >= span]  # StyleGAN-V discards short videos
    if len(long_enough) < clips:
        raise ValueError(f"{folder}: {len(long_enough)} of {len(videos)} videos have {span} frames ({frames} every "
                         f"{stride}-th); {clips} clips are asked")
    rng = np.random.default_rng(seed)
    for i in sorted(rng.choice(len(long_enough), size=clips, replace=False)):
        video, files = long_enough[i]
        offset = int(rng.integers(0, len(files) - span + 1))
        yield video.name, np.stack([_frame(f, resolution) for f in files[offset:offset + span:stride]])


def real_clip_features(folder, detector, clips=CLIPS, frames=FRAMES, stride=STRIDE, resolution=RESOLUTION, seed=0,
                       device="cpu", batch_size=16):
    """((N, d) features of the real clips (real_clips), their videos' names), batch_size clips in memory at once."""
    from itertools import islice

    from tqdm import tqdm
    drawn = real_clips(folder, clips, frames, stride, resolution, seed)
    features, names = [], []
    with tqdm(total=clips, desc="real clips", unit="clip") as bar:
        while batch := list(islice(drawn, batch_size)):
            names += [name for name, _ in batch]
            features.append(clip_features(np.stack([clip for _, clip in batch]), detector, device, batch_size,
                                          progress=False))
            bar.update(len(batch))
    return np.concatenate(features), names


def load_reference(path) -> np.ndarray:
    """The (N, d) real-clip features of a reference .npz (`bench fvd-reference`), validated."""
    try:
        with np.load(path) as f:
            features = f[REFERENCE_KEY]
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise ValueError(f"{path}: not an FVD reference ({type(err).__name__}: an .npz with {REFERENCE_KEY!r}, "
                         f"made by `python -m bench fvd-reference`)") from None
    if features.ndim != 2 or len(features) < MIN_CLIPS:
        raise ValueError(f"{path}: {REFERENCE_KEY!r} must be (N >= {MIN_CLIPS}, d), got {features.shape}")
    return features


def evaluation_key(reference_path, i3d_path, cache_dir) -> dict:
    """What an FVD depends on besides the clips: the reference's and the I3D's bytes, and how I3D is called."""
    from bench.assets import cached_sha256
    return {"reference": str(reference_path), "reference_sha256": cached_sha256(reference_path, cache_dir),
            "i3d_sha256": cached_sha256(i3d_path, cache_dir), "i3d_kwargs": I3D_KWARGS}


def evaluate_clips(samples_path, reference_path, i3d_path, device="cpu") -> dict:
    """{"fvd", "clips"} of a sampled batch (`bench sample`'s samples.npz: arr_0 uint8 (N, F, H, W, C))."""
    reference = load_reference(reference_path)
    with np.load(samples_path) as f:
        clips = f["arr_0"]
    features = clip_features(clips, load_i3d(i3d_path, device), device)
    return {"fvd": fvd_from_features(features, reference), "clips": len(clips)}
