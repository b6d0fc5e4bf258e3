"""The suite measurements of this pipeline: quality (sample once, evaluate once, five metrics) and s/image,
and their Skip reasons. Assets are small local stand-ins listed in a test manifest."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from bench import assets, sample
from bench.measure import latency, quality
from bench.measure.base import Context, Skip
from bench.metrics import fidelity
from bench.sections.pipeline_check import write_random_inception
from dydit.sampling import SamplerSpec
from tests.bench.runner_helpers import item
from dydit.models import randomize_
from dydit.registry import create_model
from dydit.sampling import random_vae

# the cell a measurement receives: its sampler fully resolved, as a suite gives it
SAMPLER = SamplerSpec(name="ddim", steps=3, cfg_scale=1.5, num_samples=6, batch_size=3)


def cell(metric="fid", **sampler):
    """The Tiny DiT row's cell of `metric`, its sampler changed by `sampler`."""
    it = item("DiT-S/8", metric, "tiny-ckpt", name="Tiny DiT", sampler=dataclasses.replace(SAMPLER, **sampler),
              column="fid")
    return dataclasses.replace(it, cell=dataclasses.replace(it.cell, fid_reference="tiny-ref"))


def measure(module, it, ctx):
    """One cell measured as the runner would (a group of one); an exception outcome is raised."""
    out = module.MEASUREMENT(ctx).measure_group([it], ctx)[it.key]
    if isinstance(out, Exception):
        raise out
    return out
MANIFEST = """
[assets.tiny-ckpt]
files = [{ path = "ckpt.pt" }]
source = "test"
[assets.vae-ft-ema]
files = [{ path = "vae/diffusion_pytorch_model.safetensors" }]
source = "test"
[assets.inception-fidelity]
files = [{ path = "inception.pth" }]
source = "test"
[assets.tiny-ref]
files = [{ path = "ref.npz" }]
source = "test"
"""


@pytest.fixture(scope="module")
def asset_files(tmp_path_factory):
    """An assets root with a random DiT-S/8 checkpoint, a tiny VAE, a random Inception and an ADM-format batch."""
    root = tmp_path_factory.mktemp("assets")
    torch.save(randomize_(create_model("DiT-S/8"), std=0.01).state_dict(), root / "ckpt.pt")
    random_vae().save_pretrained(root / "vae")
    write_random_inception(root / "inception.pth")
    # an ADM-format reference batch: images plus their FID and sFID statistics (mu/sigma, mu_s/sigma_s)
    images = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    stats = fidelity.statistics(fidelity.extract_features(images, fidelity.inception(root / "inception.pth")))
    np.savez(root / "ref.npz", arr_0=images, mu=stats["fid"]["mu"], sigma=stats["fid"]["sigma"],
             mu_s=stats["sfid"]["mu"], sigma_s=stats["sfid"]["sigma"])
    (root / "assets.toml").write_text(MANIFEST)
    return root


@pytest.fixture
def root(asset_files, monkeypatch):
    """The assets root, with bench.assets reading the test manifest."""
    manifest = assets.load_manifest(asset_files / "assets.toml")
    monkeypatch.setattr(assets, "load_manifest", lambda path=None: manifest)
    return asset_files


def test_five_quality_cells_sample_and_evaluate_once(root, tmp_path, monkeypatch):
    runs = []
    real_run = sample.run
    monkeypatch.setattr(sample, "run", lambda *a, **k: runs.append(a) or real_run(*a, **k, progress=False))
    ctx = Context(profile="full", device="cpu", assets_root=root, work_dir=tmp_path / "work")
    items = [dataclasses.replace(cell(m), cell=dataclasses.replace(cell(m).cell, column=m))
             for m in ("fid", "sfid", "is", "precision", "recall")]
    out = quality.MEASUREMENT(ctx).measure_group(items, ctx)  # one group: sampled and evaluated once
    values = {it.metric: out[it.key] for it in items}
    assert len(runs) == 1 and all(np.isfinite(v) for v in values.values())
    assert 0 <= values["precision"] <= 1 and 0 <= values["recall"] <= 1 and values["is"] >= 1
    out = quality.samples_dir("Tiny DiT", runs[0][0], ctx)
    saved = json.loads((out / quality.METRICS_FILE).read_text())
    assert saved["fid"] == values["fid"] and "torch-fidelity" in saved["backends"]["fid"]
    for key in ("fid", "sfid"):  # FID and sFID against the batch's own statistics, as ADM's evaluator
        assert saved["backends"][key].endswith("vs ADM reference statistics")
    assert saved["samples"]["spec"]["num"] == 6 and saved["samples"]["spec"]["labels"] == "uniform"
    # a new run (fresh cache) reads the saved metrics instead of sampling again
    again = Context(profile="full", device="cpu", assets_root=root, work_dir=tmp_path / "work")
    assert measure(quality, cell("sfid"), again) == values["sfid"] and len(runs) == 1


def test_saved_metrics_are_reused_only_for_the_same_samples_inception_and_spec(root, tmp_path, monkeypatch):
    evaluations = []
    real = quality.evaluate_samples
    monkeypatch.setattr(quality, "evaluate_samples", lambda *a, **k: evaluations.append(a) or real(*a, **k))
    monkeypatch.setattr(sample, "run", lambda *a, _run=sample.run, **k: _run(*a, **k, progress=False))
    fid = lambda: measure(quality, cell(), Context(profile="full", device="cpu", assets_root=root,  # noqa: E731
                                                   work_dir=tmp_path / "work"))
    first = fid()
    assert fid() == first and len(evaluations) == 1  # same everything: metrics.json reused
    # another Inception file (new weights, same name): recomputed, reference features not reused
    write_random_inception(root / "inception.pth", seed=1)
    second = fid()
    assert len(evaluations) == 2 and second != first
    features = sorted((tmp_path / "work" / "samples").glob("reference-features-*.pt"))
    assert len(features) == 2  # one cache entry per Inception file
    # metrics.json recorded with another sampling spec: recomputed, not trusted
    metrics_file = next((tmp_path / "work" / "samples").glob(f"*/{quality.METRICS_FILE}"))
    saved = json.loads(metrics_file.read_text())
    saved["samples"]["spec"]["batch_size"] = 99
    metrics_file.write_text(json.dumps(saved))
    assert fid() == second and len(evaluations) == 3
    # samples.npz replaced (run.json records another sha256): recomputed
    run_json = metrics_file.parent / sample.CONFIG_FILE
    config = json.loads(run_json.read_text())
    config["result"]["sha256"] = "0" * 64
    run_json.write_text(json.dumps(config))
    fid()
    assert len(evaluations) == 4
    write_random_inception(root / "inception.pth")  # the module's assets as they were


def test_evaluate_command_prints_every_metric_as_json(root, tmp_path, capsys):
    from bench.cli import main
    samples = tmp_path / "samples.npz"
    np.savez(samples, arr_0=np.random.default_rng(1).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8))
    assert main(["evaluate", str(samples), "--ref", str(root / "ref.npz"), "--inception", str(root / "inception.pth"),
                 "--cleanfid-inception", "none", "--cache-dir", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    for key in ("fid", "sfid", "is", "precision", "recall", "kid"):
        assert np.isfinite(printed[key]), key
    assert printed["backends"]["fid"].endswith("vs ADM reference statistics")
    assert printed["evaluation"]["inception_sha256"] == assets.sha256_file(root / "inception.pth")
    assert main(["evaluate", str(samples), "--ref", str(root / "ref.npz"), "--inception", str(tmp_path / "none.pth")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_quality_skips_say_what_is_missing(root, tmp_path):
    ctx = Context(profile="full", device="cpu", assets_root=root, work_dir=tmp_path)
    with pytest.raises(Skip, match="full profile"):
        measure(quality, cell(), Context(profile="smoke", assets_root=root))
    (root / "inception.pth").unlink()
    with pytest.raises(Skip, match="inception-fidelity.*is missing: put it at .*inception.pth"):
        measure(quality, cell(), ctx)
    write_random_inception(root / "inception.pth")
    with pytest.raises(Skip, match="needs a CUDA device"):
        measure(quality, cell(num_samples=50000), ctx)
    with pytest.raises(ValueError, match="unknown sampler 'sit-sde'"):  # checked where a sampler spec is made
        SamplerSpec(name="sit-sde")


def test_latency_needs_cuda_and_names_its_metric():
    with pytest.raises(Skip, match="needs a CUDA device"):
        measure(latency, cell("s_per_image"), Context(device="cpu"))
    with pytest.raises(ValueError, match="s_per_image"):
        measure(latency, cell("fid"), Context(device="cpu"))


def test_latency_times_a_sampling_run(root, monkeypatch):
    """The timing itself, on CPU (measure() refuses CPU for the suite; the function does not care)."""
    out = latency.seconds_per_image(cell("s_per_image", steps=2, batch_size=2), Context(device="cpu", assets_root=root))
    assert out["s_per_image"] > 0 and out["vae_s_per_image"] > 0 and len(out["seconds"]) == latency.REPEATS
    assert out["batch_size"] == 2 and out["cfg_batched"] and out["precision"] == "tf32"
