"""One trained mini model, measured: digits sampled through the project's sampler, then every number
the mini suite judges (mini-FID, accuracy, FLOPs ratio, the two redundancy measures) and its figures' data.

The DyDiTs sample through FastDyDiT (the compute-skipping path a GPU user runs), recording what each
call computed: per block the heads and channel groups on (they depend on t only) and the tokens whose
MLP ran. From those records come the run's dynamic FLOPs (dydit.flops, routers counted), the per-step
widths of the paper's Fig. 5 and the per-patch MLP FLOPs of Fig. 6.
"""

import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from bench.metrics import digits
from dydit import sampling
from dydit.deepcache import DeepCache, cached_step_macs
from dydit.fast import FastDyDiT
from dydit.flops import Arch, dit_macs, dynamic_macs, mlp_macs
from dydit.models import BlockMasks, DyDiT
from dydit.sampling import SamplerSpec

EARLY, LATE = 250, 750  # claim 3 compares the mean width over t >= LATE with t < EARLY (the paper's Fig. 5)
INK = 0.0  # a patch holds ink when its mean pixel in [-1, 1] is above mid-grey (MNIST ink is white)


def shuffled(mask, generator, fixed=0):
    """A 0/1 mask (N, K) with as many ones per row as `mask`, at random places; the first `fixed` columns kept."""
    keep = mask[:, fixed:].sum(1, keepdim=True)
    noise = torch.rand(mask[:, fixed:].shape, generator=generator)
    rank = noise.argsort(1).argsort(1)  # a random permutation of 0..K-1 per row
    return torch.cat([mask[:, :fixed], (rank < keep).to(mask.dtype)], dim=1)


class RandomRouting:
    """A DyDiT whose routers choose at random (the paper's ablation "random routers" at the same FLOPs): per
    call, block and sample, as many heads, channel groups and tokens as its own routers choose, drawn at
    random (head and group 0 stay on, as the routers keep them). The masked path runs twice per call."""

    def __init__(self, model, seed):
        self.model = model
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x, t, y, record=None):
        learned = []
        self.model(x, t, y, record=learned)
        masks = [BlockMasks(shuffled(m.heads, self.generator, 1), shuffled(m.channels, self.generator, 1),
                            shuffled(m.tokens, self.generator)) for m in learned]
        return self.model(x, t, y, masks=masks, record=record)


class Recorder:
    """model_fn for the sampler: FastDyDiT (or a DiT) that keeps, per call, t and the masks it ran with.
    With DeepCache a cached step's record is empty: no block ran. random_routing_seed: the DyDiT's routing
    replaced by RandomRouting (the masked path)."""

    def __init__(self, model, deepcache_interval=0, random_routing_seed=None):
        self.model = model
        self.fn = FastDyDiT(model) if isinstance(model, DyDiT) else model
        if random_routing_seed is not None:
            self.fn = RandomRouting(model, random_routing_seed)
        if deepcache_interval > 1:
            self.fn = DeepCache(self.fn, deepcache_interval)
        self.calls = []  # (first image, t, record) per call; record: BlockMasks per block of the [cond; uncond] batch
        self.offset = 0  # index of the first image of the batch being sampled

    def prepare(self, timesteps):
        if hasattr(self.fn, "prepare"):
            self.fn.prepare(timesteps)

    def __call__(self, x, t, y):
        if not isinstance(self.model, DyDiT):
            cached = isinstance(self.fn, DeepCache) and not self.fn.next_is_full()
            self.calls.append((self.offset, float(t[0]), [] if cached else None))
            return self.fn(x, t, y)
        record = []
        out = self.fn(x, t, y, record=record)
        self.calls.append((self.offset, float(t[0]), record))
        return out


@torch.no_grad()
def sample_pixels(model, s: SamplerSpec, model_fn, shape):
    """(pixels (N, *shape) in [-1, 1] on the CPU, labels (N,)) of the balanced classes, sampled batch by batch
    through model_fn (its `offset`: the index of the batch's first sample); every channel guided."""
    num_classes = model.y_embedder.embedding_table.num_embeddings - 1
    device = next(model.parameters()).device  # noise drawn on the CPU (the same samples on any device), moved there
    pixels, labels = [], []
    for start in range(0, s.num_samples, s.batch_size):
        idx = range(start, min(start + s.batch_size, s.num_samples))
        model_fn.offset = start
        noise, generators = sampling.noise_for(idx, s.seed, shape)
        y = sampling.labels_for(idx, s.seed, "balanced", num_classes)
        pixels.append(sampling.sample_latents(model_fn, s.name, noise.to(device), y, s.steps, generators, s.cfg_scale,
                                              guided_channels=None, null_class=num_classes).cpu())
        labels.append(y.numpy())
    return torch.cat(pixels), np.concatenate(labels)


def sample_digits(model, s: SamplerSpec, recorder=None):
    """(uint8 digits (N, 16, 16, 1), labels (N,), pixels in [-1, 1] (N, 1, 16, 16)) of the balanced classes."""
    model_fn = recorder or Recorder(model, s.deepcache_interval)
    pixels, labels = sample_pixels(model, s, model_fn, (model.in_channels, model.input_size, model.input_size))
    return sampling.to_uint8(pixels), labels, pixels


#################################################################################
#             Speed: the schedule's model calls, timed path by path             #
#################################################################################

def timed_timesteps(s: SamplerSpec, calls: int) -> list:
    """`calls` of the sampler's own timesteps, evenly spread over its schedule: the calls a speed-up times."""
    return sampling.sampler_timesteps(s.name, s.steps)[:: max(1, s.steps // calls)]


class _AllCaptured(Exception):
    """Stops a sampling run once every timed call's input is kept."""


@torch.no_grad()
def trajectory_inputs(model_fn, s: SamplerSpec, shape, labels, null_class, times) -> list:
    """[(x, t, y)] per time of `times`: the CFG batch the sampler feeds model_fn at that step when it samples the
    first images of s (noise and step noise of images 0..B-1, as the quality run; labels (B,): classes or prompt
    ids), stopped after the last. A timed call then computes on what a real run computes on: token routers keep more of pure noise than of
    a half-formed digit (DyFLUX-Mini λ 0.7 timed on noise at FLOPs 0.886, sampled at 0.754)."""
    wanted, kept = [float(t) for t in times], {}

    def keep(x, t, y):
        now = float(t[0])
        for want in wanted:
            if abs(want - now) <= 1e-6 * max(1.0, abs(want)) and want not in kept:
                kept[want] = (x.clone(), t.clone(), y.clone())
        if len(kept) == len(wanted):
            raise _AllCaptured
        return model_fn(x, t, y)

    noise, generators = sampling.noise_for(range(len(labels)), s.seed, shape)
    try:
        sampling.sample_latents(keep, s.name, noise, labels, s.steps, generators, s.cfg_scale, guided_channels=None,
                                null_class=null_class)
    except _AllCaptured:
        pass
    missing = [t for t in wanted if t not in kept]
    if missing:
        raise ValueError(f"the {s.name}-{s.steps} run never called the model at {missing}: not its timesteps")
    return [kept[t] for t in wanted]


@torch.no_grad()
def speed(s: SamplerSpec, inputs, paths, flops_ratio_of, repeats: int) -> dict:
    """s/sample of each path (model_fn(x, t, y); "dit": the static model, "fast": the compute-skipping path
    prepared for the timed times, and any other) on `inputs` [(x, t, y)] (trajectory_inputs: the CFG batch of a
    real run at timed_timesteps), interleaved call by call over `repeats` rounds, scaled to the schedule's length
    (the scheduler's own step is negligible next to a call); the speed-up per round; flops_ratio_of(inputs)
    beside it, so realized = speed-up / it."""
    from bench.timing.calls import interleaved_call_medians
    timed = {name: [lambda fn=fn, c=c: fn(*c) for c in inputs] for name, fn in paths.items()}
    medians = interleaved_call_medians(timed, repeats=repeats, warmup=1)
    out = {name: seconds / (len(inputs) * s.batch_size) * s.steps for name, (seconds, _) in medians.items()}
    out["calls_timed"], out["batch"] = len(inputs), len(inputs[0][0])
    out["speedup_rounds"] = [d / f for d, f in zip(medians["dit"][1], medians["fast"][1])]  # round r side by side
    out["flops_ratio_timed"] = flops_ratio_of(inputs)
    return out


@torch.no_grad()
def recorded_flops_ratio(fast, inputs, macs, static_macs) -> float:
    """The fast path's MACs per sample over the calls `inputs` [(x, t, y)] (macs(record) -> (B,), routers counted) /
    the static model's (static_macs)."""
    per_call = []
    for x, t, y in inputs:
        record = []
        fast(x, t, y, record=record)
        per_call.append(macs(record).mean())
    return float(torch.stack(per_call).mean()) / static_macs


#################################################################################
#                        What the records say (DyDiT)                           #
#################################################################################

def flops_ratio(model, calls) -> float:
    """MACs over the run (per sample and call: a DyDiT's dynamic ones, routers counted; a DeepCache'd step's
    as dydit.deepcache counts it, recorded as []) / the static DiT's MACs."""
    static = dit_macs(model)
    per_call = [cached_step_macs(model) if record == [] else static if record is None
                else float(dynamic_macs(model, record).mean()) for _, _, record in calls]
    return float(np.mean(per_call)) / static


def widths_per_step(model, calls):
    """(timesteps (S,), heads on (S, depth), groups on (S, depth)) as fractions of H, one call per step."""
    steps, heads, groups = [], [], []
    for offset, t, record in calls:
        if offset != calls[0][0]:
            break  # widths depend on t only: the first batch's calls say it all
        steps.append(t)
        heads.append([float(m.heads[0].mean()) for m in record])
        groups.append([float(m.channels[0].mean()) for m in record])
    return np.array(steps), np.array(heads), np.array(groups)


def width_late_minus_early(model, calls) -> float:
    """Claim 3: mean active width (heads and channel groups, all blocks) at t >= 750 minus at t < 250."""
    t, heads, groups = widths_per_step(model, calls)
    width = (heads + groups).mean(1) / 2  # (S,)
    return float(width[t >= LATE].mean() - width[t < EARLY].mean())


def patch_mlp_flops(model, calls, num_images):
    """(num_images, tokens): MLP MACs per step spent on each patch of each generated image (the
    conditional half of every CFG batch; a token's MLP costs its share of the active channel groups)."""
    a = Arch.of(model)
    per_patch = torch.zeros(num_images, a.tokens, dtype=torch.float64)
    calls_per_image = torch.zeros(num_images, 1, dtype=torch.float64)
    for offset, t, record in calls:
        batch = record[0].tokens.shape[0] // 2  # [cond; uncond]: the conditional half
        calls_per_image[offset:offset + batch] += 1
        for m in record:
            groups = m.channels[:batch].sum(-1, keepdim=True).double().cpu()  # (B, 1)
            per_patch[offset:offset + batch] += m.tokens[:batch].double().cpu() * mlp_macs(a, groups, 1)
    return per_patch / calls_per_image


def ink_mask(pixels, patch):
    """(N, tokens) bool: patches whose mean pixel of the generated digit is above mid-grey."""
    pooled = torch.nn.functional.avg_pool2d(pixels, patch)  # (N, 1, h, w)
    return pooled.flatten(1) > INK


def ink_over_background(model, calls, pixels) -> float:
    """Claim 4: mean MLP FLOPs per step on ink patches / on background patches, over the generated digits."""
    per_patch = patch_mlp_flops(model, calls, len(pixels))
    ink = ink_mask(pixels, model.patch_size)
    return float(per_patch[ink].mean() / per_patch[~ink].mean())


#################################################################################
#                               Quality                                         #
#################################################################################

def quality(images, labels, extractor, reference_features):
    """{mini_fid, mini_kid, accuracy} of generated digits against held-out real ones."""
    feats = digits.features(images, extractor)
    return {"mini_fid": digits.mini_fid(feats, reference_features), "mini_kid": digits.mini_kid(feats, reference_features),
            "accuracy": digits.accuracy(feats, labels)}


def code_digest():
    """What decides an evaluation besides the model and the sampling: the measuring code (cache keys hash it)."""
    from dydit import deepcache, fast, flops
    return [hashlib.sha256(Path(m.__file__).read_bytes()).hexdigest()[:16]
            for m in (sys.modules[__name__], digits, fast, flops, sampling, deepcache)]
