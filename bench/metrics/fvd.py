"""FVD: the Fréchet distance between I3D features of generated and real clips.

Latte reports FVD as StyleGAN-V's `fvd2048_16f`: 2,048 generated and 2,048 real clips of 16 frames at 256 x 256
(real clips: every 3rd frame on UCF-101), features of the Kinetics-400 I3D before its softmax (StyleGAN-V's
i3d_torchscript.pt). The distance itself is FID's formula on those features; it is torch-fidelity's here, as
for FID (bench.metrics.fidelity), so the two cannot drift apart. The I3D network and the real clips are assets
(suites/assets.toml); without them the FVD cells are skipped, naming them.

    fvd_from_features(generated, real)   # (N, 400) feature arrays -> FVD
"""
import numpy as np
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics

from bench.metrics.fidelity import fid

MIN_CLIPS = 2  # a covariance needs two clips; the protocol uses 2,048


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
