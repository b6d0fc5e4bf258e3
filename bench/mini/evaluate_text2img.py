"""One trained text-to-image mini model (FLUX-Mini, DyFLUX-Mini: dydit.text2img), measured: canvases sampled from
the held-out split's prompts through the project's flow sampler, then the numbers the DyFLUX mini judges.

    ev = evaluate(model, spec, judge)   # judge: TextToImageJudge (the attribute reader, held-out features)

- read-back (GenEval-like): the fraction of canvases whose digit, position and thickness all read back as prompted
  (bench.mini.prompted_digits.AttributeReader);
- mini-FID / mini-KID / accuracy on the prompted half of each canvas against the held-out digit halves, in the
  reader's classifier features (trained on the training split's halves, thin and thick);
- FLOPs over the run / FLUX's, of the transformer (dydit.flux_flops: blocks, embedders, DyFLUX's routers; the
  text encoder is the same on both sides and not counted);
- width at the noisiest quarter of the flow's times minus at the cleanest (claim 3; flow time 0 is noise), and the
  MLP FLOPs of image tokens (2 x 2 pixel patches) with ink over those without (claim 4).

A DyFLUX samples through its compute-skipping path (TextToImageFlux.fast), recording each call's masks.
"""
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.metrics import digits
from bench.mini import prompted_digits as pd
from dydit import sampling
from dydit.flux_flops import FluxShape, flux_macs
from dydit.flux_train import plans_from_record
from dydit.sampling import SamplerSpec
from dydit.text2img import PAD_ID

NOISY, CLEAN = 0.25, 0.75  # claim 3 on flow time (0 = noise): mean width at t < NOISY minus at t >= CLEAN
PATCH = 2  # FLUX's 2 x 2 packing: one image token per 2 x 2 pixels


@dataclass
class TextToImageJudge:
    """What scores the text-to-image mini's canvases: the attribute reader, its classifier as a feature extractor
    (torch-fidelity's, from the same weights file), and the split whose prompts draw the canvases and whose digit
    halves' features they are compared with (the held-out split for the claims, the validation split for the CFG
    sweep)."""
    reader: pd.AttributeReader
    extractor: object  # bench.metrics.digits.extractor of the reader's classifier weights
    prompts: pd.PromptedDigits  # the split's canvases and prompts
    reference: dict  # features of the split's digit halves

    @classmethod
    def load(cls, weights: Path, thresholds, seed: int = 0, split: str = "heldout") -> "TextToImageJudge":
        """From the reader's classifier weights (bench.mini.build.reader) and its thickness thresholds (10,)."""
        classifier = digits.DigitClassifier()
        classifier.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        reader = pd.AttributeReader(classifier.eval(), torch.as_tensor(thresholds, dtype=torch.float32))
        extractor = digits.extractor(weights)
        prompts = pd.prompted_digits(split, seed)
        return cls(reader, extractor, prompts, digits.features(sampling.to_uint8(pd.digit_halves(prompts)), extractor))

    def floor(self, n: int, seed: int = 0) -> float:
        """mini-FID of n training digit halves against the judge's split (what real canvases score)."""
        train = pd.prompted_digits("train", seed)
        halves = sampling.to_uint8(pd.digit_halves(train)[:n])
        return digits.mini_fid(digits.features(halves, self.extractor), self.reference)


class Recorder:
    """model_fn for the flow sampler: the model (a DyFLUX on its fast path) keeping, per call, t and its masks."""

    def __init__(self, model):
        self.model = model
        self.calls = []  # (first image, t, [FluxMasks per block] of the [cond; uncond] batch, or None: static)
        self.offset = 0

    def __call__(self, x, t, y):
        record = [] if self.model.is_dynamic else None
        out = self.model(x, t, y, record=record)
        self.calls.append((self.offset, float(t[0]), record))
        return out


@torch.no_grad()
def sample_canvases(model, s: SamplerSpec, prompts: pd.PromptedDigits, recorder: Recorder):
    """(canvases (N, 1, 16, 32) in [-1, 1], the indices into `prompts` whose prompts drew them): its first N."""
    if s.num_samples > len(prompts):
        raise ValueError(f"num_samples {s.num_samples}: the split has {len(prompts)} prompts")
    tokenizer = pd.PromptTokenizer()
    device = next(model.parameters()).device
    model.fast, out = model.is_dynamic, []
    try:
        for start in range(0, s.num_samples, s.batch_size):
            idx = range(start, min(start + s.batch_size, s.num_samples))
            recorder.offset = start
            noise, generators = sampling.noise_for(idx, s.seed, (model.in_channels, *model.image_size))
            ids = tokenizer([prompts.prompts[i] for i in idx])
            out.append(sampling.sample_latents(recorder, s.name, noise.to(device), ids.to(device), s.steps, generators,
                                               s.cfg_scale, guided_channels=None, null_class=PAD_ID).cpu())
    finally:
        model.fast = False
    return torch.cat(out).clamp(-1, 1), torch.arange(s.num_samples)


#################################################################################
#                        What the records say (DyFLUX)                          #
#################################################################################

def _shape(model):
    return FluxShape.of(model.transformer.config), model.image_tokens, pd.MAX_TOKENS


def flops_ratio(model, calls) -> float:
    """MACs over the run (per sample and call: DyFLUX's with its routers) / FLUX's."""
    shape, n, text = _shape(model)
    static = flux_macs(shape, n, text)
    heads = model.transformer.config.num_attention_heads
    per_call = []
    for _, _, record in calls:
        if record is None:
            per_call.append(static)
            continue
        width = heads if record[0].heads is not None else 0
        macs = flux_macs(shape, n, text, plans_from_record(record), token_routers=True, width_routers=width)
        per_call.append(float(torch.as_tensor(macs, dtype=torch.float64).mean()))
    return float(np.mean(per_call)) / static


def width_noisy_minus_clean(calls) -> float:
    """Claim 3: mean active width (heads and MLP groups, all blocks) at flow times t < NOISY minus at t >= CLEAN."""
    times, widths = [], []
    for offset, t, record in calls:
        if offset != calls[0][0]:
            break  # widths depend on t only: the first batch's calls say it all
        times.append(t)
        widths.append(np.mean([(float(m.heads[0].mean()) + float(m.groups[0].mean())) / 2 for m in record]))
    times, widths = np.array(times), np.array(widths)
    return float(widths[times < NOISY].mean() - widths[times >= CLEAN].mean())


def patch_mlp_share(model, calls, num_images):
    """(num_images, image tokens): per call, the MLP work each image token got, summed over blocks (kept x the
    block's fraction of MLP groups), averaged over the calls; the conditional half of each CFG batch."""
    per_token = torch.zeros(num_images, model.image_tokens, dtype=torch.float64)
    count = torch.zeros(num_images, 1, dtype=torch.float64)
    for offset, _, record in calls:
        batch = record[0].tokens.shape[0] // 2  # [cond; uncond]
        count[offset:offset + batch] += 1
        for m in record:
            groups = 1.0 if m.groups is None else m.groups[:batch].double().mean(1, keepdim=True).cpu()
            per_token[offset:offset + batch] += m.tokens[:batch].double().cpu() * groups
    return per_token / count


def ink_over_background(model, calls, canvases) -> float:
    """Claim 4: mean MLP work per image token with ink (its 2 x 2 pixels above mid-grey) / per token without."""
    share = patch_mlp_share(model, calls, len(canvases))
    ink = torch.nn.functional.avg_pool2d(canvases, PATCH).flatten(1) > 0.0  # (N, tokens), FLUX's packing order
    return float(share[ink].mean() / share[~ink].mean())


#################################################################################
#                                   Quality                                     #
#################################################################################

def quality(canvases, prompts: pd.PromptedDigits, indices, judge: TextToImageJudge) -> dict:
    """{readback, mini_fid, mini_kid, accuracy} of canvases drawn from the prompts at `indices`."""
    want = (prompts.digits[indices], prompts.positions[indices], prompts.thicknesses[indices])
    feats = digits.features(sampling.to_uint8(pd.half_at(canvases, want[1])), judge.extractor)  # the prompted half
    return {"readback": judge.reader.score(canvases, *want), "mini_fid": digits.mini_fid(feats, judge.reference),
            "mini_kid": digits.mini_kid(feats, judge.reference), "accuracy": digits.accuracy(feats, want[0].numpy())}


def evaluate(model, s: SamplerSpec, judge: TextToImageJudge) -> dict:
    """Every number of one model under one sampler (see the module docstring); arrays: images, labels."""
    import time
    recorder = Recorder(model)
    start = time.perf_counter()
    canvases, indices = sample_canvases(model, s, judge.prompts, recorder)
    out = {"seconds_sampling": time.perf_counter() - start, "images": sampling.to_uint8(canvases),
           "labels": judge.prompts.digits[indices].numpy(), "flops_ratio": flops_ratio(model, recorder.calls),
           **quality(canvases, judge.prompts, indices, judge)}
    if model.is_dynamic and s.cfg_scale != 1.0:
        if recorder.calls[0][2][0].heads is not None:
            out["width_late_vs_early"] = width_noisy_minus_clean(recorder.calls)
        out["ink_vs_background"] = ink_over_background(model, recorder.calls, canvases)
    return out


def speed(s: SamplerSpec, flux, dyflux, heldout: pd.PromptedDigits, calls=5, repeats=5) -> dict:
    """s/image of FLUX, DyFLUX's fast path and its masked path on the suite's CFG batch (held-out prompts and the
    empty prompt) as DyFLUX's own sampled run feeds it at the timed steps, and the FLOPs ratio of exactly the calls
    timed, as for the class-conditional minis (bench.mini.evaluate.speed)."""
    from bench.mini import evaluate

    def path(model, fast):
        def call(x, t, y):
            model.fast = fast
            try:
                return model(x, t, y)
            finally:
                model.fast = False
        return call

    ids = pd.PromptTokenizer()(heldout.prompts[: s.batch_size])
    inputs = evaluate.trajectory_inputs(path(dyflux, True), s, (dyflux.in_channels, *dyflux.image_size), ids, PAD_ID,
                                        evaluate.timed_timesteps(s, calls))

    def flops_ratio_of(inputs):
        recorder = Recorder(dyflux)
        dyflux.fast = True
        try:
            for x, t, y in inputs:
                recorder(x, t, y)
        finally:
            dyflux.fast = False
        return flops_ratio(dyflux, recorder.calls)

    return evaluate.speed(s, inputs, {"dit": path(flux, False), "fast": path(dyflux, True),
                                      "masked": path(dyflux, False)}, flops_ratio_of, repeats)


def code_digest():
    """What decides an evaluation besides the model and the sampling (cache keys hash it)."""
    import dydit.flux
    import dydit.flux_flops
    import dydit.text2img
    return [hashlib.sha256(Path(m.__file__).read_bytes()).hexdigest()[:16]
            for m in (sys.modules[__name__], digits, pd, sampling, dydit.flux, dydit.flux_flops, dydit.text2img)]
