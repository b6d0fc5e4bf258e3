"""bench/metrics/fvd.py: FVD is the Fréchet distance of the clip features' Gaussians."""
import numpy as np
import pytest
from scipy import linalg

from bench.metrics.fvd import fvd_from_features


def frechet(a, b):
    """The formula: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def test_fvd_is_the_frechet_formula_on_clip_features():
    g = np.random.default_rng(0)
    real = g.normal(size=(300, 16))
    fake = g.normal(loc=0.3, scale=1.2, size=(250, 16))
    assert fvd_from_features(fake, real) == pytest.approx(frechet(fake, real), rel=1e-6)
    assert fvd_from_features(real, real) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="not the same network"):
        fvd_from_features(fake[:, :8], real)
    with pytest.raises(ValueError, match="N >= 2"):
        fvd_from_features(fake[:1], real)
