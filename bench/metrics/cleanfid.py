"""FID through clean-fid, the second backend: its resizing ("clean": PIL bicubic) and its Inception.

clean-fid would fetch its TorchScript Inception into a hard-coded /tmp path; here it is built from the
local asset file (inception-2015-12-05.pt) with download=False, and only when its sha256 is the published one.
"""
from pathlib import Path

import numpy as np
import torch
from cleanfid import fid as cleanfid_fid
from cleanfid.inception_torchscript import InceptionV3W
from cleanfid.resize import build_resizer

from bench import assets
from dydit.fileio import sha256_file
from dydit.weights import CheckpointError

KEY_FID_CLEANFID = "fid_cleanfid"
MODE = "clean"
WEIGHTS_NAME = "inception-2015-12-05.pt"  # clean-fid loads <folder>/<this name>
BACKEND = f"clean-fid mode={MODE} (PIL bicubic to 299, StyleGAN2-ADA TorchScript Inception)"


def verify(weights_path, manifest=None) -> Path:
    """The path of clean-fid's Inception if it is the published file, else CheckpointError. A TorchScript file is
    a program, not a state dict (no safe reader exists): only the file with the sha256 of suites/assets.toml's
    inception-cleanfid is ever loaded."""
    path = Path(weights_path)
    if path.name != WEIGHTS_NAME:
        raise CheckpointError(f"clean-fid loads its Inception as <folder>/{WEIGHTS_NAME}; got {path}: rename it, or "
                              f"give the {assets.INCEPTION_CLEANFID} asset")
    expected = {f.sha256 for f in assets.load_manifest(manifest)[assets.INCEPTION_CLEANFID].files if f.sha256}
    digest = sha256_file(path)
    if digest not in expected:
        raise CheckpointError(f"{path} has sha256 {digest[:16]}..., not the published {assets.INCEPTION_CLEANFID} "
                              f"({', '.join(e[:16] + '...' for e in sorted(expected))}): clean-fid's Inception is "
                              f"TorchScript, which runs code when loaded, so only that exact file is loaded")
    return path


def inception(weights_path, device="cpu", manifest=None):
    """clean-fid's Inception wrapper around the verified local TorchScript file; never downloads."""
    path = verify(weights_path, manifest)
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
