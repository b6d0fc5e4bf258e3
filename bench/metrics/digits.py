"""The mini reproduction's image metrics: a digit classifier that gives mini-FID and class accuracy.

The mini cannot use Inception (no weights reach us, and 16 x 16 digits are not ImageNet), so the suite
trains a small CNN on the digits' training split. Its penultimate features play Inception's pool
features: **mini-FID** is the Fréchet distance of generated vs held-out real digits on them, computed
through torch-fidelity exactly as the full tables (a registered feature extractor, torch-fidelity's
batching loop and its FID functions). Its logits give the **class accuracy** of generated digits
(did the class conditioning work). Images are uint8 (N, 16, 16, 1), as ADM batches are (N, H, W, 3).
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric
from torch_fidelity.registry import register_feature_extractor

from bench.metrics import fidelity
from dydit import weights

EXTRACTOR = "digits-classifier"
FEATURES, LOGITS = "penultimate", "logits"
FEATURE_DIM = 128


class DigitClassifier(nn.Module):
    """A small CNN for 1 x 16 x 16 digits in [-1, 1] -> (penultimate (N, 128), logits (N, 10))."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),  # (N, 32, 16, 16)
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),  # (N, 64, 8, 8)
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),  # (N, 64, 4, 4)
        )
        self.penultimate = nn.Linear(64 * 4 * 4, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, x):
        h = F.relu(self.penultimate(self.convs(x).flatten(1)))  # (N, 128)
        return h, self.head(h)


@dataclass
class ClassifierConfig:
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


def train_classifier(images, labels, config=ClassifierConfig()) -> DigitClassifier:
    """Trains the classifier on uint8 images (N, 16, 16, 1) with labels (N,); deterministic for a seed."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = DigitClassifier()
    x, y = to_float(torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2)), torch.as_tensor(labels).long()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    for _ in range(config.epochs):
        for idx in torch.randperm(len(x), generator=generator).split(config.batch_size):
            # a one-pixel random shift: the generated digits are not pixel-aligned like MNIST's
            shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
            loss = F.cross_entropy(model(torch.roll(x[idx], shift, dims=(2, 3)))[1], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def to_float(images_uint8):
    """uint8 (N, 1, H, W) -> float in [-1, 1], the training data's range."""
    return images_uint8.float() / 127.5 - 1.0


class DigitFeatures(FeatureExtractorBase):
    """torch-fidelity feature extractor around a trained DigitClassifier (weights from a local file)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.classifier = DigitClassifier()
        self.classifier.load_state_dict(weights.read(feature_extractor_weights_path))
        self.classifier.eval().requires_grad_(False)

    @staticmethod
    def get_provided_features_list():
        return FEATURES, LOGITS

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return FEATURES

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 16, 16, dtype=torch.uint8)

    def forward(self, x):
        features, logits = self.classifier(to_float(x))
        out = {FEATURES: features, LOGITS: logits}
        return tuple(out[f] for f in self.features_list)


register_feature_extractor(EXTRACTOR, DigitFeatures)


def extractor(weights_path):
    return DigitFeatures(EXTRACTOR, [FEATURES, LOGITS], feature_extractor_weights_path=str(weights_path))


def features(images, digit_extractor, batch_size=500):
    """{penultimate, logits} of uint8 images (N, 16, 16, 1), through torch-fidelity's batching loop."""
    return fidelity.extract_features(images, digit_extractor, batch_size=batch_size)


def mini_fid(generated, reference) -> float:
    """Fréchet distance of two {penultimate} feature dicts (torch-fidelity's statistics and distance)."""
    stats = [fid_features_to_statistics(f[FEATURES].double()) for f in (generated, reference)]
    return float(fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID])


KID_SUBSETS = 10  # subsets of min(N, N_ref) features each: every subset uses (nearly) all of them


def mini_kid(generated, reference, seed=0) -> float:
    """Kernel distance of two {penultimate} feature dicts (torch-fidelity's unbiased KID, mean over subsets)."""
    a, b = generated[FEATURES].double(), reference[FEATURES].double()
    out = kid_features_to_metric(a, b, kid_subsets=KID_SUBSETS, kid_subset_size=min(len(a), len(b)),
                                 kid_degree=3, kid_gamma=None, kid_coef0=1, rng_seed=seed, verbose=False)
    return float(out[KEY_METRIC_KID_MEAN])


def accuracy(generated, labels) -> float:
    """Fraction of generated digits the classifier assigns to the class they were conditioned on."""
    return float((generated[LOGITS].argmax(1) == torch.as_tensor(labels)).float().mean())
