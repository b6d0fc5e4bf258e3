"""The video mini's scores (DyLatte, issue 25), on the project's digit classifier trained on frames of moving digits.

    classifier = frame_classifier(moving_digits("train"))      # bench.metrics.digits' CNN on every frame
    reference = clip_features(real_clips, classifier)           # held-out clips
    scores(generated, classes, classifier, reference)           # {frame_accuracy, consistency, motion, mini_fvd}

Clips are uint8 (N, F, 16, 16, 1), as `bench sample` writes them; classes are digit x direction
(bench/mini/moving_digits.py).
- frame accuracy: the fraction of frames whose digit the classifier reads as the clip's class's digit;
- consistency: the fraction of clips whose frames all read as one digit (whatever it is);
- motion: the fraction of clips whose ink moves along the class's direction: the ink centroid's displacement from
  the first to the last frame has its larger component on the direction's axis, with its sign, and at least half
  the real travel;
- mini-FVD: the Fréchet distance (bench.metrics.fvd) of clip features: the mean of the frames' classifier features
  and the centroid's frame-to-frame displacements (the motion statistics).
"""
import numpy as np
import torch

from bench.metrics import digits
from bench.metrics.fvd import fvd_from_features
from bench.mini.moving_digits import DIRECTIONS, GLYPH, MOTION, MovingDigits

MIN_TRAVEL = 0.5  # of the real travel (DIGITS_SIZE - GLYPH pixels): a clip that moves less does not move
KEYS = ("frame_accuracy", "consistency", "motion", "mini_fvd")


def to_uint8(clips: torch.Tensor) -> np.ndarray:
    """Clips (N, F, 1, H, W) in [-1, 1] -> uint8 (N, F, H, W, 1), as bench sample writes them."""
    return torch.clamp(127.5 * clips + 128.0, 0, 255).permute(0, 1, 3, 4, 2).to(torch.uint8).numpy()


def frame_classifier(train: MovingDigits, config=digits.ClassifierConfig()) -> digits.DigitClassifier:
    """The mini's digit CNN trained on every frame of the training clips, labelled with the clip's digit."""
    frames = to_uint8(train.clips).reshape(-1, *train.clips.shape[-2:], 1)  # (N F, H, W, 1)
    return digits.train_classifier(frames, train.digits.repeat_interleave(train.clips.shape[1]), config)


@torch.no_grad()
def _frames(clips_uint8: np.ndarray, classifier):
    """(features (N, F, 128), logits (N, F, 10)) of every frame."""
    n, f = clips_uint8.shape[:2]
    x = digits.to_float(torch.from_numpy(clips_uint8.reshape(n * f, *clips_uint8.shape[2:])).permute(0, 3, 1, 2))
    features, logits = classifier(x)
    return features.reshape(n, f, -1), logits.reshape(n, f, -1)


def centroids(clips_uint8: np.ndarray) -> np.ndarray:
    """(N, F, 2) row and column of each frame's ink centroid (ink = pixel / 255)."""
    ink = clips_uint8[..., 0].astype(np.float64) / 255.0  # (N, F, H, W)
    rows, cols = np.meshgrid(np.arange(ink.shape[2]), np.arange(ink.shape[3]), indexing="ij")
    total = ink.sum(axis=(2, 3)).clip(min=1e-6)
    return np.stack([(ink * rows).sum(axis=(2, 3)) / total, (ink * cols).sum(axis=(2, 3)) / total], axis=-1)


def clip_features(clips_uint8: np.ndarray, classifier) -> np.ndarray:
    """(N, 128 + 2 (F - 1)): the frames' mean classifier features and the centroid's per-frame displacements."""
    features, _ = _frames(clips_uint8, classifier)
    steps = np.diff(centroids(clips_uint8), axis=1).reshape(len(clips_uint8), -1)
    return np.concatenate([features.mean(1).numpy(), steps], axis=1)


def moves_as_directed(clips_uint8: np.ndarray, directions) -> np.ndarray:
    """(N,) bool: the clip's ink travels along its direction (module docstring)."""
    c = centroids(clips_uint8)
    travel = c[:, -1] - c[:, 0]  # (N, 2)
    wanted = np.array([MOTION[DIRECTIONS[int(d)]] for d in np.asarray(directions)], dtype=np.float64)  # (N, 2)
    along = (travel * wanted).sum(1)
    across = np.abs(travel * wanted[:, ::-1]).sum(1)
    return (along >= MIN_TRAVEL * (16 - GLYPH)) & (along > across)


def scores(clips_uint8: np.ndarray, classes, classifier, reference_features: np.ndarray) -> dict:
    """The four scores of generated clips (uint8 (N, F, 16, 16, 1)) conditioned on `classes` (N,)."""
    classes = torch.as_tensor(np.asarray(classes)).long()
    digit, direction = classes // len(DIRECTIONS), classes % len(DIRECTIONS)
    _, logits = _frames(clips_uint8, classifier)
    read = logits.argmax(-1)  # (N, F)
    return {"frame_accuracy": float((read == digit[:, None]).float().mean()),
            "consistency": float((read == read[:, :1]).all(1).float().mean()),
            "motion": float(moves_as_directed(clips_uint8, direction.numpy()).mean()),
            "mini_fvd": fvd_from_features(clip_features(clips_uint8, classifier), reference_features)}
