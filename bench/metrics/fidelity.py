"""FID, Inception Score, KID and precision/recall through torch-fidelity, plus sFID, from one Inception pass.

One pass of torch-fidelity's Inception-v3 ("inception-v3-compat", a port of the TF graph the ADM
evaluator uses) gives the pool features (2048-d: FID, KID, precision/recall), the unbiased logits (IS)
and the mixed_6/conv spatial features (sFID, see sfid.py). Metrics come from torch-fidelity's
feature-level functions. Against an ADM reference batch, FID/sFID use its precomputed mu/sigma and
mu_s/sigma_s; precision/recall (and KID) use its images' features, as ADM's evaluator does.
"""
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
from torch_fidelity.utils import get_featuresdict_from_dataset

from bench.metrics import sfid as sfid_
from bench.metrics.reference import ImageArrayDataset
from dydit import weights

# result keys
KEY_FID = "fid"
KEY_SFID = "sfid"
KEY_IS = "is"
KEY_IS_STD = "is_std"
KEY_PRECISION = "precision"
KEY_RECALL = "recall"
KEY_KID = "kid"
KEY_KID_STD = "kid_std"
KEY_BACKENDS = "backends"  # metric key -> the backend that produced it

POOL = "2048"
LOGITS = "logits_unbiased"  # ADM's IS uses pool_3 @ softmax weights without the bias
FEATURES = (POOL, LOGITS, sfid_.SPATIAL)
IS_SPLIT_SIZE = 5000  # ADM: consecutive splits of 5000 samples, no shuffling
PRC_NEIGHBORHOOD = 3  # k of the k-NN manifolds (Kynkaanniemi et al., ADM's evaluator)
MIN_IMAGES = PRC_NEIGHBORHOOD + 1  # per batch: a point's k nearest others must exist
BACKEND = f"torch-fidelity {torch_fidelity.__version__} inception-v3-compat"


def inception(weights_path, device="cpu"):
    """torch-fidelity's Inception-v3 with the sFID hook, weights from a local file (never downloaded).

    torch-fidelity would unpickle the file it is given (torch.load, weights_only=False). The user's file is read
    here by dydit.weights.read (no pickled code runs: a crafted file is refused with one line) and its tensors
    re-saved to a private temporary file, which alone the library opens."""
    state = weights.read(weights_path)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise weights.CheckpointError(f"{weights_path}: not an Inception-v3 state dict (a dict of tensors): give "
                                      f"torch-fidelity's weights-inception-2015-12-05-6726825d.pth")
    with tempfile.TemporaryDirectory(prefix="dydit-inception-") as folder:
        plain = Path(folder) / "inception.pt"
        torch.save({k: v.contiguous() for k, v in state.items()}, plain)  # tensors only: we wrote every byte
        try:
            model = sfid_.InceptionV3WithSpatial("inception-v3-compat", list(FEATURES),
                                                 feature_extractor_weights_path=str(plain))
        except RuntimeError as e:  # load_state_dict: missing or unexpected keys, wrong shapes
            first = str(e).strip().splitlines()[0]
            raise weights.CheckpointError(f"{weights_path}: not torch-fidelity's Inception-v3 weights ({first}): "
                                          f"give weights-inception-2015-12-05-6726825d.pth") from None
    return model.to(device)


def extract_features(images, extractor, batch_size=100, verbose=False):
    """{feature name: (N, D) float tensor} of uint8 images (N, H, W, 3), by torch-fidelity's batching loop."""
    cuda = next(extractor.parameters()).is_cuda
    # save_cpu_ram=True: no DataLoader worker processes (the images are already in memory)
    return get_featuresdict_from_dataset(ImageArrayDataset(images), extractor, batch_size, cuda, True, verbose)


def statistics(features):
    """{"fid": {"mu", "sigma"}, "sfid": {"mu", "sigma"}} in float64 (ADM stores float64 statistics)."""
    return {KEY_FID: fid_features_to_statistics(features[POOL].double()),
            KEY_SFID: sfid_.spatial_statistics(features[sfid_.SPATIAL])}


def fid(stats, reference_stats):
    """Frechet distance between two {"mu", "sigma"} (torch-fidelity's implementation)."""
    ref = {k: np.asarray(reference_stats[k], dtype=np.float64) for k in ("mu", "sigma")}
    return fid_statistics_to_metric(stats, ref, verbose=False)[KEY_METRIC_FID]


def inception_score(logits):
    """IS (mean, std) over consecutive splits of 5000 samples, unshuffled, as ADM computes it."""
    splits = max(1, math.ceil(len(logits) / IS_SPLIT_SIZE))
    out = isc_features_to_metric(logits, splits=splits, shuffle=False)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


def precision_recall(features, reference_features):
    """(precision, recall): generated inside the real k-NN manifold, and real inside the generated one."""
    # torch-fidelity's convention: features_1 = generated, features_2 = real
    out = prc_features_to_metric(features, reference_features, prc_neighborhood=PRC_NEIGHBORHOOD,
                                 prc_batch_size=10000, save_cpu_ram=True, verbose=False)
    return out[KEY_METRIC_PRECISION], out[KEY_METRIC_RECALL]


def kid(features, reference_features, seed=2020):
    """KID (mean, std) with the usual 100 subsets of min(1000, N) samples."""
    size = min(1000, len(features), len(reference_features))
    out = kid_features_to_metric(features, reference_features, kid_subsets=100, kid_subset_size=size,
                                 verbose=False, rng_seed=seed)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def evaluate(features, reference_features, reference_stats=None):
    """All metrics of generated features against a reference (its features, and ADM statistics if given).

    reference_stats: {"fid": {"mu", "sigma"}, "sfid": {...}} precomputed (ADM); otherwise they are
    computed from reference_features. Returns {key: value, ..., "backends": {key: backend}}.
    """
    stats = statistics(features)
    ref_stats = {**statistics(reference_features), **(reference_stats or {})}
    is_mean, is_std = inception_score(features[LOGITS])
    precision, recall = precision_recall(features[POOL], reference_features[POOL])
    kid_mean, kid_std = kid(features[POOL], reference_features[POOL])
    given = set(reference_stats or {})
    source = {k: "ADM reference statistics" if k in given else "reference images" for k in (KEY_FID, KEY_SFID)}
    results = {
        KEY_FID: fid(stats[KEY_FID], ref_stats[KEY_FID]),
        KEY_SFID: sfid_.sfid(stats[KEY_SFID], ref_stats[KEY_SFID]),
        KEY_IS: is_mean, KEY_IS_STD: is_std,
        KEY_PRECISION: precision, KEY_RECALL: recall,
        KEY_KID: kid_mean, KEY_KID_STD: kid_std,
    }
    results[KEY_BACKENDS] = {
        KEY_FID: f"{BACKEND} pool 2048, vs {source[KEY_FID]}",
        KEY_SFID: f"{BACKEND} Mixed_6d.branch1x1[:7] (ADM mixed_6/conv), vs {source[KEY_SFID]}",
        KEY_IS: f"{BACKEND} logits_unbiased, splits of {IS_SPLIT_SIZE}",
        KEY_PRECISION: f"{BACKEND} pool 2048, k={PRC_NEIGHBORHOOD}, vs reference images",
        KEY_RECALL: f"{BACKEND} pool 2048, k={PRC_NEIGHBORHOOD}, vs reference images",
        KEY_KID: f"{BACKEND} pool 2048, vs reference images",
    }
    return results
