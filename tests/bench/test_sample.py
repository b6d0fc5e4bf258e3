"""Sharded, resumable sampling (bench/sample.py): the same images from 1 process, from 2 torchrun ranks and
from a run killed after its first shard and restarted; the ADM-format result and its checks."""
import hashlib
import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench import sample
from dydit import sampling
from bench.__main__ import main

# 9 images in shards of 2: five shards, the last one short
ARGS = ["--model", "DiT-S/8", "--latent-size", "8", "--random-weights", "--vae", sampling.RANDOM_VAE, "--sampler", "ddpm",
        "--steps", "4", "--num-samples", "9", "--batch-size", "2", "--seed", "3", "--device", "cpu", "--no-progress"]
SPEC = sample.SampleSpec(model="DiT-S/8", num=9, sampler="ddpm", steps=4, seed=3, batch_size=2, random_weights=True,
                         vae=sampling.RANDOM_VAE, latent_size=8)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # every process computes with one thread: bit-identical on CPU


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 9 images from one uninterrupted in-process run."""
    out = tmp_path_factory.mktemp("one")  # one thread, as the subprocesses (tests/conftest.py)
    path = sample.run(SPEC, out, progress=False)
    with np.load(path) as f:
        return {"images": f["arr_0"], "labels": f["arr_1"], "path": path}


def images(path):
    with np.load(path) as f:
        return f["arr_0"]


def test_result_is_an_adm_batch_with_its_sha256(reference):
    assert reference["images"].dtype == np.uint8 and reference["images"].shape == (9, 16, 16, 3)
    assert reference["labels"].tolist() == sample.sampling.labels_for(range(9), 3).tolist()
    digest = hashlib.sha256(reference["path"].read_bytes()).hexdigest()
    assert Path(str(reference["path"]) + ".sha256").read_text().split()[0] == digest
    assert len({im.tobytes() for im in reference["images"]}) == 9  # every image is its own


def test_two_torchrun_ranks_give_the_same_images(reference, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bench",
           "sample", *ARGS, "--out", str(tmp_path)]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(images(tmp_path / sample.SAMPLES_FILE), reference["images"])
    assert (tmp_path / sample.SAMPLES_FILE).read_bytes() == reference["path"].read_bytes()


def test_no_rank_waits_on_rank_0s_assembly_under_a_collective_timeout(tmp_path):
    """Rank 0 assembles for 20 s under a 10 s process-group timeout: rank 1 must not be in a collective."""
    script = Path(__file__).with_name("slow_assembly_run.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path)]
    done = subprocess.run(cmd, env={**ENV, "PYTHONPATH": str(Path(__file__).parents[2])}, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / sample.SAMPLES_FILE).is_file()


def test_a_run_killed_after_its_first_shard_resumes_to_the_same_images(reference, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sample", *ARGS, "--out", str(tmp_path)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = sample.shard_path(tmp_path, 0).parent
    deadline = time.monotonic() + 120
    while not any(first.glob("shard-*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sample.finished_shards(tmp_path, SPEC)
    assert 1 <= len(done) < SPEC.num_shards, f"killed too late or too early: {done}"
    assert not (tmp_path / sample.SAMPLES_FILE).exists()
    assert main(["sample", *ARGS, "--out", str(tmp_path)]) == 0  # the restart
    np.testing.assert_array_equal(images(tmp_path / sample.SAMPLES_FILE), reference["images"])


def test_partial_runs_and_damaged_shards_are_completed_identically(reference, tmp_path):
    assert sample.run(SPEC, tmp_path, max_shards=2, progress=False) is None  # stops early, nothing assembled
    assert sample.finished_shards(tmp_path, SPEC) == [0, 1]
    sample.shard_path(tmp_path, 1).write_bytes(b"torn write")  # a damaged shard is redone, not trusted
    (sample.shard_path(tmp_path, 2).parent / ".shard-000002.npz.tmp-123").write_bytes(b"left by a killed run")
    assert sample.finished_shards(tmp_path, SPEC) == [0]
    path = sample.run(SPEC, tmp_path, progress=False)
    np.testing.assert_array_equal(images(path), reference["images"])


def test_a_complete_folder_is_not_sampled_or_written_again(tmp_path):
    path = sample.run(SPEC, tmp_path, progress=False)
    stamp = path.stat().st_mtime_ns
    assert sample.run(SPEC, tmp_path, progress=False) == path and path.stat().st_mtime_ns == stamp


def test_resuming_with_another_setup_is_refused(tmp_path):
    sample.run(SPEC, tmp_path, max_shards=1, progress=False)
    other = sample.SampleSpec(**{**sample.dataclasses.asdict(SPEC), "cfg_scale": 4.0})
    with pytest.raises(ValueError, match="cfg_scale: 1.5 -> 4.0"):
        sample.run(other, tmp_path, progress=False)


def test_spec_validation_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="unknown sampler"):
        sample.SampleSpec(model="DiT-S/8", num=4, sampler="euler")
    assert sample.SampleSpec(model="DiT-S/8", num=4, sampler="ddim").steps == 50
    no_weights = sample.SampleSpec(model="DiT-S/8", num=2, latent_size=8, batch_size=2)
    with pytest.raises(ValueError, match="--ckpt"):
        sample.run(no_weights, tmp_path, progress=False)


@pytest.mark.parametrize("adapter", ["td-lora", "lora"])
def test_an_adapter_checkpoint_samples_on_its_base(adapter, tmp_path):
    """--ckpt of a LoRA / TD-LoRA run: the adapters on their sha256-checked base, through FastDyDiT."""
    import torch
    from dydit.registry import create_model
    from dydit.checkpoints import load_trained
    from dydit.train import train
    from tests.dydit.test_train import RandomLatents, batch, tiny
    base = tmp_path / "base.pt"
    torch.save(create_model("DyDiT-Mini/2", input_size=8).state_dict(), base)
    run = train(tiny(adapter=adapter, adapter_rank=2, adapter_experts=2, init_checkpoint=str(base), max_steps=2),
                RandomLatents(), tmp_path / "run", progress=False)
    spec = dict(num=1, ckpt=str(run.checkpoint), latent_size=8, num_classes=10)
    fast = sample.build_model_fn(sample.SampleSpec(model="DyDiT-Mini/2", **spec), "cpu")
    masked = load_trained(run.checkpoint, {"input_size": 8})
    x, y, _ = batch(masked)
    t = torch.full((len(x),), 500)  # the fast path runs one timestep per batch
    with torch.no_grad():
        torch.testing.assert_close(fast(x, t, y), masked(x, t, y), rtol=1e-5, atol=1e-5)
    assert type(fast).__name__ == "FastDyDiT"
    with pytest.raises(ValueError, match="adapters of a DyDiT-Mini/2 run, not of DyDiT-S/2"):
        sample.build_model_fn(sample.SampleSpec(model="DyDiT-S/2", **spec), "cpu")


def test_cli_resolves_asset_names_and_says_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DYDIT_ASSETS", raising=False)
    base = ["sample", "--model", "DiT-S/8", "--num-samples", "2", "--out", str(tmp_path / "out")]

    def error(argv):
        assert main(argv) == 2
        return capsys.readouterr().err
    assert re.search("dit-xl-2 .* no assets root; pass --assets DIR", error([*base, "--ckpt", "dit-xl-2"]))
    assert re.search(r"not found: .*nowhere\.pt \(neither a file nor an asset name",
                     error([*base, "--ckpt", str(tmp_path / "nowhere.pt"), "--vae", sampling.RANDOM_VAE]))
    assert re.search("vae-ft-ema .* is missing: put it at", error([*base, "--random-weights", "--assets", str(tmp_path)]))


def test_deepcache_interval_is_part_of_the_run_and_changes_the_images(reference, tmp_path):
    """`bench sample --deepcache-interval 2`: cached steps change the images; the folder records the interval
    and refuses to be resumed without it."""
    assert main(["sample", *ARGS, "--deepcache-interval", "2", "--out", str(tmp_path)]) == 0
    cached = images(tmp_path / "samples.npz")
    assert cached.shape == reference["images"].shape and not np.array_equal(cached, reference["images"])
    assert json.loads((tmp_path / "run.json").read_text())["spec"]["deepcache_interval"] == 2
    with pytest.raises(ValueError, match="deepcache_interval: 2 -> 0"):
        sample.run(SPEC, tmp_path, progress=False)
    with pytest.raises(ValueError, match="deepcache_interval must be >= 0"):
        sample.SampleSpec(model="DiT-S/8", num=2, deepcache_interval=-1)


def test_a_mini_model_samples_its_digits_in_pixel_space(tmp_path, capsys):
    """DiT-Mini and SiT-Mini through `bench sample`: 16 x 16 one-channel digits of 10 classes, no VAE."""
    for model, sampler in (("DiT-Mini/2", "ddim"), ("SiT-Mini/2", "flow-euler")):
        out = tmp_path / model.split("/")[0]
        assert main(["sample", "--model", model, "--random-weights", "--num-samples", "5", "--batch-size", "2",
                     "--steps", "2", "--sampler", sampler, "--out", str(out), "--no-progress"]) == 0
        with np.load(out / "samples.npz") as f:
            assert f["arr_0"].shape == (5, 16, 16, 1) and f["arr_0"].dtype == np.uint8
            assert f["arr_1"].max() < 10


def test_the_text_to_image_mini_samples_canvases_from_prompts(tmp_path, capsys):
    """DyFLUX-Mini through `bench sample` on its fast path: 16 x 32 canvases, image i from prompt i mod count; a
    prompt file works like repeated --prompt; the same prompts and seed give the same canvases."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a thick seven on the left\n\ntwo , thin , right\n", encoding="utf-8")
    common = ["sample", "--model", "DyFLUX-Mini", "--random-weights", "--num-samples", "3", "--batch-size", "2",
              "--steps", "2", "--sampler", "flow-euler", "--no-progress"]
    assert main([*common, "--prompts", str(prompts), "--out", str(tmp_path / "a")]) == 0
    assert "the index of each image's prompt of 2" in capsys.readouterr().out
    assert main([*common, "--prompt", "a thick seven on the left", "--prompt", "two , thin , right",
                 "--out", str(tmp_path / "b")]) == 0
    with np.load(tmp_path / "a" / "samples.npz") as a, np.load(tmp_path / "b" / "samples.npz") as b:
        assert a["arr_0"].shape == (3, 16, 32, 1) and a["arr_1"].tolist() == [0, 1, 0]
        assert np.array_equal(a["arr_0"], b["arr_0"])


def test_an_interrupted_sampling_says_what_is_kept_and_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(spec, out, **kwargs):
        sample.write_shard(out, 0, np.zeros((2, 8, 8, 3), np.uint8), np.zeros(2, np.int64), range(2))
        raise KeyboardInterrupt
    monkeypatch.setattr(sample, "run", interrupted)
    assert main(["sample", *ARGS, "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert f"1/5 shards are on disk under {tmp_path / 'shards'}" in err and "run the same command again" in err
