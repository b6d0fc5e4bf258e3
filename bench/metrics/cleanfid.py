"""FID through clean-fid, the second backend: its resizing ("clean": PIL bicubic) and its Inception.

clean-fid would fetch its TorchScript Inception into a hard-coded /tmp path; here it is built from the
local asset file (inception-2015-12-05.pt, sha256-checked) with download=False.
"""
from pathlib import Path

import numpy as np
import torch
from cleanfid import fid as cleanfid_fid
from cleanfid.inception_torchscript import InceptionV3W
from cleanfid.resize import build_resizer

KEY_FID_CLEANFID = "fid_cleanfid"
MODE = "clean"
WEIGHTS_NAME = "inception-2015-12-05.pt"  # clean-fid loads <folder>/<this name>
BACKEND = f"clean-fid mode={MODE} (PIL bicubic to 299, StyleGAN2-ADA TorchScript Inception)"


def inception(weights_path, device="cpu"):
    """clean-fid's Inception wrapper around a local TorchScript file; never downloads."""
    path = Path(weights_path)
    if path.name != WEIGHTS_NAME:
        raise ValueError(f"clean-fid loads its Inception as <folder>/{WEIGHTS_NAME}; got {path}")
    return InceptionV3W(str(path.parent), download=False, resize_inside=False).to(device).eval()


@torch.no_grad()
def extract_features(images, model, batch_size=64, device="cpu"):
    """(N, 2048) numpy features of uint8 images (N, H, W, 3), resized as clean-fid's `clean` mode does."""
    resize = build_resizer(MODE)
    feats = []
    for start in range(0, len(images), batch_size):
        batch = np.stack([resize(im) for im in images[start:start + batch_size]])  # float32 (B, 299, 299, 3)
        feats.append(cleanfid_fid.get_batch_features(torch.from_numpy(batch).permute(0, 3, 1, 2), model, device))
    return np.concatenate(feats)


def fid_from_features(features, reference_features):
    """clean-fid's FID of two (N, D) feature arrays (scipy sqrtm; torch-fidelity uses eigenvalues)."""
    return float(cleanfid_fid.fid_from_feats(np.asarray(features, np.float64),
                                             np.asarray(reference_features, np.float64)))


def fid_from_statistics(mu, sigma, reference_mu, reference_sigma):
    """clean-fid's Frechet distance of two (mu, sigma) pairs."""
    return float(cleanfid_fid.frechet_distance(mu, sigma, reference_mu, reference_sigma))
