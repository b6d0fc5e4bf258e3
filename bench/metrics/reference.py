"""Image batches and reference sets: ADM-format `.npz` files (arr_0 uint8 N x H x W x 3, optional
mu/sigma and mu_s/sigma_s), or a folder of real images. Bad files fail with a message saying what is wrong.
"""
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from dydit.errors import UserError

IMAGES_KEY = "arr_0"
FID_STATS = ("mu", "sigma")  # ADM: pool_3 statistics (2048-d)
SFID_STATS = ("mu_s", "sigma_s")  # ADM: mixed_6/conv[..., :7] statistics (2023-d)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class BatchError(UserError, ValueError):
    """An image batch or reference file that cannot be used; the message says why and what to do."""


def _unreadable(path, err):
    return BatchError(f"{path} is not a readable .npz ({type(err).__name__}: {err}); it is probably truncated "
                      f"or corrupt: re-create it (python -m bench sample) or download it again")


def npz_header(path, key=IMAGES_KEY):
    """(shape, dtype) of one array of an .npz, read from its header without loading the data."""
    path = Path(path)
    if not path.is_file():
        raise BatchError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            if key not in names:
                raise BatchError(f"{path} has no {key!r} array (it has: {', '.join(names) or 'none'}); "
                                 f"expected an ADM-format batch with {IMAGES_KEY} = uint8 images (N, H, W, 3)")
            with zf.open(key + ".npy") as f:
                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(f)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        if isinstance(err, BatchError):
            raise
        raise _unreadable(path, err) from err
    return shape, dtype


def check_images_header(path):
    """Validates arr_0's header: uint8, 4-D, 3 channels last; returns its shape."""
    shape, dtype = npz_header(path)
    if dtype != np.uint8:
        raise BatchError(f"{path}: {IMAGES_KEY} has dtype {dtype}, expected uint8 RGB images (N, H, W, 3) in "
                         f"0..255 (convert with np.clip(x, 0, 255).astype(np.uint8))")
    if len(shape) != 4 or shape[-1] != 3 or shape[0] == 0:
        raise BatchError(f"{path}: {IMAGES_KEY} has shape {shape}, expected (N, H, W, 3) with N > 0 "
                         f"(channels last, as ADM's evaluator reads it)")
    return shape


def load_images(path):
    """uint8 images (N, H, W, 3) of an ADM-format .npz, validated."""
    check_images_header(path)
    try:
        with np.load(path) as f:
            return f[IMAGES_KEY]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise _unreadable(path, err) from err


def load_image_folder(path):
    """uint8 images (N, H, W, 3) of a folder of image files (sorted; all of one size)."""
    from PIL import Image
    files = sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BatchError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
    images = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise BatchError(f"{path}: images of several sizes {sorted(sizes)[:3]}...; resize them to one size first")
    return np.stack(images)


@dataclass
class Reference:
    """A reference set: its file, precomputed statistics (ADM) if any, and its images (loaded on demand)."""
    path: Path
    stats: dict = field(default_factory=dict)  # {"fid": {"mu", "sigma"}, "sfid": {"mu", "sigma"}} when given
    _images: Optional[np.ndarray] = None

    @property
    def images(self):
        if self._images is None:
            self._images = load_image_folder(self.path) if self.path.is_dir() else load_images(self.path)
        return self._images


def load_reference(path):
    """A reference: an ADM reference batch (.npz with arr_0 and mu/sigma, mu_s/sigma_s) or real images."""
    path = Path(path)
    if path.is_dir():
        return Reference(path)
    check_images_header(path)
    stats = {}
    try:
        with np.load(path) as f:
            for metric, (mu, sigma) in (("fid", FID_STATS), ("sfid", SFID_STATS)):
                if mu in f.files and sigma in f.files:
                    stats[metric] = {"mu": f[mu].astype(np.float64), "sigma": f[sigma].astype(np.float64)}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise _unreadable(path, err) from err
    for metric, s in stats.items():
        d = s["mu"].shape[0]
        if s["mu"].ndim != 1 or s["sigma"].shape != (d, d):
            raise BatchError(f"{path}: {metric} statistics have shapes {s['mu'].shape} and {s['sigma'].shape}, "
                             f"expected (D,) and (D, D)")
    return Reference(path, stats)


class ImageArrayDataset(Dataset):
    """uint8 (N, H, W, 3) array -> uint8 (3, H, W) tensors, the input torch-fidelity's extractors take."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
