"""One training step's pieces: schedules, randomness from (seed, step), data order, the objective, EMA.

Randomness. Nothing in a step uses a global RNG: the data order comes from (seed, epoch), and the
timesteps, the diffusion noise, the VAE posterior noise and the model's own draws (the routers' Gumbel
noise, class dropout) from generators seeded by (seed, step, stream). Every draw is made for the whole
global batch and sliced to this rank's rows, so a sample's randomness depends on neither the world size
nor a restart: a resumed run is bit-identical on the CPU, and 2 ranks equal 1 process up to rounding.
"""
import contextlib
import math
from typing import Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils.data import Dataset, Sampler

from dydit.diffusion import GaussianDiffusion, sample_timesteps
from dydit.flow import FlowMatching

# random streams of one step
TIMESTEPS, NOISE, VAE_NOISE, ITEMS, MODEL_PASS = 0, 1, 2, 3, 4  # MODEL_PASS + i: the i-th forward pass
DATA_ORDER = 100


def derived_seed(*keys) -> int:
    """A 63-bit seed from integers (seed, step, stream, ...): numpy's SeedSequence hashing."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


#################################################################################
#                                   Schedules                                   #
#################################################################################

def learning_rate(step, lr, warmup=0, cosine=False, max_steps=1, min_lr=0.0):
    """nanoGPT's schedule: linear warm-up over `warmup` steps, then constant or cosine decay to min_lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if not cosine:
        return lr
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def router_noise(step, max_steps, anneal=0.0):
    """The routers' Gumbel noise scale at `step` (0-based): 1, then linear over the last `anneal` fraction of the
    run down to 0 at its last step, max_steps - 1 (anneal 0: 1 throughout, the official recipe), so the training
    masks end as the eval decision."""
    start = max_steps * (1.0 - anneal)
    if anneal <= 0 or step < start:
        return 1.0
    return max(0.0, 1.0 - (step + 1 - start) / (max_steps - start))


def flops_target(step, target, hold=100, warmup=0):
    """lambda_t: 1 for the first `hold` steps, then linear from 1 to `target` over `warmup` steps.

    The official script ramps from step 0 and overrides the first 100 steps with 1 (a jump at step 100);
    here the ramp starts after the hold.
    """
    if step < hold:
        return 1.0
    if warmup <= 0:
        return target
    return 1.0 - (1.0 - target) * min(1.0, (step - hold) / warmup)


#################################################################################
#                                   Randomness                                  #
#################################################################################

class BatchDraws(TorchFunctionMode):
    """Serves torch.rand / torch.rand_like called inside the model (Gumbel noise, class dropout) from one
    generator, drawn for the whole global batch and sliced to this rank's rows."""

    def __init__(self, generator, rows: slice, global_batch: int):
        super().__init__()
        self.generator, self.rows, self.global_batch = generator, rows, global_batch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.rand_like:
            like = args[0]
            shape, dtype, device = like.shape, kwargs.get("dtype") or like.dtype, kwargs.get("device") or like.device
        elif func is torch.rand and kwargs.get("generator") is None:
            shape = kwargs.get("size", args[0] if len(args) == 1 and not isinstance(args[0], int) else args)
            dtype, device = kwargs.get("dtype") or torch.get_default_dtype(), kwargs.get("device")
        else:
            return func(*args, **kwargs)
        local = self.rows.stop - self.rows.start
        if len(shape) == 0 or shape[0] % local:
            raise RuntimeError(f"a random draw of shape {tuple(shape)} inside the model is not per sample "
                               f"(local batch {local}): it cannot be made independent of the world size")
        per_sample = shape[0] // local  # rows per sample, sample-major (a clip's sequences: dydit.latte)
        full = torch.rand((self.global_batch, per_sample, *shape[1:]), generator=self.generator, dtype=dtype,
                          device=self.generator.device)
        return full[self.rows].reshape(shape).to(device)


class StepRandom:
    """The random draws of one step, from generators seeded by (seed, step, stream)."""

    def __init__(self, seed, step, rows: slice, global_batch, device):
        self.seed, self.step, self.rows, self.global_batch = seed, step, rows, global_batch
        self.device = torch.device(device)

    def generator(self, stream):
        return torch.Generator(device=self.device).manual_seed(derived_seed(self.seed, self.step, stream))

    def timesteps(self, stratified, num_timesteps):
        """(local batch,) timesteps (stratified by the global index)."""
        t = sample_timesteps(self.global_batch, self.generator(TIMESTEPS), stratified, num_timesteps, self.device)
        return t[self.rows]

    def flow_times(self, stratified):
        """(local batch,) flow-matching times in [0, 1) (stratified by the global index)."""
        t = FlowMatching.sample_times(self.global_batch, self.generator(TIMESTEPS), stratified, self.device)
        return t[self.rows]

    def normal(self, shape, stream):
        """(local batch, *shape) standard normal noise."""
        full = torch.randn((self.global_batch, *shape), generator=self.generator(stream), device=self.device)
        return full[self.rows]

    def model_draws(self, forward_pass):
        """Context in which the model's own random draws of this forward pass come from (seed, step)."""
        return BatchDraws(self.generator(MODEL_PASS + forward_pass), self.rows, self.global_batch)


#################################################################################
#                                   Data order                                  #
#################################################################################

class StepBatches(Sampler):
    """This rank's rows of each global batch, steps [start, end): epochs are permutations from
    (seed, epoch), the last incomplete batch of an epoch is dropped. Yields lists of (index, item seed);
    the item seed (from (seed, step, position)) drives the item's own torch randomness (e.g. flips)."""

    def __init__(self, num_items, global_batch, rows: slice, seed, start, end):
        if num_items < global_batch:
            raise ValueError(f"the dataset has {num_items} items, fewer than one global batch ({global_batch})")
        self.num_items, self.global_batch, self.rows, self.seed = num_items, global_batch, rows, seed
        self.start, self.end = start, end
        self.steps_per_epoch = num_items // global_batch

    def __len__(self):
        return max(0, self.end - self.start)

    def __iter__(self):
        epoch, order = None, None
        for step in range(self.start, self.end):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                order = np.random.default_rng([self.seed, DATA_ORDER, epoch]).permutation(self.num_items)
            first = (step % self.steps_per_epoch) * self.global_batch
            indices = order[first: first + self.global_batch]
            seeds = np.random.default_rng([self.seed, step, ITEMS]).integers(0, 2 ** 62, self.global_batch)
            yield [(int(i), int(s)) for i, s in zip(indices[self.rows], seeds[self.rows])]


class SeededItems(Dataset):
    """dataset[index] under torch.manual_seed(item seed): random transforms repeat exactly on a resume."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


#################################################################################
#                                   Objective                                   #
#################################################################################

def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the global batch of a per-sample tensor; differentiable in this rank's samples only."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x.mean()
    world = dist.get_world_size()
    total = torch.stack([x.detach().sum(), torch.tensor(float(len(x)), device=x.device, dtype=x.dtype)])
    dist.all_reduce(total)  # (sum, count) over all ranks
    # value: the global mean; gradient: this rank's samples, times world size (DDP averages over ranks)
    scaled = x.sum() * world / total[1]
    return scaled - scaled.detach() + total[0] / total[1]


class TrainingObjective(nn.Module):
    """The whole loss of one step in one forward, so that DDP sees one forward per backward.

    DiT: the diffusion loss. DyDiT: the diffusion loss of the dynamic path (the model's own routers,
    Gumbel-sigmoid straight-through), + the same loss of the complete model (optional), + flops_weight *
    (global-batch mean of F_dyn / F_static - lambda_t)^2 with the masks of the dynamic pass.
    """

    def __init__(self, model: nn.Module, diffusion, flops_weight=2.0):  # GaussianDiffusion or flow.FlowMatching
        super().__init__()
        self.model = model
        self.diffusion = diffusion
        self.flops_weight = flops_weight

    def forward(self, x_start, y, t, noise, lambda_t=1.0, complete=False, draws: Optional[StepRandom] = None,
                router_noise=1.0):
        """Returns {"loss" (to backpropagate), "diffusion", "complete", "flops_loss", "flops_ratio"}."""
        model, diffusion = self.model, self.diffusion
        x_t = diffusion.q_sample(x_start, t, noise)
        # a dynamic model (DyDiT, dydit.text2img's DyFLUX) offers: is_dynamic, set_router_noise, complete_model,
        # record=, training_flops_ratio(record, y)
        dynamic = getattr(model, "is_dynamic", False) is True
        record = [] if dynamic else None
        if dynamic:
            model.set_router_noise(router_noise)

        def run(forward_pass, **kwargs):
            with draws.model_draws(forward_pass) if draws is not None else contextlib.nullcontext():
                return model(x_t, t, y, **kwargs)

        out = run(0, **({"record": record} if dynamic else {}))
        terms = {"diffusion": diffusion.losses_from_output(out, x_start, x_t, t, noise)["loss"].mean()}
        loss = terms["diffusion"]
        zero = torch.zeros((), device=x_start.device)
        terms["complete"], terms["flops_loss"], terms["flops_ratio"] = zero, zero, zero + 1.0
        if dynamic:
            if complete:
                model.complete_model = True
                try:
                    out = run(1)
                finally:
                    model.complete_model = False
                terms["complete"] = diffusion.losses_from_output(out, x_start, x_t, t, noise)["loss"].mean()
                loss = loss + terms["complete"]
            ratio = global_mean(model.training_flops_ratio(record, y))  # mean of the per-sample F_dyn / F_static
            terms["flops_loss"] = self.flops_weight * (ratio - lambda_t) ** 2
            terms["flops_ratio"] = ratio.detach()
            loss = loss + terms["flops_loss"]
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, copied=frozenset()):
    """ema <- decay * ema + (1 - decay) * model, every trained parameter (as DiT's train.py); those named in
    `copied` are copied instead (TrainConfig.ema_routers=False). A frozen one (an adapter run's base) stays equal to
    the model's: averaging it would only add rounding."""
    ema_params = dict(ema.named_parameters())
    for name, param in model.named_parameters():
        if name in copied:
            ema_params[name].copy_(param.detach())
        elif param.requires_grad:
            ema_params[name].mul_(decay).add_(param.detach(), alpha=1 - decay)


def loss_terms(out: Dict[str, torch.Tensor], grad_norm) -> torch.Tensor:
    """The logged numbers of one step as one tensor (reduced across ranks in one collective)."""
    return torch.stack([out["loss"].detach(), out["diffusion"], out["complete"], out["flops_loss"],
                        out["flops_ratio"], grad_norm.detach().to(out["loss"].device).float()])


TERM_NAMES = ("loss", "diffusion", "complete", "flops_loss", "flops_ratio", "grad_norm")
