"""sFID (Nash et al. 2021) as the ADM evaluator defines it, on torch-fidelity's Inception-v3.

ADM's evaluator (openai/guided-diffusion evaluations/evaluator.py) takes the TF graph tensor
`mixed_6/conv:0`, keeps its first 7 channels (`spatial[..., :7]`), flattens each image's NHWC map to
17 * 17 * 7 = 2023 values, and computes the Frechet distance of their mean/covariance.

Which tensor that is: torch-fidelity's own weight converter (utils/util_convert_inception_weights.py)
maps TF `mixed_6/conv/{conv2d_params,batchnorm}` to `Mixed_6d.branch1x1.{conv,bn}`: the 1x1 branch of
the third 17x17 Inception block (768 -> 192 channels), not the block's 768-channel output. `mixed_6/conv`
is the op that ends that scope, i.e. after batch norm and ReLU, which is what torch-fidelity's
BasicConv2d returns. We hook that module's output, keep channels 0..6, and flatten in NHWC order (H, W,
C) so the 2023 coordinates line up with ADM's precomputed mu_s/sigma_s. Where we may still differ from
ADM's TF graph: the resize to 299 (torch-fidelity replicates TF1 bilinear, not bit-exactly) and float
arithmetic; the same caveats as FID, so sFID is recorded with its backend like every metric.
"""
import numpy as np
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

SPATIAL = "mixed_6/conv"  # feature name, as the ADM evaluator calls the tensor
SPATIAL_CHANNELS = 7
SPATIAL_DIM = 17 * 17 * SPATIAL_CHANNELS  # 2023
_BEFORE_MIXED_6D = ("64", "192")  # torch-fidelity features that end before the hooked module


class InceptionV3WithSpatial(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception-v3 (its weights, loading and resizing) plus the sFID spatial feature."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list, **kwargs)
        self._spatial = None
        self.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

    def _keep_spatial(self, module, inputs, output):
        # (N, 192, 17, 17) -> first 7 channels -> NHWC -> (N, 2023), as ADM's spatial[..., :7].reshape
        self._spatial = output[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(len(output), -1).float()

    @staticmethod
    def get_provided_features_list():
        return FeatureExtractorInceptionV3.get_provided_features_list() + (SPATIAL,)

    def forward(self, x):
        requested = self.features_list
        # the parent returns early after the last feature it was asked for: if only features before
        # Mixed_6d ("64", "192") are requested, it must still run to "768" for the hook to fire
        computed = [f for f in requested if f != SPATIAL]
        if SPATIAL in requested and not set(computed) - set(_BEFORE_MIXED_6D):
            computed.append("768")
        self._spatial = None  # never hand back the previous batch's features
        self.features_list = computed
        try:
            features = dict(zip(computed, super().forward(x)))
        finally:
            self.features_list = requested
        if SPATIAL in requested:
            if self._spatial is None:
                raise RuntimeError("the mixed_6/conv hook did not fire: Mixed_6d was not run")
            features[SPATIAL] = self._spatial
        return tuple(features[f] for f in requested)


def spatial_statistics(features):
    """{"mu", "sigma"} (float64) of (N, 2023) spatial features, by torch-fidelity's FID statistics."""
    return fid_features_to_statistics(torch.as_tensor(features).double())


def sfid(features_or_stats, reference_stats):
    """sFID of generated spatial features (or their statistics) against reference {"mu", "sigma"}."""
    stats = (features_or_stats if isinstance(features_or_stats, dict)
             else spatial_statistics(features_or_stats))
    ref = {k: np.asarray(reference_stats[k], dtype=np.float64) for k in ("mu", "sigma")}
    if ref["mu"].shape != (SPATIAL_DIM,):
        raise ValueError(f"sFID reference statistics have {ref['mu'].shape[0]} dims, expected {SPATIAL_DIM} "
                         f"(17 x 17 x {SPATIAL_CHANNELS} of mixed_6/conv)")
    # the Frechet distance itself is torch-fidelity's (the one FID uses)
    return fid_statistics_to_metric(stats, ref, verbose=False)[KEY_METRIC_FID]
