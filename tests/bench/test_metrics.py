"""Metrics (bench/metrics): sFID's spatial features and distance, FID across backends, IS/PR conventions,
and clear errors for bad image batches. A random-weight Inception file goes through torch-fidelity's loader."""
import zipfile

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics

from bench.metrics import cleanfid, fidelity, sfid
from bench.metrics.reference import BatchError, check_images_header, load_images, load_reference
from bench.sections.pipeline_check import write_random_inception

pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")  # clean-fid


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """FID's 2048 x 2048 eigenvalue problem runs several times faster on one BLAS thread on a busy 2-core box."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional (comes with the test extra's scikit-learn)
        yield
        return
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    path = write_random_inception(tmp_path_factory.mktemp("inception") / "random-inception.pth", seed=0)
    return fidelity.inception(path)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)


def test_spatial_feature_is_mixed_6d_branch1x1_first_7_channels_in_nhwc_order(extractor, images):
    features = fidelity.extract_features(images[:2], extractor)
    assert features[sfid.SPATIAL].shape == (2, sfid.SPATIAL_DIM) == (2, 2023)
    assert features[fidelity.POOL].shape == (2, 2048) and features[fidelity.LOGITS].shape == (2, 1008)
    grabbed = []
    handle = extractor.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: grabbed.append(o.clone()))
    with torch.no_grad():
        extractor(torch.from_numpy(images[:2]).permute(0, 3, 1, 2))
    handle.remove()
    conv = grabbed[0]  # (2, 192, 17, 17): TF mixed_6/conv, after batch norm and ReLU
    assert conv.shape == (2, 192, 17, 17)
    expected = conv[:, :7].permute(0, 2, 3, 1).reshape(2, -1)  # ADM: spatial[..., :7] of an NHWC map, flattened
    torch.testing.assert_close(features[sfid.SPATIAL], expected)


def test_spatial_feature_is_this_batchs_even_when_the_other_features_end_before_mixed_6d(tmp_path, images):
    """Asked for "64" (ends before Mixed_6d) and sFID's feature, the extractor must not return the
    previous batch's spatial features (its hook would not fire if the parent stopped at "64")."""
    weights = write_random_inception(tmp_path / "random-inception.pth", seed=0)
    early = sfid.InceptionV3WithSpatial("inception-v3-compat", ["64", sfid.SPATIAL],
                                        feature_extractor_weights_path=str(weights)).eval()
    full = sfid.InceptionV3WithSpatial("inception-v3-compat", [sfid.SPATIAL],
                                       feature_extractor_weights_path=str(weights)).eval()
    batch = lambda i: torch.from_numpy(images[2 * i:2 * i + 2]).permute(0, 3, 1, 2)
    with torch.no_grad():
        early(batch(0))
        f64, spatial = early(batch(1))
        (expected,) = full(batch(1))
    assert f64.shape == (2, 64)
    torch.testing.assert_close(spatial, expected)


def test_sfid_of_identical_sets_is_zero_and_grows_with_a_shift():
    feats = torch.rand(300, sfid.SPATIAL_DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    stats = sfid.spatial_statistics(feats)
    same = sfid.sfid(feats, stats)
    assert abs(same) < 1e-3  # zero up to the eigenvalue solver's rounding
    shifted = sfid.sfid(feats + 0.05, stats)  # a mean shift of 0.05 in every coordinate adds |shift|^2
    assert shifted > 100 * abs(same) and shifted - same == pytest.approx(sfid.SPATIAL_DIM * 0.05 ** 2, rel=1e-4)
    with pytest.raises(ValueError, match="2023"):
        sfid.sfid(feats, {"mu": np.zeros(5), "sigma": np.eye(5)})


def test_fid_from_torch_fidelity_and_clean_fid_agree_on_the_same_features():
    g = np.random.default_rng(1)
    a, b = g.normal(size=(400, 64)), g.normal(0.3, 1.2, size=(400, 64))
    ours = fidelity.fid(fid_features_to_statistics(torch.from_numpy(a)),
                        fid_features_to_statistics(torch.from_numpy(b)))
    theirs = cleanfid.fid_from_features(a, b)
    assert ours > 1 and abs(ours - theirs) <= 1e-3 * abs(theirs)
    mu, sigma = a.mean(0), np.cov(a, rowvar=False)
    other = cleanfid.fid_from_statistics(mu, sigma, b.mean(0), np.cov(b, rowvar=False))
    assert other == pytest.approx(theirs, rel=1e-9)


def test_inception_score_and_precision_recall_conventions():
    logits = torch.zeros(10, 1008)
    logits[torch.arange(10), torch.arange(10)] = 50.0  # ten confident, distinct classes
    assert fidelity.inception_score(logits)[0] == pytest.approx(10.0, rel=1e-6)
    real = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    # generated = a tight cluster inside the real data: all precise, covering little of it
    precision, recall = fidelity.precision_recall(real[:20] * 0.01, real)
    assert precision == 1.0 and recall < 0.2


def test_bad_batches_fail_with_a_clear_message(tmp_path):
    good = np.zeros((2, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "good.npz", arr_0=good)
    assert check_images_header(tmp_path / "good.npz") == (2, 8, 8, 3)
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.npz").write_bytes(b"this is not a zip file at all")
    for name in ("truncated.npz", "garbage.npz"):
        with pytest.raises(BatchError, match="not a readable .npz.*corrupt"):
            load_images(tmp_path / name)
    np.savez(tmp_path / "float.npz", arr_0=good.astype(np.float32))
    with pytest.raises(BatchError, match="dtype float32, expected uint8"):
        load_images(tmp_path / "float.npz")
    np.savez(tmp_path / "chw.npz", arr_0=np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(BatchError, match=r"shape \(2, 3, 8, 8\), expected \(N, H, W, 3\)"):
        load_images(tmp_path / "chw.npz")
    np.savez(tmp_path / "named.npz", images=good)
    with pytest.raises(BatchError, match="no 'arr_0' array.*images"):
        load_reference(tmp_path / "named.npz")
    with pytest.raises(BatchError, match="no such file"):
        load_images(tmp_path / "absent.npz")
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    with pytest.raises(BatchError, match="no 'arr_0'"):
        load_images(tmp_path / "empty.npz")


def test_mini_kid_is_torch_fidelitys_unbiased_mmd_with_the_cubic_kernel():
    from bench.metrics import digits
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 8, generator=g, dtype=torch.float64), torch.randn(40, 8, generator=g, dtype=torch.float64)
    kernel = lambda x, y: (x @ y.T / x.shape[1] + 1) ** 3  # noqa: E731
    m = len(a)
    off = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))  # noqa: E731
    expected = off(kernel(a, a)) + off(kernel(b, b)) - 2 * kernel(a, b).mean()
    kid = digits.mini_kid({digits.FEATURES: a}, {digits.FEATURES: b})
    assert kid == pytest.approx(float(expected), rel=1e-9)  # every subset holds all rows: the one estimate
    assert digits.mini_kid({digits.FEATURES: a + 1.0}, {digits.FEATURES: b}) > 10 * abs(kid)
