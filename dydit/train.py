"""Training: DiT from scratch and DyDiT fine-tuned from a DiT checkpoint, one code path at any scale.

    from dydit.train import train
    from dydit.train_config import PRESETS, TrainConfig
    result = train(TrainConfig(**PRESETS["dydit-xl-0.7"].overrides), dataset, "runs/dydit-0.7")  # under torchrun too

The objective is DiT's diffusion loss (eps-MSE + the variational bound for the learned sigma) of the
dynamic path, + the complete model's (optional), + 2 (mean F_dyn/F_static - lambda_t)^2 (train_step.py).
AdamW, EMA, gradient clipping and exactly one optimizer step per iteration (the official script steps
twice). Multi-GPU: torchrun + DistributedDataParallel (nccl on CUDA, gloo on the CPU). A run folder holds
config.json, log.jsonl and checkpoints/{step:07d}.pt = {"model", "ema", "opt", "args", "step"} (DiT's
layout: `dydit.checkpoints.load_checkpoint` reads its EMA weights; `dydit.checkpoints.load_trained` any
run's, adapters included). All randomness derives from (seed, step), so `resume=True` continues
bit-exactly on the CPU, from any world size. The config and the presets are dydit/train_config.py.

SIGINT (Ctrl-C) and SIGTERM (what a cluster scheduler sends before it kills a job) finish the current step,
write a checkpoint and raise TrainInterrupted (a KeyboardInterrupt) naming it: nothing since the last
checkpoint is lost, and `resume=True` continues as if nothing had happened. A second Ctrl-C stops at once.
"""
import dataclasses
import json
import os
import re
import signal
import threading
import time
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dydit import weights
from dydit.checkpoints import add_adapter, is_router_key, load_checkpoint, load_matching
from dydit.diffusion import GaussianDiffusion
from dydit.fileio import atomic_write, sha256_file
from dydit.flow import FlowMatching
from dydit.lora import trainable_parameters
from dydit.models import DyDiT
from dydit import registry
from dydit.registry import create_model
from dydit.sampling import LATENT_SCALE, load_vae
from dydit.train_config import RUN_ONLY, NonFiniteLoss, TrainConfig, TrainError
from dydit.train_step import (NOISE, TERM_NAMES, VAE_NOISE, SeededItems, StepBatches, StepRandom,
                              TrainingObjective, flops_target, learning_rate, loss_terms, router_noise,
                              update_ema)


@dataclass
class TrainResult:
    """What a run ended with."""
    model: nn.Module  # the trained weights (train mode)
    ema: nn.Module  # the EMA weights (eval mode)
    step: int
    run_dir: Path
    checkpoint: Optional[Path]  # the last checkpoint written or resumed from


class TrainInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM after a finished step, its checkpoint written (resume from it)."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path, run_dir: Path):
        super().__init__(f"{signal_name} at step {step}: checkpoint {checkpoint} written; resume the run in {run_dir}")
        self.signal_name, self.step, self.checkpoint, self.run_dir = signal_name, step, checkpoint, run_dir


#################################################################################
#                                 Interruption                                  #
#################################################################################

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """While active (main thread only), SIGINT / SIGTERM are recorded instead of raised: the loop finishes its
    step, checkpoints and stops. A second SIGINT raises KeyboardInterrupt at once (a user who means it)."""

    def __init__(self):
        self.received: Optional[str] = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._record) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False

    def _record(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name


def _ignore_stop_signals(worker_id):
    """DataLoader workers leave SIGINT / SIGTERM to the main process, which stops them after its step."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


#################################################################################
#                                 Run folder                                    #
#################################################################################

def checkpoints_of(run_dir) -> list:
    """The run's checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [p for p in folder.glob("*.pt") if re.fullmatch(r"\d{7,}\.pt", p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.stem))


def config_differences(saved: dict, config: TrainConfig) -> list:
    """'field saved vs now' for each field (RUN_ONLY aside) that differs from a checkpoint's args."""
    now = dataclasses.asdict(config)
    # a field newer than the checkpoint counts as its default there (the run trained as the default does)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    was = {k: saved.get(k, defaults.get(k, "<absent>")) for k in now}
    return [f"{k} {was[k]!r} (saved) vs {v!r} (now)" for k, v in now.items() if k not in RUN_ONLY and was[k] != v]


def save_training_checkpoint(path, model, ema, opt, config, step):
    """{"model", "ema", "opt", "args", "step"}, written atomically (a crash leaves the previous files). An
    adapter run keeps only the trained tensors of model and EMA, and "base_sha256" of its init_checkpoint."""
    state = {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
             "args": dataclasses.asdict(config), "step": step}
    if config.adapter != "none":
        trained = set(trainable_parameters(model))
        state["model"] = {k: v for k, v in state["model"].items() if k in trained}
        state["ema"] = {k: v for k, v in state["ema"].items() if k in trained}
        state["base_sha256"] = sha256_file(config.init_checkpoint)
    atomic_write(path, lambda f: torch.save(state, f))


def _truncate_log(path, step):
    """Drops log lines after `step` (written after the checkpoint a resume starts from) and torn lines."""
    def kept(line):
        try:
            return json.loads(line)["step"] <= step
        except (ValueError, KeyError, TypeError):
            return False
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if kept(ln)]
        atomic_write(path, lambda f: f.write("".join(ln + "\n" for ln in lines)), text=True)


#################################################################################
#                                  Distributed                                  #
#################################################################################

def _setup_distributed(config):
    """(rank, world, device, owns_group): joins torchrun's process group when launched by torchrun."""
    cuda = (config.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if "RANK" not in os.environ and not dist.is_initialized():  # one process
        return 0, 1, torch.device(config.device or ("cuda" if cuda else "cpu")), False
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    owns_group = not dist.is_initialized()
    if owns_group:
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local_rank}" if cuda else "cpu"), owns_group


@torch.no_grad()
def encode_images(vae, images, draws: StepRandom):
    """Images in [-1, 1] -> latents: a sample of the VAE posterior (noise from the step's stream) x 0.18215."""
    posterior = vae.encode(images).latent_dist
    return (posterior.mean + posterior.std * draws.normal(posterior.mean.shape[1:], VAE_NOISE)) * LATENT_SCALE


#################################################################################
#                                  Training loop                                #
#################################################################################

def set_token_router_bias(model, bias: float):
    """Sets every token router's output bias (TrainConfig.token_router_bias): DyDiT's last MLP layer, DyFLUX's scorer
    (dydit.flux); a model without token routers refuses."""
    if isinstance(model, DyDiT):
        outputs = [block.token_selection.mlp_head[-1].bias for block in model.blocks]
    elif getattr(model, "is_dynamic", False) and hasattr(model, "transformer"):  # dydit.text2img: DyFLUX
        blocks = [*model.transformer.transformer_blocks, *model.transformer.single_transformer_blocks]
        outputs = [block.token_selection.router.bias for block in blocks]
    else:
        raise TrainError(f"token_router_bias is a DyDiT setting; {type(model).__name__} has no token routers")
    with torch.no_grad():
        for bias_ in outputs:
            bias_.fill_(bias)


def parameter_groups(model, token_router_lr_scale=1.0) -> list:
    """AdamW's parameter groups of the trained tensors, each with its lr_scale: the token routers' is
    token_router_lr_scale (one group when it is 1 or they are frozen: earlier checkpoints' optimizer state keeps
    its layout)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if token_router_lr_scale != 1.0 and not getattr(model, "is_dynamic", False):
        raise TrainError(f"token_router_lr_scale is a DyDiT setting; {type(model).__name__} has no token routers")
    routers = [p for n, p in named if ".token_selection." in f".{n}"]
    if token_router_lr_scale == 1.0 or not routers:  # none trained: the ablation's "TDW only"
        return [{"params": [p for _, p in named], "lr_scale": 1.0}]
    ids = {id(p) for p in routers}
    return [{"params": [p for _, p in named if id(p) not in ids], "lr_scale": 1.0},
            {"params": routers, "lr_scale": token_router_lr_scale}]


def train(config: TrainConfig, dataset, run_dir, resume=False, stop_after: Optional[int] = None, progress=True,
          vae: Optional[nn.Module] = None) -> TrainResult:
    """Trains on `dataset` (items (x, y): latents, or images with config.vae) into run_dir.

    resume=True continues the run's last checkpoint (the config must match but for RUN_ONLY fields);
    stop_after ends (with a checkpoint) after that step, as an interruption would; vae: a VAE module to
    use instead of loading config.vae.
    """
    config.validate()
    rank, world, device, owns_group = _setup_distributed(config)
    try:
        return _train(config, dataset, Path(run_dir), resume=resume, stop_after=stop_after, progress=progress,
                      vae=vae, rank=rank, world=world, device=device)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, dataset, run_dir: Path, *, resume: bool, stop_after: Optional[int], progress: bool,
           vae: Optional[nn.Module], rank: int, world: int, device: torch.device) -> TrainResult:
    """train()'s body, on this rank of `world` processes (the process group already joined)."""
    B = config.global_batch_size
    if B % world:
        raise TrainError(f"global batch {B} does not split over {world} ranks")
    if len(dataset) < B:
        raise TrainError(f"the dataset has {len(dataset)} items, fewer than one global batch ({B})")
    rows = slice(rank * (B // world), (rank + 1) * (B // world))
    found = checkpoints_of(run_dir)
    state = None
    if resume:
        if not found:
            raise TrainError(f"cannot resume {run_dir}: no checkpoint in {run_dir / 'checkpoints'}")
        state = weights.read(found[-1])
        diffs = config_differences(state["args"], config)
        if diffs:
            raise TrainError(f"cannot resume {run_dir}: it was trained with another config: {'; '.join(diffs)}")
    elif found:
        raise TrainError(f"{run_dir} already holds checkpoints (last {found[-1].name}): resume it or use "
                         "another folder")
    if device.type == "cuda" and config.precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # model, EMA, optimizer
    if vae is None and config.vae:
        vae = load_vae(config.vae)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG is left alone (a random transform draws)
        x_probe = torch.as_tensor(dataset[0][0])
    if vae is not None:
        vae = vae.to(device).eval().requires_grad_(False)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        size, channels = x_probe.shape[-1] // factor, vae.config.latent_channels
    else:
        size, channels = x_probe.shape[-1], x_probe.shape[-3]  # an image (C, H, W) or a clip (F, C, H, W)
    video = registry.entry(config.model).family == "Latte"
    if video != (x_probe.ndim == 4) or (video and vae is not None):
        raise TrainError(f"{config.model} takes " + ("clips (frames, C, H, W), e.g. --data moving-digits, without a VAE"
                         if video else "images (C, H, W)") + f"; the data give items of shape {tuple(x_probe.shape)}")
    text_to_image = registry.entry(config.model).is_text_to_image  # (image, prompt token ids) items
    classes = getattr(dataset, "num_classes", None)
    if text_to_image and classes is not None:
        raise TrainError(f"{config.model} is text-to-image: train it on prompted images (--data prompted-digits), "
                         f"not on {classes} classes")
    if text_to_image:  # dydit.text2img: any image size, prompts instead of classes
        kwargs = dict(image_size=tuple(x_probe.shape[-2:]), in_channels=x_probe.shape[0])
    else:
        kwargs = dict(input_size=config.input_size or size, in_channels=config.in_channels or channels)
        if video:  # dydit.latte: the clip's frame count
            kwargs["num_frames"] = x_probe.shape[0]
        if config.num_classes is not None:
            kwargs["num_classes"] = config.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = create_model(config.model, **kwargs)
    if not text_to_image and (kwargs["input_size"], kwargs["in_channels"]) != (size, channels):
        raise TrainError(f"the data give {channels} x {size} x {size} inputs; the model is configured for "
                         f"{kwargs['in_channels']} x {kwargs['input_size']} x {kwargs['input_size']}")
    if classes is not None and not text_to_image and classes > model.y_embedder.num_classes:
        raise TrainError(f"the data have {classes} classes, the model {model.y_embedder.num_classes}: "
                         "set num_classes")
    if config.init_checkpoint and config.init_matching and state is None:
        load_matching(model, config.init_checkpoint)  # Latte from an image DiT: what matches, the rest as made
    elif config.init_checkpoint and (state is None or config.adapter != "none"):  # an adapter's base, always
        load_checkpoint(model, config.init_checkpoint, router_seed=config.seed)  # fresh routers from the seed
    with torch.random.fork_rng(devices=[]):  # the adapters' initial A from the run's seed, as the model's
        torch.manual_seed(config.seed)
        add_adapter(model, config)
    if config.token_router_bias is not None and state is None:  # a resume reads the trained bias
        set_token_router_bias(model, config.token_router_bias)
    model.to(device)
    ema = deepcopy(model).requires_grad_(False).eval()
    ema_copied = frozenset() if config.ema_routers else \
        frozenset(n for n, p in model.named_parameters() if is_router_key(n) and p.requires_grad)
    if not config.ema_routers and not getattr(model, "is_dynamic", False):
        raise TrainError(f"ema_routers is a DyDiT setting; {type(model).__name__} has no routers: leave it on "
                         "(drop --no-ema-routers)")
    opt = torch.optim.AdamW(parameter_groups(model, config.token_router_lr_scale), lr=config.lr,
                            betas=(config.adam_beta1, config.adam_beta2), weight_decay=config.weight_decay)
    step, last = 0, None
    if state is not None:
        strict = config.adapter == "none"  # an adapter run's checkpoint holds its trained tensors only
        model.load_state_dict(state["model"], strict=strict)
        ema.load_state_dict(state["ema"], strict=strict)
        opt.load_state_dict(state["opt"])
        step, last = state["step"], found[-1]
    end = config.max_steps if stop_after is None else min(config.max_steps, stop_after)
    log_path = run_dir / "log.jsonl"
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.json", lambda f: json.dump(dataclasses.asdict(config), f, indent=1), text=True)
        _truncate_log(log_path, step)
    if step >= end:
        return TrainResult(model.train(), ema, step, run_dir, last)

    flow = config.objective == "flow"
    objective = TrainingObjective(model, FlowMatching() if flow else GaussianDiffusion(min_snr_gamma=config.min_snr_gamma),
                                  config.flops_weight)
    ddp = DDP(objective, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else objective
    loader = DataLoader(SeededItems(dataset), batch_sampler=StepBatches(len(dataset), B, rows, config.seed, step, end),
                        num_workers=config.num_workers, pin_memory=device.type == "cuda",
                        worker_init_fn=_ignore_stop_signals if config.num_workers else None,
                        generator=torch.Generator())  # its worker seeds are unused (SeededItems seeds items)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()  # class dropout and Gumbel noise on
    bar = tqdm(total=config.max_steps, initial=step, disable=not progress or rank != 0, unit="step",
               desc=config.model, dynamic_ncols=True)
    sums, count, start, tick = None, 0, time.time(), time.time()
    with StopSignals() as stop:
        try:
            for x, y in loader:
                x, y = x.to(device, non_blocking=True).float(), y.to(device, non_blocking=True)
                draws = StepRandom(config.seed, step, rows, B, device)
                if vae is not None:
                    x = encode_images(vae, x, draws)
                t = draws.flow_times(config.stratified_timesteps) if flow else \
                    draws.timesteps(config.stratified_timesteps, objective.diffusion.num_timesteps)
                noise = draws.normal(x.shape[1:], NOISE)
                lr = learning_rate(step, config.lr, config.lr_warmup, config.lr_cosine, config.max_steps, config.min_lr)
                for group in opt.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints before token_router_lr_scale lack it
                lambda_t = flops_target(step, config.flops_ratio, config.flops_hold, config.flops_warmup)
                noise_scale = router_noise(step, config.max_steps, config.router_noise_anneal)
                until = config.complete_loss_until
                complete = config.complete_loss and (until is None or step < until)

                out = ddp(x, y, t, noise, lambda_t, complete, draws, noise_scale)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                if config.grad_clip is None:
                    grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
                else:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                terms = loss_terms(out, grad_norm)
                if world > 1:
                    dist.all_reduce(terms)
                    terms /= world
                if not torch.isfinite(terms).all():
                    values = ", ".join(f"{k} {v:.4g}" for k, v in zip(TERM_NAMES, terms.tolist()))
                    raise NonFiniteLoss(f"non-finite loss at step {step + 1} ({values}): stopped before updating; "
                                        f"last good checkpoint: {last or 'none written yet'}")
                opt.step()  # exactly one optimizer step per iteration
                update_ema(ema, model, config.ema_decay, ema_copied)
                step += 1
                sums, count = (terms if sums is None else sums + terms), count + 1
                bar.update(1)

                if step % config.log_every == 0 or step == end:
                    mean = dict(zip(TERM_NAMES, (sums / count).tolist()))
                    now = time.time()
                    record = {"step": step, **mean, "lambda_t": lambda_t, "lr": lr,
                              "steps_per_sec": count / (now - tick), "seconds": now - start}
                    if rank == 0:
                        with open(log_path, "a") as f:
                            f.write(json.dumps(record) + "\n")
                    shown = {"loss": f"{mean['loss']:.4f}"}
                    if getattr(model, "is_dynamic", False):  # a DiT has no FLOPs target
                        shown.update(flops=f"{mean['flops_ratio']:.3f}", lam=f"{lambda_t:.3f}")
                    bar.set_postfix(shown)
                    sums, count, tick = None, 0, now
                stopping = _agreed(stop.received is not None, world, device)
                if stopping or step % config.ckpt_every == 0 or step == end:
                    if not all(torch.isfinite(p).all() for p in list(model.parameters()) + list(ema.parameters())):
                        raise NonFiniteLoss(f"non-finite weights after step {step}: not saved; last good checkpoint: "
                                            f"{last or 'none written yet'}")
                    last = run_dir / "checkpoints" / f"{step:07d}.pt"
                    if rank == 0:
                        save_training_checkpoint(last, model, ema, opt, config, step)
                    if world > 1:
                        dist.barrier()
                if stopping:
                    raise TrainInterrupted(stop.received or "a signal on another rank", step, last, run_dir)
        finally:
            bar.close()
    if stop.received is not None:  # arrived during the last step's save: the run is complete, the caller stops
        raise TrainInterrupted(stop.received, step, last, run_dir)
    return TrainResult(model, ema, step, run_dir, last)


def _agreed(flag: bool, world: int, device) -> bool:
    """Whether any rank has the flag (every rank stops after the same step)."""
    if world == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
