"""Evaluation of one ADM-format sample batch against a reference: every metric from one Inception pass.

What `python -m bench evaluate` and the suite's quality cells both call. The reference's Inception
features are computed once and cached; the cache key is everything that decides them: the reference
file's sha256, the Inception weights' sha256, torch-fidelity's version and the feature list. Each
result records that key (`evaluation`), so a metrics file can be checked against the assets it
would be recomputed with.
"""
import hashlib
import json
from pathlib import Path

import torch
import torch_fidelity

from bench.assets import cached_sha256
from bench.metrics import fidelity
from dydit import weights
from bench.metrics.reference import BatchError, load_images, load_reference

KEY_EVALUATION = "evaluation"  # result key: what the numbers were computed with


def _fingerprint(path, cache_dir):
    """sha256 of a reference file (cached by size and mtime), or of a folder's names, sizes and mtimes."""
    path = Path(path)
    if path.is_dir():
        listing = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in sorted(path.rglob("*")) if p.is_file()]
        return "folder:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return cached_sha256(path, cache_dir or path.parent)


def evaluation_key(reference_path, inception_path, cache_dir=None) -> dict:
    """What the reference features (and so every metric) depend on."""
    return {"reference": str(reference_path), "reference_sha256": _fingerprint(reference_path, cache_dir),
            "inception_sha256": cached_sha256(inception_path, cache_dir or Path(inception_path).parent),
            "torch_fidelity": torch_fidelity.__version__, "features": list(fidelity.FEATURES)}


def _features_file(key, cache_dir):
    digest = hashlib.sha256(json.dumps({k: v for k, v in key.items() if k != "reference"},
                                       sort_keys=True).encode()).hexdigest()
    return Path(cache_dir) / f"reference-features-{digest[:16]}.pt"


def _enough(images, path):
    """BatchError unless a batch has the images every metric needs."""
    if len(images) < fidelity.MIN_IMAGES:
        raise BatchError(f"{path}: {len(images)} image(s); the metrics need at least {fidelity.MIN_IMAGES} (k-NN "
                         f"precision/recall, covariances; the paper's FID uses 50,000)")


def evaluate_samples(samples_path, reference_path, inception_path, device="cpu", cleanfid_path=None,
                     cache_dir=None, verbose=True):
    """Metrics of an ADM-format sample batch against a reference (ADM batch or a folder of real images).

    Returns {fid, sfid, is, is_std, precision, recall, kid, kid_std, [fid_cleanfid], backends, evaluation}.
    """
    from dydit.sampling import precision
    reference = load_reference(reference_path)
    images = load_images(samples_path)
    _enough(images, samples_path)
    key = evaluation_key(reference_path, inception_path, cache_dir)
    cached = _features_file(key, cache_dir) if cache_dir else None
    with precision("fp32"):  # Inception in full fp32, as the TF evaluator (sampling may have used TF32)
        extractor = fidelity.inception(inception_path, device)
        features = fidelity.extract_features(images, extractor, verbose=verbose)
        if cached is not None and cached.is_file():
            ref_features = weights.read(cached)
        else:
            _enough(reference.images, reference_path)
            ref_features = fidelity.extract_features(reference.images, extractor, verbose=verbose)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.save(ref_features, cached)
        results = fidelity.evaluate(features, ref_features, reference.stats)
        if cleanfid_path is not None:  # the second FID backend: clean-fid's own resize and Inception
            from bench.metrics import cleanfid
            model = cleanfid.inception(cleanfid_path, device)
            results[cleanfid.KEY_FID_CLEANFID] = cleanfid.fid_from_features(
                cleanfid.extract_features(images, model, device=device),
                cleanfid.extract_features(reference.images, model, device=device))
            results[fidelity.KEY_BACKENDS][cleanfid.KEY_FID_CLEANFID] = f"{cleanfid.BACKEND}, vs reference images"
            key["cleanfid_inception_sha256"] = cached_sha256(cleanfid_path, cache_dir or Path(cleanfid_path).parent)
    results[KEY_EVALUATION] = key
    return results
