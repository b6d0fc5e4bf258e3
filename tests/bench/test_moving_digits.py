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


def test_latte_mini_trains_on_moving_digits_and_dylatte_mini_fine_tunes_from_it_through_bench_train(tmp_path, capsys):
    import json

    from dydit.checkpoints import load_trained
    from tests.bench.runner_helpers import cli
    common = ["--data", "moving-digits", "--split", "val", "--global-batch-size", "4", "--max-steps", "2",
              "--log-every", "2", "--ckpt-every", "2"]
    assert cli("train", "--model", "Latte-Mini/2", *common, "--out", tmp_path / "latte") == 0
    base = tmp_path / "latte" / "checkpoints" / "0000002.pt"
    assert cli("train", "--model", "DyLatte-Mini/2", *common, "--lambda", "0.5", "--init-checkpoint", base,
               "--out", tmp_path / "dy") == 0
    (log,) = [json.loads(line) for line in (tmp_path / "dy" / "log.jsonl").read_text().splitlines()]
    assert 0.9 < log["flops_ratio"] <= 1.0  # fresh routers keep everything at first; the FLOPs loss sees them
    model = load_trained(tmp_path / "dy" / "checkpoints" / "0000002.pt")
    x = torch.zeros(1, FRAMES, 1, 16, 16)
    with torch.no_grad():
        assert model(x, torch.tensor([500]), torch.tensor([3])).shape == (1, FRAMES, 2, 16, 16)
    capsys.readouterr()
    assert cli("train", "--model", "Latte-Mini/2", "--data", "digits", "--split", "val", "--max-steps", "1",
               "--out", tmp_path / "bad") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "takes clips" in err, err


def test_bench_sample_writes_dylatte_clips_and_an_animated_preview(tmp_path, capsys):
    from PIL import Image

    from tests.bench.runner_helpers import cli
    out = tmp_path / "clips"
    assert cli("sample", "--model", "DyLatte-Mini/2", "--random-weights", "--sampler", "ddim", "--steps", "2",
               "--num-samples", "3", "--batch-size", "2", "--out", out, "--no-progress") == 0
    with np.load(out / "samples.npz") as f:
        clips, labels = f["arr_0"], f["arr_1"]
    assert clips.shape == (3, FRAMES, 16, 16, 1) and clips.dtype == np.uint8 and labels.max() < NUM_CLASSES
    gif = Image.open(out / "samples.gif")
    assert gif.n_frames == FRAMES and gif.size == (2 * 16 * 4, 2 * 16 * 4)  # a 2 x 2 grid, 4x upscaled
    assert "clips of 8 frames" in capsys.readouterr().out


def test_the_video_scores_read_real_clips_back_and_catch_clips_that_do_not_move_as_told():
    from bench.metrics.digits import ClassifierConfig
    from bench.mini import evaluate_video as ev
    val = moving_digits("val")
    classifier = ev.frame_classifier(moving_digits("train"), ClassifierConfig(epochs=2))
    real = ev.to_uint8(val.clips)
    reference = ev.clip_features(real[:250], classifier)
    own = ev.scores(real[250:], val.classes[250:], classifier, reference)
    assert set(own) == set(ev.KEYS) and own["motion"] == 1.0  # real clips move as their class says
    assert own["frame_accuracy"] > 0.85 and own["consistency"] > 0.7
    backwards = ev.scores(real[250:, ::-1].copy(), val.classes[250:], classifier, reference)  # time reversed
    assert backwards["motion"] == 0.0 and backwards["frame_accuracy"] == own["frame_accuracy"]
    # the four directions are equally likely, so reversal keeps the clips' distribution: FVD cannot see it (the
    # motion check can); a clip that stands still is far from every real one
    static = np.repeat(real[250:, :1], real.shape[1], axis=1)
    assert ev.scores(static, val.classes[250:], classifier, reference)["mini_fvd"] > 5 * own["mini_fvd"]
