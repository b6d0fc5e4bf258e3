"""Seconds per image of a whole sampling loop (scheduler, CFG batch, VAE decode), for several paths at once.

A whole DDPM-250 loop of DiT-XL takes minutes per image on a CPU, so the loop is estimated from timed
calls on the schedule's *own* timesteps and checked once against whole runs (`check_estimate`):

    s/image = ( full steps   x mean time of a full model call   (K calls at the schedule's timesteps,
                                                                  evenly spread)
              + cached steps x mean time of a cached call        (DeepCache; 0 without)
              + the loop's own work: scheduler steps, CFG split and combine, over the whole schedule,
                timed with a model that returns a constant (its call costs nothing)
              + VAE decoding of the batch ) / batch

with each kind of call's median over the interleaved rounds (the same sum per round gives the rounds' spread).
Every path's calls are interleaved call by call (bench.timing), so host drift lands on all of them alike;
compare paths as ratios from one run. FLOPs beside the times: per image, the model calls of the whole
loop (two rows per image with CFG; a DyDiT's from the masks its timed calls ran with, a cached step's
as dydit.deepcache documents) plus the VAE decode.
"""
import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from bench.timing.calls import interleaved_call_medians, median_seconds
from dydit import sampling
from dydit.deepcache import DeepCache, cached_step_macs, is_full_step
from dydit.fast import FastDyDiT
from dydit.flops import Arch, attention_macs, dit_macs, dynamic_macs, mlp_macs
from dydit.models import DiT, DyDiT
from dydit.sampling import SamplerSpec


@dataclass
class LoopPath:
    """One way of sampling: a model_fn (DiT, DyDiT masked or FastDyDiT) and its DeepCache interval."""
    name: str
    model_fn: object
    deepcache: int = 0

    @property
    def model(self) -> DiT:
        return self.model_fn.model if isinstance(self.model_fn, FastDyDiT) else self.model_fn


@dataclass
class LoopTiming:
    """One path's estimated whole loop (seconds are per batch unless named per image)."""
    name: str
    sampler: str
    steps: int
    deepcache: int
    batch: int
    full_steps: int
    cached_steps: int
    full_call_s: float
    cached_call_s: float
    loop_s: float  # scheduler + CFG work of the whole schedule
    decode_s: float
    s_per_image: float
    model_gmacs_per_image: float
    decode_gmacs_per_image: float
    calls_timed: int
    sliced_weights_gib: float = 0.0  # FastDyDiT's cached slices after the run
    call_peak_gib: Optional[float] = None  # CUDA: peak allocation of one call above what was allocated before it
    extra: dict = field(default_factory=dict)
    # s/image of each interleaved round (the same loop and decode time, that round's calls): round r of every path
    # ran side by side, so a ratio of two paths per round cancels the host's drift; their range is its spread
    rounds_s_per_image: List[float] = field(default_factory=list)
    call_macs: float = 0.0  # MACs of one full call, the mean over the timed calls (a further look reuses it)

    @property
    def gmacs_per_image(self) -> float:
        return self.model_gmacs_per_image + self.decode_gmacs_per_image

    def with_rounds(self, more: List[float]) -> "LoopTiming":
        """This timing with `more` rounds of the same path appended; s/image the median of them all (the same as the
        sum of medians without DeepCache, where a round's s/image is one call kind's time, scaled and shifted)."""
        rounds = self.rounds_s_per_image + list(more)
        return replace(self, rounds_s_per_image=rounds, s_per_image=statistics.median(rounds))

    def to_dict(self) -> dict:
        return {**asdict(self), "gmacs_per_image": self.gmacs_per_image}


def picks(num_steps: int, calls: int, interval: int = 0, cost: Optional[List[float]] = None) -> List[int]:
    """Indices of K full steps of a schedule: evenly spread over the schedule, or, given a cost per step,
    the medians of K equal strata of the steps ordered by cost (so the K calls cost what the schedule's
    full steps cost on average, even where a DyDiT's width jumps between neighbouring steps)."""
    full = [i for i in range(num_steps) if is_full_step(i, interval)]
    k = min(calls, len(full))
    if cost is None:
        return sorted({full[int(round(j))] for j in np.linspace(0, len(full) - 1, k)})
    ordered = sorted(full, key=lambda i: (cost[i], i))
    return sorted({ordered[int((j + 0.5) * len(ordered) / k)] for j in range(k)})


def width_cost(model_fn, timesteps) -> Optional[List[float]]:
    """Per step, the attention + MLP MACs of a FastDyDiT's width plan (all tokens); None for a static model."""
    if not isinstance(model_fn, FastDyDiT):
        return None
    a = Arch.of(model_fn.model)
    plan = model_fn.prepare([float(t) for t in timesteps]).plan
    return [sum(attention_macs(a, len(h)) + mlp_macs(a, len(g)) for h, g in plan[float(t)]) for t in timesteps]


def step_counts(num_steps: int, interval: int):
    """(full steps, cached steps) of a schedule with DeepCache interval."""
    full = sum(is_full_step(i, interval) for i in range(num_steps))
    return full, num_steps - full


class _Inputs:
    """One CFG batch [cond; uncond] of random latents and labels, and the sampler's noise."""

    def __init__(self, model: DiT, batch: int, cfg_scale: float, null_class: int, device, seed=0):
        g = torch.Generator().manual_seed(seed)
        shape = (model.in_channels, model.input_size, model.input_size)
        self.rows = 2 * batch if cfg_scale != 1.0 else batch
        self.x = torch.randn(self.rows, *shape, generator=g).to(device)
        labels = torch.randint(0, null_class, (batch,), generator=g)
        self.y = (torch.cat([labels, torch.full_like(labels, null_class)]) if cfg_scale != 1.0 else labels).to(device)
        self.labels = labels.to(device)
        self.noise, _ = sampling.noise_for(range(batch), seed, shape)
        self.noise = self.noise.to(device)
        self.seed, self.batch = seed, batch

    def generators(self):
        return [sampling.index_generator(self.seed, i) for i in range(self.batch)]


def _call_macs(path: LoopPath, x, t, y) -> float:
    """MACs per row of one full call of a path at timestep t (a DyDiT's from the masks it ran with)."""
    model = path.model
    if not isinstance(model, DyDiT) or model.complete_model:
        return float(dit_macs(model))
    record = []
    with torch.no_grad():
        path.model_fn(x, t, y, record=record)
    return float(dynamic_macs(model, record).mean())


@torch.no_grad()
def time_loops(paths: List[LoopPath], spec: SamplerSpec, calls: int = 3, repeats: int = 3,
               decode: Optional[Callable] = None, decode_gmacs_per_image: float = 0.0, device="cpu", seed=0,
               log=print, decode_s: Optional[float] = None, loop_s: Optional[float] = None,
               call_macs: Optional[Dict[str, float]] = None) -> Dict[str, LoopTiming]:
    """Estimated whole-loop s/image of every path sampling as `spec` says (sampler, steps, batch_size, CFG;
    see the module docstring); decode(latents) times the VAE (decode_s: its time for this batch, measured
    before: the same for every sampler). A further look at the same paths passes what the first measured and
    does not depend on the rounds: loop_s (the null loop's time) and call_macs ({path: LoopTiming.call_macs})."""
    call_macs = call_macs or {}
    sampler, steps, batch = spec.name, spec.steps, spec.batch_size
    cfg_scale, guided_channels = spec.cfg_scale, spec.guided_channels
    timesteps = sampling.sampler_timesteps(sampler, steps)
    S = len(timesteps)
    model0 = paths[0].model
    null_class = model0.y_embedder.embedding_table.num_embeddings - 1
    inp = _Inputs(model0, batch, cfg_scale, null_class, device, seed)
    t_of = lambda i: torch.full((inp.rows,), int(timesteps[i]), device=device)  # noqa: E731
    timed, caches, macs = {}, {}, {}
    for path in paths:
        # FastDyDiT: prepare() plans the whole run (and the slices it caches); picks stratified by width
        idx = picks(S, calls, path.deepcache, width_cost(path.model_fn, timesteps))
        if path.deepcache > 1:
            cache = caches[path.name] = DeepCache(path.model_fn, path.deepcache)
            timed[f"{path.name}/full"] = [lambda i=i, c=cache: c.full(inp.x, t_of(i), inp.y) for i in idx]
            timed[f"{path.name}/cached"] = [lambda i=i, c=cache: c.cached(inp.x, t_of(i), inp.y) for i in idx]
        else:
            timed[f"{path.name}/full"] = [lambda i=i, f=path.model_fn: f(inp.x, t_of(i), inp.y) for i in idx]
        macs[path.name] = call_macs[path.name] if path.name in call_macs else \
            float(np.mean([_call_macs(path, inp.x, t_of(i), inp.y) for i in idx]))
    # the K calls per name must line up: pad the shorter lists (fewer full steps) by repeating their last call
    k = max(len(v) for v in timed.values())
    counts = {name: len(v) for name, v in timed.items()}
    timed = {name: v + [v[-1]] * (k - len(v)) for name, v in timed.items()}
    # no warm-up round: the first round (kernels, allocator, FastDyDiT's slices) is one of the repeats, which the
    # median leaves out when it is the slow one; at least 3 repeats for that reason
    log(f"  {sampler}-{S}: {k} calls x {len(timed)} paths, interleaved, median of {max(3, repeats)}...")
    medians = interleaved_call_medians(timed, repeats=max(3, repeats), warmup=0, device=device)
    per_call = {name: medians[name][0] / k for name in timed}  # padded calls repeat real ones: mean unchanged
    per_round = {name: [total / k for total in medians[name][1]] for name in timed}

    # the loop's own work, with a model whose call costs nothing
    template = torch.zeros(inp.rows, model0.out_channels, model0.input_size, model0.input_size, device=device)
    null_model = lambda x, t, y: template[: len(x)]  # noqa: E731
    run_null = lambda: sampling.sample_latents(null_model, sampler, inp.noise, inp.labels, steps,  # noqa: E731
                                               inp.generators(), cfg_scale, guided_channels, null_class)
    if loop_s is None:
        loop_s, _ = median_seconds(run_null, repeats=repeats, warmup=1, device=device)
    if decode_s is None:
        decode_s = median_seconds(lambda: decode(inp.noise), repeats=repeats, warmup=1, device=device)[0] if decode else 0.0

    peaks = {} if call_macs else _call_peaks(paths, timed, device)  # a further look keeps the first's
    rows_per_image = inp.rows / batch
    out = {}
    for path in paths:
        full, cached = step_counts(S, path.deepcache)
        full_s = per_call[f"{path.name}/full"]
        cached_s = per_call.get(f"{path.name}/cached", 0.0)
        total = full * full_s + cached * cached_s + loop_s + decode_s
        cached_rounds = per_round.get(f"{path.name}/cached", [0.0] * len(per_round[f"{path.name}/full"]))
        rounds = [(full * f + cached * c + loop_s + decode_s) / batch
                  for f, c in zip(per_round[f"{path.name}/full"], cached_rounds)]
        model_macs = rows_per_image * (full * macs[path.name] + cached * cached_step_macs(path.model))
        sliced = getattr(path.model_fn, "_cached_bytes", 0) / 2**30
        out[path.name] = LoopTiming(path.name, sampler, S, path.deepcache, batch, full, cached, full_s, cached_s,
                                    loop_s, decode_s, total / batch, model_macs / 1e9, decode_gmacs_per_image,
                                    counts[f"{path.name}/full"], sliced, peaks.get(path.name),
                                    rounds_s_per_image=rounds, call_macs=macs[path.name])
    return out


def _call_peaks(paths, timed, device) -> Dict[str, float]:
    """CUDA only: per path, the peak memory of a full (and a cached) call above what was allocated before
    it (activations, per-call slices); the path's persistent sliced weights are reported beside it."""
    if torch.device(device).type != "cuda":
        return {}
    peaks = {}
    for path in paths:
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        for kind in ("full", "cached"):
            if f"{path.name}/{kind}" in timed:
                timed[f"{path.name}/{kind}"][0]()
        torch.cuda.synchronize(device)
        peaks[path.name] = (torch.cuda.max_memory_allocated(device) - before) / 2**30
    return peaks


# a whole run shorter than this (by its estimate) is repeated within each round until it lasts about this long, at
# most WHOLE_RUN_MAX_TIMES: a mini DyDiT with DeepCache 5 samples 250 digits in 10 DPM-Solver++ steps in 0.85 s, and
# single runs of it spread 25 % (repeated 4 times); the tests' tiny models would otherwise repeat hundreds of times
WHOLE_RUN_MIN_S, WHOLE_RUN_MAX_TIMES = 3.0, 8


@torch.no_grad()
def check_estimate(paths: List[LoopPath], estimates: Dict[str, LoopTiming], repeats: int = 2,
                   cfg_scale: float = 1.5, guided_channels: Optional[int] = 3, decode=None, device="cpu",
                   seed=0) -> Dict[str, dict]:
    """Whole sampling runs (every step, then the decode) of the paths of `estimates`, interleaved round by round
    (a round runs each path once, or `times` runs in a row where one is shorter than WHOLE_RUN_MIN_S), against the
    estimate: {path: {measured_s_per_image, estimated_s_per_image, rel_error, times}}."""
    first = estimates[paths[0].name]
    model0 = paths[0].model
    null_class = model0.y_embedder.embedding_table.num_embeddings - 1
    inp = _Inputs(model0, first.batch, cfg_scale, null_class, device, seed)

    times = {p.name: min(WHOLE_RUN_MAX_TIMES, max(1, math.ceil(WHOLE_RUN_MIN_S / (estimates[p.name].s_per_image
                                                                                   * first.batch))))
             for p in paths}

    def whole(path):
        def call():
            for _ in range(times[path.name]):
                z = sampling.sample_latents(path.model_fn, first.sampler, inp.noise, inp.labels, first.steps,
                                            inp.generators(), cfg_scale, guided_channels, null_class, path.deepcache)
                result = decode(z) if decode else z
            return result
        return [call]
    medians = interleaved_call_medians({p.name: whole(p) for p in paths}, repeats=repeats, warmup=0, device=device)
    out = {}
    for p in paths:
        measured = medians[p.name][0] / times[p.name] / first.batch
        estimated = estimates[p.name].s_per_image
        runs = [r / times[p.name] for r in medians[p.name][1]]  # seconds per batch of one whole run, per round
        out[p.name] = {"measured_s_per_image": measured, "estimated_s_per_image": estimated,
                       "rel_error": estimated / measured - 1.0, "runs": runs, "times": times[p.name],
                       "rel_error_rounds": [estimated / (r / first.batch) - 1.0 for r in runs]}
    return out


def vae_decode_gmacs(vae, latent_size: int) -> float:
    """fvcore GMACs of decoding one latent (the SD VAE at 32 -> 256 x 256: convolutions dominate)."""
    from dydit.flops import fvcore_macs
    z = torch.zeros(1, 4, latent_size, latent_size, device=next(vae.parameters()).device)
    return fvcore_macs(vae, (z,), forward=lambda z: vae.decode(z).sample) / 1e9


def shared_dit(dydit: DyDiT) -> DiT:
    """A DiT whose parameters *are* the DyDiT's (no second copy in memory): the DiT path of the same weights."""
    dit = DiT(input_size=dydit.input_size, patch_size=dydit.patch_size, in_channels=dydit.in_channels,
              hidden_size=dydit.hidden_size, depth=len(dydit.blocks), num_heads=dydit.num_heads,
              mlp_ratio=dydit.mlp_ratio, num_classes=dydit.y_embedder.embedding_table.num_embeddings - 1,
              learn_sigma=dydit.learn_sigma)
    dit.load_state_dict({k: v for k, v in dydit.state_dict().items() if k in dit.state_dict()}, assign=True)
    return dit.eval()
