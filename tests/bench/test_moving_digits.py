"""bench/mini/moving_digits.py: the video mini's clips, deterministic per seed, moving as their class says."""
import numpy as np
import torch

from bench.data import load
from bench.mini.moving_digits import DIRECTIONS, FRAMES, GLYPH, MOTION, NUM_CLASSES, moving_digits, trajectory


def centroid(frame):
    """(row, column) of the ink's centroid of a (1, H, W) frame in [-1, 1]."""
    ink = (frame[0] + 1) / 2
    rows, cols = torch.meshgrid(torch.arange(ink.shape[0]), torch.arange(ink.shape[1]), indexing="ij")
    return torch.stack([(ink * rows).sum(), (ink * cols).sum()]) / ink.sum()


def test_moving_digits_are_deterministic_per_seed_and_move_as_their_class_says():
    a, b, other = moving_digits("val", seed=0), moving_digits("val", seed=0), moving_digits("val", seed=1)
    assert a.clips.shape == (500, FRAMES, 1, 16, 16) and float(a.clips.min()) == -1.0 and float(a.clips.max()) <= 1.0
    assert torch.equal(a.clips, b.clips) and torch.equal(a.classes, b.classes)
    assert not torch.equal(a.directions, other.directions)  # the seed draws the directions (and the split)
    assert set(a.directions.tolist()) == set(range(len(DIRECTIONS)))
    assert torch.equal(a.classes, a.digits * len(DIRECTIONS) + a.directions) and int(a.classes.max()) < NUM_CLASSES
    for i in range(40):  # the ink travels 6 pixels along the class's direction, the other axis stays put
        d = int(a.directions[i])
        path = torch.stack([centroid(a.clips[i, f]) for f in range(FRAMES)])
        travel = path[-1] - path[0]
        dr, dc = MOTION[DIRECTIONS[d]]
        assert abs(float(travel[0]) - 6 * dr) < 1e-3 and abs(float(travel[1]) - 6 * dc) < 1e-3, (d, travel)
    # every frame holds the same glyph, shifted
    corners = trajectory(0)
    assert corners[0].tolist() == [3, 0] and corners[-1].tolist() == [3, 16 - GLYPH]
    first, last = a.clips[0, 0, 0], a.clips[0, -1, 0]
    assert np.isclose(float((first + 1).sum()), float((last + 1).sum()))


def test_bench_data_loads_them_as_a_labelled_dataset():
    data = load("moving-digits", split="val")
    x, y = data[0]
    assert x.shape == (FRAMES, 1, 16, 16) and data.num_classes == NUM_CLASSES and 0 <= int(y) < NUM_CLASSES
