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

The detector is fed as StyleGAN-V feeds it: uint8 (B, C, F, H, W), grey repeated to 3 channels, I3D_KWARGS (it
rescales to [-1, 1] and resizes to 224 x 224 itself), TF32 off (Latte's tools/calc_metrics_for_dataset.py). Real clips
follow Latte's tools (`eval_metrics.sh`: fvd2048_16f with --mirror 1; its dataset loader): one folder of frame images
per video (sorted names; `ffmpeg -i v.avi DIR/v/%05d.jpg` makes one), each frame centre-cropped to its shorter side
and resized to the resolution with LANCZOS (tools/convert_videos_to_frames.py), videos shorter than FRAMES x STRIDE
frames discarded, the real set doubled by mirrored copies, `clips` of them drawn at random (here from a seed), each
clip FRAMES frames every STRIDE-th from a random offset. Generated clips are taken as sampled (no mirror, no stride).
A reference .npz records that protocol and the I3D's sha256; an FVD refuses clips or an I3D it does not fit.
"""
import json
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
PROTOCOL_KEY = "protocol"  # beside them: how they were made (JSON: clips, frames, stride, resolution, I3D sha256, ...)


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
        raise ValueError(f"{path}: torch.jit.load failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                         f"StyleGAN-V's i3d_torchscript.pt is a TorchScript archive") from None


@torch.no_grad()
def clip_features(clips, detector, device="cpu", batch_size=16, progress=True) -> np.ndarray:
    """(N, d) float64 features of uint8 clips (N, F, H, W, C), C = 1 or 3, as StyleGAN-V computes them."""
    from tqdm import tqdm
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.dtype != np.uint8 or clips.shape[-1] not in (1, 3):
        raise ValueError(f"clips: uint8 (N, frames, H, W, 1 or 3), got {clips.dtype} {clips.shape}")
    from dydit.sampling import precision
    out = []
    with precision("fp32", device):  # TF32 off, as Latte's metric tools
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
    """uint8 (resolution, resolution, 3): centre-cropped to the shorter side, resized with LANCZOS (as Latte's tools)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            side = min(im.size)
            left, top = (im.size[0] - side) // 2, (im.size[1] - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.LANCZOS)
            return np.asarray(im, dtype=np.uint8)
    except OSError as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None


def real_clips(folder, clips=CLIPS, frames=FRAMES, stride=STRIDE, resolution=RESOLUTION, seed=0, mirror=True):
    """Yields (video name, mirrored, uint8 clip (frames, resolution, resolution, 3)) drawn as the module docstring
    says; one clip in memory at a time (2,048 clips of 16 frames at 256 x 256 are 6.4 GB)."""
    from bench.metrics.reference import IMAGE_SUFFIXES
    if clips < MIN_CLIPS or frames < 1 or stride < 1 or resolution < 1:
        raise ValueError(f"clips >= {MIN_CLIPS}, frames, stride and resolution >= 1; got {clips}, {frames}, {stride}, "
                         f"{resolution}")
    folder = Path(folder)
    videos = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not videos:
        raise ValueError(f"{folder}: no video folders (one folder of frame images per video, e.g. "
                         f"`ffmpeg -i v.avi {folder}/v/%05d.jpg`)")
    listed = [(v, sorted(p for p in v.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)) for v in videos]
    long_enough = [(v, files) for v, files in listed if len(files) >= frames * stride]
    items = [(v, files, flip) for flip in ((False, True) if mirror else (False,)) for v, files in long_enough]
    if len(items) < clips:
        raise ValueError(f"{folder}: {len(long_enough)} of {len(videos)} videos have {frames * stride} frames "
                         f"({frames} every {stride}-th){', twice with mirrored copies' if mirror else ''}: "
                         f"{len(items)} clips, {clips} asked")
    rng = np.random.default_rng(seed)
    span = (frames - 1) * stride + 1
    for i in sorted(rng.choice(len(items), size=clips, replace=False)):
        video, files, flip = items[i]
        offset = int(rng.integers(0, len(files) - span + 1))
        clip = np.stack([_frame(f, resolution) for f in files[offset:offset + span:stride]])
        yield video.name, flip, np.ascontiguousarray(clip[:, :, ::-1]) if flip else clip


def real_clip_features(folder, detector, clips=CLIPS, frames=FRAMES, stride=STRIDE, resolution=RESOLUTION, seed=0,
                       mirror=True, device="cpu", batch_size=16):
    """((N, d) features of the real clips (real_clips), [(video name, mirrored)]), batch_size clips in memory."""
    from itertools import islice

    from tqdm import tqdm
    drawn = real_clips(folder, clips, frames, stride, resolution, seed, mirror)
    features, names = [], []
    with tqdm(total=clips, desc="real clips", unit="clip") as bar:
        while batch := list(islice(drawn, batch_size)):
            names += [(name, flip) for name, flip, _ in batch]
            features.append(clip_features(np.stack([clip for _, _, clip in batch]), detector, device, batch_size,
                                          progress=False))
            bar.update(len(batch))
    return np.concatenate(features), names


def load_reference(path):
    """(the (N, d) real-clip features, the protocol dict) of a reference .npz (`bench fvd-reference`), validated."""
    try:
        with np.load(path) as f:
            features, protocol = f[REFERENCE_KEY], json.loads(str(f[PROTOCOL_KEY]))
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise ValueError(f"{path}: not an FVD reference ({type(err).__name__}: an .npz with {REFERENCE_KEY!r} and "
                         f"{PROTOCOL_KEY!r}, made by `python -m bench fvd-reference`)") from None
    if features.ndim != 2 or len(features) < MIN_CLIPS:
        raise ValueError(f"{path}: {REFERENCE_KEY!r} must be (N >= {MIN_CLIPS}, d), got {features.shape}")
    return features, protocol


def check_fits(protocol, clips_shape, i3d_sha256, where):
    """ValueError unless the reference's clips were made as these clips are: frames, resolution, the same I3D."""
    frames, height, width = clips_shape[1:4]
    if (protocol.get("clip_frames"), protocol.get("resolution")) != (frames, height) or height != width:
        raise ValueError(f"{where}: its real clips are {protocol.get('clip_frames')} frames of "
                         f"{protocol.get('resolution')}², these are {frames} of {height} x {width}: make a reference "
                         f"for them (`bench fvd-reference --clip-frames {frames} --resolution {height}`)")
    if protocol.get("i3d_sha256") != i3d_sha256:
        raise ValueError(f"{where}: made with another I3D (sha256 {str(protocol.get('i3d_sha256'))[:12]}..., this one "
                         f"{i3d_sha256[:12]}...): features of two networks are not comparable")


def evaluation_key(reference_path, i3d_path, cache_dir) -> dict:
    """What an FVD depends on besides the clips: the reference's and the I3D's bytes, how I3D is called, the
    Fréchet distance's library."""
    import torch_fidelity

    from bench.assets import cached_sha256
    return {"reference": str(reference_path), "reference_sha256": cached_sha256(reference_path, cache_dir),
            "i3d_sha256": cached_sha256(i3d_path, cache_dir), "i3d_kwargs": I3D_KWARGS,
            "torch_fidelity": torch_fidelity.__version__}


def evaluate_clips(samples_path, reference_path, i3d_path, device="cpu") -> dict:
    """{"fvd", "clips"} of a sampled batch (`bench sample`'s samples.npz: arr_0 uint8 (N, F, H, W, C), loaded whole:
    6.4 GB at fvd2048_16f) against a reference made for such clips with this I3D."""
    from dydit.fileio import sha256_file
    reference, protocol = load_reference(reference_path)
    with np.load(samples_path) as f:
        clips = f["arr_0"]
    check_fits(protocol, clips.shape, sha256_file(i3d_path), reference_path)
    features = clip_features(clips, load_i3d(i3d_path, device), device)
    return {"fvd": fvd_from_features(features, reference), "clips": len(clips)}
