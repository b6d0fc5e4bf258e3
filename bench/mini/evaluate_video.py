"""The video mini's scores (DyLatte, issue 25), on the project's digit classifier trained on frames of moving digits.

    classifier = frame_classifier(moving_digits("train"))      # bench.metrics.digits' CNN on every frame
    reference = clip_features(real_clips, classifier)           # held-out clips
    scores(generated, classes, classifier, reference)           # {frame_accuracy, consistency, motion, mini_fvd}

Clips are uint8 (N, F, 16, 16, 1), as `bench sample` writes them; classes are digit x direction
(bench/mini/moving_digits.py).
- frame accuracy: the fraction of frames whose digit the classifier reads as the clip's class's digit;
- consistency: the fraction of clips whose frames all read as one digit (whatever it is);
- motion: the fraction of clips whose ink moves along the class's direction: the ink centroid's displacement from
  the first to the last frame has its larger component on the direction's axis, with its sign, and at least half
  the real travel;
- mini-FVD: the Fréchet distance (bench.metrics.fvd) of clip features: the mean of the frames' classifier features
  and the centroid's frame-to-frame displacements (the motion statistics).

The video mini's suite (suites/latte-mini.toml, through bench.mini.run) measures a trained Latte-Mini / DyLatte-Mini:

    judge = VideoJudge.load(weights)      # bench.mini.build.frame_classifier's weights; held-out clips' features
    ev = evaluate(model, spec, judge)     # clips sampled through the project's sampler, then every number

beside the four scores: mini-FID / mini-KID of the frames (the frame classifier's features, against the held-out
clips' frames) and "accuracy" = frame accuracy, so that the mini's quality claims read the same keys as for images;
FLOPs over the run / Latte's (dydit.latte_flops, routers counted); and for a DyLatte, sampled through FastDyLatte,
its widths per step (claim 3) and the MLP MACs per patch of each frame, ink over background (claim 4, per frame).
"""
import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.metrics import digits
from bench.metrics.fvd import fvd_from_features
from bench.mini import evaluate
from bench.mini.moving_digits import DIRECTIONS, GLYPH, MOTION, MovingDigits, moving_digits
from dydit import latte_flops, sampling
from dydit.flops import Arch, mlp_macs
from dydit.latte import DyLatte, FastDyLatte
from dydit.sampling import FLOW_SAMPLERS, SamplerSpec

MIN_TRAVEL = 0.5  # of the real travel (DIGITS_SIZE - GLYPH pixels): a clip that moves less does not move
KEYS = ("frame_accuracy", "consistency", "motion", "mini_fvd")


def to_uint8(clips: torch.Tensor) -> np.ndarray:
    """Clips (N, F, 1, H, W) in [-1, 1] -> uint8 (N, F, H, W, 1), as bench sample writes them."""
    return torch.clamp(127.5 * clips + 128.0, 0, 255).permute(0, 1, 3, 4, 2).to(torch.uint8).numpy()


def frame_classifier(train: MovingDigits, config=digits.ClassifierConfig()) -> digits.DigitClassifier:
    """The mini's digit CNN trained on every frame of the training clips, labelled with the clip's digit."""
    frames = to_uint8(train.clips).reshape(-1, *train.clips.shape[-2:], 1)  # (N F, H, W, 1)
    return digits.train_classifier(frames, train.digits.repeat_interleave(train.clips.shape[1]), config)


def frame_accuracy(classifier, clips: MovingDigits) -> float:
    """The fraction of the clips' frames the classifier reads as their clip's digit (real clips: its ceiling)."""
    _, logits = _frames(to_uint8(clips.clips), classifier)
    return float((logits.argmax(-1) == clips.digits[:, None]).float().mean())


@torch.no_grad()
def _frames(clips_uint8: np.ndarray, classifier):
    """(features (N, F, 128), logits (N, F, 10)) of every frame."""
    n, f = clips_uint8.shape[:2]
    x = digits.to_float(torch.from_numpy(clips_uint8.reshape(n * f, *clips_uint8.shape[2:])).permute(0, 3, 1, 2))
    features, logits = classifier(x)
    return features.reshape(n, f, -1), logits.reshape(n, f, -1)


def centroids(clips_uint8: np.ndarray) -> np.ndarray:
    """(N, F, 2) row and column of each frame's ink centroid (ink = pixel / 255)."""
    ink = clips_uint8[..., 0].astype(np.float64) / 255.0  # (N, F, H, W)
    rows, cols = np.meshgrid(np.arange(ink.shape[2]), np.arange(ink.shape[3]), indexing="ij")
    total = ink.sum(axis=(2, 3)).clip(min=1e-6)
    return np.stack([(ink * rows).sum(axis=(2, 3)) / total, (ink * cols).sum(axis=(2, 3)) / total], axis=-1)


def clip_features(clips_uint8: np.ndarray, classifier) -> np.ndarray:
    """(N, 128 + 2 (F - 1)): the frames' mean classifier features and the centroid's per-frame displacements."""
    features, _ = _frames(clips_uint8, classifier)
    steps = np.diff(centroids(clips_uint8), axis=1).reshape(len(clips_uint8), -1)
    return np.concatenate([features.mean(1).numpy(), steps], axis=1)


def moves_as_directed(clips_uint8: np.ndarray, directions) -> np.ndarray:
    """(N,) bool: the clip's ink travels along its direction (module docstring)."""
    c = centroids(clips_uint8)
    travel = c[:, -1] - c[:, 0]  # (N, 2)
    wanted = np.array([MOTION[DIRECTIONS[int(d)]] for d in np.asarray(directions)], dtype=np.float64)  # (N, 2)
    along = (travel * wanted).sum(1)
    across = np.abs(travel * wanted[:, ::-1]).sum(1)
    return (along >= MIN_TRAVEL * (16 - GLYPH)) & (along > across)


def scores(clips_uint8: np.ndarray, classes, classifier, reference_features: np.ndarray) -> dict:
    """The four scores of generated clips (uint8 (N, F, 16, 16, 1)) conditioned on `classes` (N,)."""
    classes = torch.as_tensor(np.asarray(classes)).long()
    digit, direction = classes // len(DIRECTIONS), classes % len(DIRECTIONS)
    _, logits = _frames(clips_uint8, classifier)
    read = logits.argmax(-1)  # (N, F)
    return {"frame_accuracy": float((read == digit[:, None]).float().mean()),
            "consistency": float((read == read[:, :1]).all(1).float().mean()),
            "motion": float(moves_as_directed(clips_uint8, direction.numpy()).mean()),
            "mini_fvd": fvd_from_features(clip_features(clips_uint8, classifier), reference_features)}


def frames_of(clips_uint8: np.ndarray) -> np.ndarray:
    """uint8 clips (N, F, H, W, 1) -> their frames (N F, H, W, 1), clip-major."""
    return clips_uint8.reshape(-1, *clips_uint8.shape[2:])


#################################################################################
#                  One trained video model, measured (the suite)                #
#################################################################################

@dataclass
class VideoJudge:
    """What scores the video mini's clips: the frame classifier, its torch-fidelity extractor (the same weights file)
    and the reference clips' features (clip features for mini-FVD, frame features for mini-FID)."""
    classifier: digits.DigitClassifier
    extractor: object  # bench.metrics.digits.extractor of the frame classifier's weights
    reference_clips: np.ndarray  # clip_features of the reference clips (held-out; validation for the CFG sweep)
    reference_frames: dict  # digits.features of their frames

    @classmethod
    def load(cls, weights: Path, seed: int = 0, split: str = "heldout") -> "VideoJudge":
        """From the frame classifier's weights (bench.mini.build.frame_classifier); split: the reference clips
        (the held-out ones score the claims; the spread study's CFG sweep uses the validation ones)."""
        classifier = digits.DigitClassifier()
        classifier.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        classifier.eval()
        extractor = digits.extractor(weights)
        reference = to_uint8(moving_digits(split, seed).clips)
        return cls(classifier, extractor, clip_features(reference, classifier),
                   digits.features(frames_of(reference), extractor))

    def floor(self, n: int, seed: int = 0) -> float:
        """mini-FID of the frames of n training clips against the reference clips' frames (what real clips score)."""
        train = to_uint8(moving_digits("train", seed).clips[:n])
        return digits.mini_fid(digits.features(frames_of(train), self.extractor), self.reference_frames)


class Recorder:
    """model_fn for the sampler on clips (B, C, F, H, W), as dydit.latte.ChannelsFirst: a Latte, or a DyLatte
    through FastDyLatte keeping per call t and the masks it ran with (BlockMasks per block, rows per sequence)."""

    def __init__(self, model):
        self.model = model
        self.fast = FastDyLatte(model) if isinstance(model, DyLatte) else None
        self.calls = []  # (first clip, t, record or None: static) per call
        self.offset = 0  # index of the first clip of the batch being sampled

    def prepare(self, timesteps):
        if self.fast is not None:
            self.fast.prepare(timesteps)

    def __call__(self, x, t, y):
        x = x.transpose(1, 2)  # (B, F, C, H, W): Latte's layout
        if self.fast is None:
            self.calls.append((self.offset, float(t[0]), None))
            return self.model(x, t, y).transpose(1, 2)
        record = []
        out = self.fast(x, t, y, record=record)
        self.calls.append((self.offset, float(t[0]), record))
        return out.transpose(1, 2)


@torch.no_grad()
def sample_clips(model, s: SamplerSpec, recorder: Recorder):
    """(uint8 clips (N, F, 16, 16, 1), classes (N,), pixels (N, F, 1, 16, 16) in [-1, 1]) of the balanced classes."""
    shape = (model.in_channels, model.num_frames, model.input_size, model.input_size)  # the samplers' (C, F, H, W)
    pixels, classes = evaluate.sample_pixels(model, s, recorder, shape)
    pixels = pixels.transpose(1, 2)  # (N, F, C, H, W)
    return to_uint8(pixels), classes, pixels


def flops_ratio(model, calls) -> float:
    """MACs over the run (per clip and call; a DyLatte's from its masks, routers counted) / Latte's."""
    static = latte_flops.latte_macs(model, static=True)
    per_call = [static if record is None else float(latte_flops.latte_macs(model, record).mean())
                for _, _, record in calls]
    return float(np.mean(per_call)) / static


def frame_patch_mlp_flops(model, calls, num_clips) -> torch.Tensor:
    """(num_clips, F, tokens): MLP MACs per step spent on each patch of each frame (the conditional half of every
    CFG batch), over the spatial blocks (rows: a frame's patches) and the temporal ones (rows: a patch's frames)."""
    a = Arch.of(model)
    F, T = model.num_frames, a.tokens
    per_patch = torch.zeros(num_clips, F, T, dtype=torch.float64)
    calls_per_clip = torch.zeros(num_clips, 1, 1, dtype=torch.float64)
    for offset, _, record in calls:
        clips = record[0].tokens.shape[0] // F // 2  # [cond; uncond]: the conditional half
        calls_per_clip[offset:offset + clips] += 1
        for i, m in enumerate(record):
            tokens = m.tokens.double().cpu()
            groups = m.channels.sum(-1).double().cpu()  # (sequences,)
            if i % 2 == 0:  # spatial: sequences (clip, frame) of T patches
                tokens, groups = tokens.reshape(-1, F, T), groups.reshape(-1, F, 1)
            else:  # temporal: sequences (clip, patch) of F frames
                tokens, groups = tokens.reshape(-1, T, F).transpose(1, 2), groups.reshape(-1, 1, T)
            per_patch[offset:offset + clips] += (tokens * mlp_macs(a, groups, 1))[:clips]
    return per_patch / calls_per_clip


def ink_over_background(per_patch, pixels, patch) -> float:
    """Claim 4 per frame: mean MLP MACs per step on the patches with ink / on those without, over all frames."""
    ink = evaluate.ink_mask(pixels.flatten(0, 1), patch).reshape(per_patch.shape)  # (N, F, T)
    return float(per_patch[ink].mean() / per_patch[~ink].mean())


def quality(clips_uint8, classes, judge: VideoJudge) -> dict:
    """{mini_fid, mini_kid (of the frames), accuracy (frame accuracy), consistency, motion, mini_fvd}."""
    feats = digits.features(frames_of(clips_uint8), judge.extractor)
    out = scores(clips_uint8, classes, judge.classifier, judge.reference_clips)
    return {"mini_fid": digits.mini_fid(feats, judge.reference_frames),
            "mini_kid": digits.mini_kid(feats, judge.reference_frames), "accuracy": out.pop("frame_accuracy"), **out}


def evaluate_clips(model, s: SamplerSpec, judge: VideoJudge) -> dict:
    """Samples one model's clips and measures them (the module docstring); a DyLatte through its fast path."""
    if s.deepcache_interval > 1:
        raise ValueError("the video mini measures Latte without DeepCache (dydit.deepcache is DiT's)")
    recorder = Recorder(model)
    start = time.perf_counter()
    clips, classes, pixels = sample_clips(model, s, recorder)
    out = {"seconds_sampling": time.perf_counter() - start, "images": clips, "labels": classes,
           "flops_ratio": flops_ratio(model, recorder.calls), **quality(clips, classes, judge)}
    if recorder.fast is not None:  # what it skipped, where and when
        out["widths"] = evaluate.widths_per_step(model, recorder.calls)
        if s.name not in FLOW_SAMPLERS:  # claim 3 on DDPM's t
            out["width_late_vs_early"] = evaluate.width_late_minus_early(model, recorder.calls)
        per_patch = frame_patch_mlp_flops(model, recorder.calls, len(pixels))
        out["patch_flops"] = per_patch.numpy()
        out["ink_vs_background"] = ink_over_background(per_patch, pixels, model.patch_size)
    return out


def speed(s: SamplerSpec, latte, dylatte, calls: int, repeats: int) -> dict:
    """s/clip of Latte, DyLatte's fast path and its masked path on the CFG batch DyLatte's own sampled run feeds
    them at the timed steps, and the FLOPs ratio of exactly the calls timed, as for images
    (bench.mini.evaluate.speed)."""
    num_classes = dylatte.y_embedder.embedding_table.num_embeddings - 1
    times = evaluate.timed_timesteps(s, calls)
    labels = sampling.labels_for(range(s.batch_size), s.seed, "balanced", num_classes)
    shape = (dylatte.in_channels, dylatte.num_frames, dylatte.input_size, dylatte.input_size)  # the samplers' (C, F, H, W)
    in_sampler_layout = evaluate.trajectory_inputs(lambda x, t, y: dylatte(x.transpose(1, 2), t, y).transpose(1, 2),
                                                   s, shape, labels, num_classes, times)
    inputs = [(x.transpose(1, 2).contiguous(), t, y) for x, t, y in in_sampler_layout]  # Latte's (B, F, C, H, W)
    fast = FastDyLatte(dylatte).prepare([float(t) for t in times])
    return evaluate.speed(s, inputs, {"dit": latte, "fast": fast, "masked": dylatte},
                          lambda inputs: evaluate.recorded_flops_ratio(
                              fast, inputs, lambda r: latte_flops.latte_macs(dylatte, r),
                              latte_flops.latte_macs(dylatte, static=True)), repeats)


def code_digest():
    """What decides an evaluation besides the model and the sampling: the measuring code (cache keys hash it)."""
    from dydit import fast, latte
    return [hashlib.sha256(Path(m.__file__).read_bytes()).hexdigest()[:16]
            for m in (sys.modules[__name__], evaluate, digits, fast, latte, latte_flops, sampling)]
