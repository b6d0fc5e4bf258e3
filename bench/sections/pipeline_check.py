"""Pipeline check (smoke profile): the generation and evaluation pipeline end to end, on CPU, in about a minute.

A small random-weight DiT (learned sigma) and a tiny random VAE run every sampler for a few steps;
`python -m bench sample` runs under torchrun with 2 CPU ranks (gloo) and its images are compared with
a 1-process run; the metrics are computed with a locally generated random-weight Inception file loaded
through torch-fidelity's real loading code (feature_extractor_weights_path), against an ADM-format
reference batch written here. The numbers show that the pipeline runs and is consistent; they are
NOT comparable with the paper's (random weights, a few images), and the report never compares them.
"""
import contextlib
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch_fidelity.metric_fid import fid_features_to_statistics

TITLE = "Pipeline check (random weights — not comparable with the paper)"
MODEL, LATENT, STEPS, CFG = "DiT-S/8", 8, 4, 1.5
FLOW_MODEL = "SiT-S/8"  # the flow samplers' velocity model: MODEL's backbone without learned sigma
NUM, BATCH = 16, 4
BACKENDS_AGREE = 1e-6  # relative: measured 9.6e-11 on this CPU


def write_random_inception(path, seed=0):
    """Writes a random-weight state dict of torch-fidelity's Inception-v3 (its exact keys and shapes)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Fresh(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the fresh initialisation: this builds the file the real loader will read

    path = Path(path)
    placeholder = path.with_name(path.name + ".empty")
    torch.save({}, placeholder)
    torch.manual_seed(seed)
    net = Fresh("random", ["2048"], feature_extractor_weights_path=str(placeholder))
    placeholder.unlink()
    for m in net.modules():  # variance-preserving convs, so activations neither vanish nor explode
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


def _spec(seed, num=NUM):
    from bench.sample import SampleSpec
    from dydit.sampling import RANDOM_VAE
    return SampleSpec(model=MODEL, num=num, sampler="ddpm", steps=STEPS, cfg_scale=CFG, seed=seed, batch_size=BATCH,
                      random_weights=True, vae=RANDOM_VAE, latent_size=LATENT)


def check(name, value, unit, ok, expected):
    """One judged row of the section: the runner passes the section only if every row is ok."""
    return {"name": name, "value": value, "unit": unit, "ok": bool(ok), "expected": expected}


def sampler_rows(device="cpu", steps=STEPS):
    """Each sampler a few steps on the random learned-sigma model with CFG: s/image; ok = finite latents."""
    from dydit import sampling
    from dydit.models import randomize_
    from dydit.registry import create_model
    model = randomize_(create_model(MODEL, input_size=LATENT), std=0.01).eval().to(device)
    velocity = randomize_(create_model(FLOW_MODEL, input_size=LATENT), std=0.01).eval().to(device)
    rows = []
    for name in sampling.SAMPLERS:
        flow = name in sampling.FLOW_SAMPLERS  # a velocity model (SiT: no learned sigma)
        label = (f"{name} ({steps} steps, CFG {CFG}, {'SiT velocity' if flow else 'learned sigma'}): runs, finite "
                 f"latents; {torch.device(device).type.upper()} s/image")
        noise, generators = sampling.noise_for(range(BATCH), 0, (4, LATENT, LATENT))
        labels = sampling.labels_for(range(BATCH), 0).to(device)
        start = time.perf_counter()
        try:
            z = sampling.sample_latents(velocity if flow else model, name, noise.to(device), labels, steps,
                                        generators, CFG)
        except Exception as e:  # a failing sampler fails the check; the others still run
            rows.append(check(f"{label} — {type(e).__name__}: {e}", None, "s/image", False, "runs"))
            continue
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        seconds = (time.perf_counter() - start) / BATCH
        rows.append(check(label, seconds, "s/image", torch.isfinite(z).all(), "finite"))
    return rows


def sample_two_ranks(out):
    """`python -m bench sample` under torchrun, 2 CPU ranks (gloo); returns the samples.npz path."""
    spec = _spec(0)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "bench",
           "sample", "--model", MODEL, "--latent-size", str(LATENT), "--random-weights", "--vae", spec.vae,
           "--sampler", "ddpm", "--steps", str(STEPS), "--cfg-scale", str(CFG), "--num-samples", str(NUM),
           "--batch-size", str(BATCH), "--seed", "0", "--device", "cpu", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 ranks on 2 cores; also makes CPU results bit-stable
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun sampling failed ({done.returncode}): {done.stderr[-2000:]}")
    return Path(out) / "samples.npz"


def rank_check(two_ranks, one_process):
    """The 2-rank images must equal the 1-process ones exactly (noise and label come from each index)."""
    same_shape = two_ranks.shape == one_process.shape
    diff = float(np.abs(two_ranks.astype(int) - one_process.astype(int)).max()) if same_shape else float("inf")
    return check(f"images from 2 ranks (torchrun, gloo) vs 1 process: max |difference| over {len(one_process)}",
                 diff, "pixel levels", diff == 0, "0 (each image's noise and label come from its index)")


def write_reference(path, images, features):
    """An ADM-format reference batch: arr_0 images plus mu/sigma and mu_s/sigma_s of their features."""
    from bench.metrics import fidelity
    stats = fidelity.statistics(features)
    np.savez(path, arr_0=images, mu=stats["fid"]["mu"], sigma=stats["fid"]["sigma"],
             mu_s=stats["sfid"]["mu"], sigma_s=stats["sfid"]["sigma"])
    return path


def run(suite_run):
    """-> {"title", "note", "rows": [{"name", "value", "unit"}]} for the report's pipeline-check section."""
    ctx = suite_run.ctx
    work = Path(ctx.work_dir or "artifacts") / "pipeline_check"
    work.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # contended 2-core CI machines run small ops far faster on one thread
    start, timings = time.perf_counter(), {}
    with contextlib.ExitStack() as stack:
        try:  # likewise BLAS (FID's 2048 x 2048 eigenvalues), where threadpoolctl is installed
            from threadpoolctl import threadpool_limits
            stack.enter_context(threadpool_limits(1))
        except ImportError:
            pass
        try:
            rows, inception_sha = _checks(ctx, work, timings)
        finally:
            torch.set_num_threads(threads)
    total = time.perf_counter() - start
    note = (f"Random-weight {MODEL} (latent {LATENT}, learned sigma), tiny random VAE, random Inception-v3 "
            f"(sha256 {inception_sha[:12]}…, loaded by torch-fidelity from feature_extractor_weights_path); "
            f"{NUM} images per set, {STEPS} steps. Checks that every sampler runs, that 2 ranks give the same "
            f"images as 1 process, and that the metrics compute; the values mean nothing about image quality "
            f"and are never compared with the paper. Time: {total:.0f} s ("
            + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()) + ").")
    return {"title": TITLE, "note": note, "rows": rows}


def _checks(ctx, work, timings):
    """(report rows, sha256 of the random Inception file); timings[stage] = seconds."""
    from bench import sample
    from dydit.fileio import sha256_file
    from bench.metrics import cleanfid, fidelity, sfid
    from bench.metrics.reference import load_images, load_reference
    start = time.perf_counter()
    rows = sampler_rows()
    timings["samplers"] = time.perf_counter() - start

    t = time.perf_counter()
    for stale in ("two_ranks", "one_process", "reference"):  # every check starts from nothing
        for f in sorted((work / stale).glob("**/*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
    two = load_images(sample_two_ranks(work / "two_ranks"))
    timings["torchrun"] = time.perf_counter() - t
    one = load_images(sample.run(_spec(0), work / "one_process", device="cpu", progress=False))
    ref_images = load_images(sample.run(_spec(1), work / "reference", device="cpu", progress=False))
    rows.append(rank_check(two, one))

    t = time.perf_counter()
    weights = write_random_inception(work / "random-inception.pth", seed=ctx.seed)
    extractor = sfid.InceptionV3WithSpatial("inception-v3-compat", list(fidelity.FEATURES) + ["64"],
                                            feature_extractor_weights_path=str(weights))
    features = fidelity.extract_features(two, extractor, batch_size=NUM)
    ref_features = fidelity.extract_features(ref_images, extractor, batch_size=NUM)
    reference = load_reference(write_reference(work / "reference.npz", ref_images, ref_features))
    results = fidelity.evaluate(features, ref_features, reference.stats)
    timings["metrics"] = time.perf_counter() - t
    for key, label in ((fidelity.KEY_FID, "FID"), (fidelity.KEY_SFID, "sFID"), (fidelity.KEY_IS, "Inception Score"),
                       (fidelity.KEY_PRECISION, "precision"), (fidelity.KEY_RECALL, "recall"),
                       (fidelity.KEY_KID, "KID")):
        value = float(results[key])
        rows.append(check(f"{label} ({results[fidelity.KEY_BACKENDS][key]})", value, "", math.isfinite(value),
                          "finite"))
    # two FID backends on the same features: torch-fidelity (eigenvalues) vs clean-fid (scipy sqrtm), on the
    # 64-d block features, small enough that sqrtm stays real with 16 samples
    f64, r64 = features["64"].double(), ref_features["64"].double()
    ours = fidelity.fid(fid_features_to_statistics(f64), fid_features_to_statistics(r64))
    theirs = cleanfid.fid_from_features(f64.numpy(), r64.numpy())
    rows.append(check("FID on 64-d block features: torch-fidelity", ours, "", math.isfinite(ours), "finite"))
    rows.append(check("FID on 64-d block features: clean-fid (same features)", theirs, "", math.isfinite(theirs),
                      "finite"))
    relative = abs(ours - theirs) / max(abs(ours), 1e-12)
    rows.append(check("relative difference of the two FID backends", relative, "", relative < BACKENDS_AGREE,
                      f"< {BACKENDS_AGREE:g} (eigenvalues vs sqrtm on the same statistics)"))
    return rows, sha256_file(weights)
