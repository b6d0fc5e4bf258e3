"""Training: DiT from scratch and DyDiT fine-tuned from a DiT checkpoint, one code path at any scale.

    from dydit.train import TrainConfig, PRESETS, train
    result = train(TrainConfig(**PRESETS["dydit-xl-0.7"]), dataset, "runs/dydit-0.7")   # under torchrun too

The objective is DiT's diffusion loss (eps-MSE + the variational bound for the learned sigma) of the
dynamic path, + the complete model's (optional), + 2 (mean F_dyn/F_static - lambda_t)^2 (train_step.py).
AdamW, EMA, gradient clipping and exactly one optimizer step per iteration (the official script steps
twice). Multi-GPU: torchrun + DistributedDataParallel (nccl on CUDA, gloo on the CPU). A run folder holds
config.json, log.jsonl and checkpoints/{step:07d}.pt = {"model", "ema", "opt", "args", "step"} (DiT's
layout: `dydit.checkpoints.load_checkpoint` reads its EMA weights). All randomness derives from
(seed, step), so `resume=True` continues bit-exactly on the CPU, from any world size.
"""
import dataclasses
import json
import os
import re
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

from dydit.checkpoints import load_checkpoint
from dydit.diffusion import GaussianDiffusion
from dydit.fileio import atomic_write, sha256_file
from dydit.flow import FlowMatching
from dydit.lora import add_static_lora, add_td_lora, merge_static_lora, trainable_parameters
from dydit.models import MODELS, DyDiT, create_model
from dydit.sampling import LATENT_SCALE, load_vae
from dydit.train_step import (NOISE, TERM_NAMES, VAE_NOISE, SeededItems, StepBatches, StepRandom,
                              TrainingObjective, flops_target, learning_rate, loss_terms, update_ema)


class TrainError(ValueError):
    """A run that cannot start or go on; the message says why in one line."""


class NonFiniteLoss(TrainError):
    """The loss or the gradient became inf/nan: the run stopped before updating, checkpoints untouched."""


@dataclass
class TrainConfig:
    """Every knob of a training run. Fields in RUN_ONLY may change on a resume; the others may not."""
    # model
    model: str = "DyDiT-XL/2"
    input_size: Optional[int] = None  # None: from the data (the latent side)
    in_channels: Optional[int] = None  # None: from the data
    num_classes: Optional[int] = None  # None: the model's default (1000; 10 for the Mini)
    init_checkpoint: Optional[str] = None  # start from these weights (a DiT loads into DyDiT, routers fresh)
    # objective
    flops_ratio: float = 0.7  # lambda: the target F_dyn / F_static (DyDiT only)
    flops_weight: float = 2.0
    flops_hold: int = 100  # lambda_t = 1 for these steps, then linear to lambda over flops_warmup
    flops_warmup: int = 5000
    complete_loss: bool = True  # DyDiT: add the complete model's diffusion loss
    complete_loss_until: Optional[int] = None  # ... only before this step (the two-stage lambda=0.5 recipe)
    objective: str = "diffusion"  # "diffusion": DDPM eps + VB (DiT, DyDiT); "flow": SiT's velocity flow matching
    adapter: str = "none"  # "lora" (static, peft) or "td-lora" (dydit.lora): the base frozen, only adapters
    # and routers train, and checkpoints hold only those plus the sha256 of init_checkpoint (the base)
    adapter_rank: int = 4
    adapter_experts: int = 4  # TD-LoRA's experts per layer
    routers: str = "all"  # DyDiT: which routers learn; "width" (TDW only) / "token" (SDT only) freeze the
    # other kind at its init, which keeps every head, channel group or token (the paper's ablation)
    stratified_timesteps: bool = False  # t from the four quarters of [0, 1000) in turn (official DyDiT)
    # optimisation
    max_steps: int = 150_000
    global_batch_size: int = 256  # split evenly over the ranks
    lr: float = 1e-4
    lr_warmup: int = 0  # linear warm-up steps
    lr_cosine: bool = False  # after the warm-up: cosine decay to min_lr at max_steps (else constant)
    min_lr: float = 0.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    grad_clip: Optional[float] = None  # max global gradient norm (None: no clipping)
    ema_decay: float = 0.9999
    seed: int = 0
    # data
    data: str = ""  # what the dataset is (e.g. the CLI's --data): recorded, and compared on a resume
    vae: Optional[str] = None  # the data are images: encode them with this SD VAE on the fly, x 0.18215
    precision: str = "tf32"  # tf32 matmuls on CUDA (DiT's train.py); "fp32"
    # run
    log_every: int = 100
    ckpt_every: int = 5000
    num_workers: int = 0
    device: Optional[str] = None  # default: cuda (the local rank's) when available, else cpu

    def validate(self):
        """Raises TrainError naming the first bad field."""
        if self.model not in MODELS:
            raise TrainError(f"unknown model {self.model!r}; known: {', '.join(MODELS)}")
        if not 0.0 < self.flops_ratio <= 1.0:
            raise TrainError(f"flops_ratio (lambda) must be in (0, 1], got {self.flops_ratio}")
        checks = [("max_steps", self.max_steps > 0), ("global_batch_size", self.global_batch_size > 0),
                  ("lr", self.lr > 0), ("ema_decay", 0.0 <= self.ema_decay <= 1.0),
                  ("grad_clip", self.grad_clip is None or self.grad_clip > 0),
                  ("log_every", self.log_every > 0), ("ckpt_every", self.ckpt_every > 0),
                  ("precision", self.precision in ("fp32", "tf32")),
                  ("routers", self.routers in ROUTERS), ("objective", self.objective in OBJECTIVES),
                  ("adapter", self.adapter in ADAPTERS), ("adapter_rank", self.adapter_rank > 0),
                  ("adapter_experts", self.adapter_experts > 0)]
        for name, ok in checks:
            if not ok:
                raise TrainError(f"bad {name}: {getattr(self, name)!r}")
        if self.adapter != "none" and not self.init_checkpoint:
            raise TrainError(f"adapter={self.adapter!r} fine-tunes a base: give init_checkpoint (its weights)")


ROUTERS = ("all", "width", "token")  # TrainConfig.routers
OBJECTIVES = ("diffusion", "flow")  # TrainConfig.objective
ADAPTERS = ("none", "lora", "td-lora")  # TrainConfig.adapter
RUN_ONLY = ("log_every", "ckpt_every", "num_workers", "device")

# The paper's recipes as overrides of TrainConfig (ALI train.py and its scripts; DiT's train.py).
# "dit-xl-2" is an asset name of suites/assets.toml (DiT-XL-2-256x256.pt): `python -m bench train`
# resolves it; in Python pass a path.
PRESETS = {
    "dit-xl": dict(model="DiT-XL/2", lr=1e-4, global_batch_size=256, ema_decay=0.9999, max_steps=7_000_000,
                   complete_loss=False, stratified_timesteps=False, ckpt_every=50_000),
    "dydit-xl-0.7": dict(model="DyDiT-XL/2", init_checkpoint="dit-xl-2", flops_ratio=0.7, lr=2.5e-5,
                         grad_clip=50.0, flops_hold=100, flops_warmup=5000, max_steps=150_000,
                         global_batch_size=256, ema_decay=0.9999, stratified_timesteps=True, complete_loss=True),
    "dydit-xl-0.5": dict(model="DyDiT-XL/2", init_checkpoint="dit-xl-2", flops_ratio=0.5, lr=1e-4,
                         grad_clip=200.0, flops_hold=100, flops_warmup=1000, max_steps=200_000,
                         global_batch_size=256, ema_decay=0.9999, stratified_timesteps=True, complete_loss=True,
                         complete_loss_until=30_000),
}
# DiT-S/B and DyDiT-S/B (the scaling table): the paper gives only the lengths (DiT-S 5M and DiT-B 1.6M
# steps, pre-trained elsewhere; fine-tuning S 50k, B 100k); the rest follows DiT's and DyDiT-XL lambda=0.7's
# recipes. No DiT-S/B weights are public: a DyDiT-S/B run starts from the asset dit-s-2 / dit-b-2, which a
# dit-s / dit-b run makes (suites/assets.toml says where it goes).
SCALING_LAMBDAS = (0.9, 0.8, 0.7, 0.5, 0.4, 0.3)
for _size, _steps, _finetune in (("s", 5_000_000, 50_000), ("b", 1_600_000, 100_000)):
    PRESETS[f"dit-{_size}"] = dict(PRESETS["dit-xl"], model=f"DiT-{_size.upper()}/2", max_steps=_steps)
    for _lam in SCALING_LAMBDAS:
        PRESETS[f"dydit-{_size}-{_lam:g}"] = dict(PRESETS["dydit-xl-0.7"], model=f"DyDiT-{_size.upper()}/2",
                                                   init_checkpoint=f"dit-{_size}-2", flops_ratio=_lam,
                                                   max_steps=_finetune)
# SiT-XL/2 (willisma/SiT train.py: AdamW lr 1e-4, batch 256, EMA 0.9999, flow matching, 7M steps) and DyDiT on
# it (DyDiT++): DyDiT-XL's fine-tuning recipes with the flow-matching objective, from SiT-XL-2-256x256.pt.
PRESETS["sit-xl"] = dict(PRESETS["dit-xl"], model="SiT-XL/2", objective="flow")
for _lam in (0.7, 0.5):
    PRESETS[f"dysit-xl-{_lam:g}"] = dict(PRESETS[f"dydit-xl-{_lam:g}"], model="DySiT-XL/2", objective="flow",
                                          init_checkpoint="sit-xl-2")
PRESET_NOTES = {
    "dit-xl": "DiT-XL/2 from scratch (DiT's train.py: AdamW lr 1e-4, batch 256, EMA 0.9999; 7M steps)",
    "dydit-xl-0.7": "DyDiT-XL/2 lambda 0.7 from DiT-XL-2-256x256.pt: lr 2.5e-5, clip 50, FLOPs warm-up 5000, "
                    "150k steps, batch 256, EMA 0.9999, stratified t, complete-model loss",
    "dydit-xl-0.5": "DyDiT-XL/2 lambda 0.5, two stages in one run: lr 1e-4, clip 200, FLOPs warm-up 1000; "
                    "steps 0-30k with the complete-model loss, then to 200k without it",
    **{f"dit-{size}": f"DiT-{size.upper()}/2 from scratch, DiT's recipe, {steps} steps (the scaling table's baseline)"
       for size, steps in (("s", "5M"), ("b", "1.6M"))},
    **{f"dydit-{size}-{lam:g}": f"DyDiT-{size.upper()}/2 lambda {lam:g} from dit-{size}-2 (the assets' DiT-"
                                f"{size.upper()}-2-256x256.pt, trained with --preset dit-{size}): {steps} steps, "
                                f"otherwise dydit-xl-0.7's recipe"
       for size, steps in (("s", "50k"), ("b", "100k")) for lam in SCALING_LAMBDAS},
    "sit-xl": "SiT-XL/2 from scratch with flow matching (SiT's train.py: lr 1e-4, batch 256, EMA 0.9999)",
    **{f"dysit-xl-{lam:g}": f"DyDiT on SiT-XL/2 (DyDiT++), lambda {lam:g}, from SiT-XL-2-256x256.pt: "
                            f"dydit-xl-{lam:g}'s recipe with the flow-matching objective" for lam in (0.7, 0.5)},
}


@dataclass
class TrainResult:
    model: nn.Module  # the trained weights (train mode)
    ema: nn.Module  # the EMA weights (eval mode)
    step: int
    run_dir: Path
    checkpoint: Optional[Path]  # the last checkpoint written or resumed from


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
    return [f"{k} {saved.get(k, '<absent>')!r} (saved) vs {v!r} (now)" for k, v in now.items()
            if k not in RUN_ONLY and saved.get(k, "<absent>") != v]


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


def add_adapter(model, config: TrainConfig):
    """The run's adapters (static LoRA or TD-LoRA) on the loaded base weights, then the routers ablation."""
    if config.adapter == "td-lora":
        add_td_lora(model, config.adapter_rank, config.adapter_experts)
    elif config.adapter == "lora":
        add_static_lora(model, config.adapter_rank)
    if config.routers != "all":
        if not isinstance(model, DyDiT):
            raise TrainError(f"routers={config.routers!r} is a DyDiT ablation; {config.model} has no routers")
        frozen = ("token_selection",) if config.routers == "width" else ("attn_rate", "mlp_rate")
        for block in model.blocks:
            for name in frozen:
                getattr(block, name).requires_grad_(False)
    return model


def load_trained(path, model_kwargs=None, use_ema=True, merge=True):
    """A model from a training checkpoint of this trainer, with its EMA weights (use_ema=False: the raw ones),
    in eval mode. An adapter run's base is re-read from args.init_checkpoint and its sha256 checked; a static
    LoRA is merged into it, as inference runs it (merge=False keeps the peft layers)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = TrainConfig(**{k: v for k, v in state["args"].items() if k in TrainConfig.__dataclass_fields__})
    model = create_model(config.model, **(model_kwargs or {}))
    if config.adapter == "none":
        load_checkpoint(model, path if use_ema else state["model"])  # the path: its `ema`, with its name in errors
        return model.eval()
    digest = sha256_file(config.init_checkpoint)
    if digest != state.get("base_sha256"):
        raise TrainError(f"{path} was trained on a base with sha256 {state.get('base_sha256')}; "
                         f"{config.init_checkpoint} now has sha256 {digest}")
    load_checkpoint(model, config.init_checkpoint)
    add_adapter(model, config)
    weights = state["ema" if use_ema else "model"]
    missing = set(trainable_parameters(model)) - set(weights)
    if missing:
        raise TrainError(f"{path} lacks trained tensors: {sorted(missing)[:3]}")
    model.load_state_dict(weights, strict=False)
    if config.adapter == "lora" and merge:
        merge_static_lora(model)
    return model.eval()


def adapter_run_model(path) -> Optional[str]:
    """The model name of an adapter run's checkpoint (its trained tensors and its base's sha256); None for
    any other checkpoint."""
    try:  # memory-mapped: a full-size DiT checkpoint is not read to answer
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # missing, of torch's legacy format (not mappable; never an adapter run's) or no checkpoint
        return None  # load_checkpoint says which
    if isinstance(state, dict) and "base_sha256" in state:
        return state["args"]["model"]
    return None


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
        return _train(config, dataset, Path(run_dir), resume, stop_after, progress, vae, rank, world, device)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(config, dataset, run_dir, resume, stop_after, progress, vae, rank, world, device):
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
        state = torch.load(found[-1], map_location="cpu", weights_only=True)
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
        size, channels = x_probe.shape[-1], x_probe.shape[0]
    kwargs = dict(input_size=config.input_size or size, in_channels=config.in_channels or channels)
    if config.num_classes is not None:
        kwargs["num_classes"] = config.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = create_model(config.model, **kwargs)
    if (kwargs["input_size"], kwargs["in_channels"]) != (size, channels):
        raise TrainError(f"the data give {channels} x {size} x {size} inputs; the model is configured for "
                         f"{kwargs['in_channels']} x {kwargs['input_size']} x {kwargs['input_size']}")
    classes = getattr(dataset, "num_classes", None)
    if classes is not None and classes > model.y_embedder.num_classes:
        raise TrainError(f"the data have {classes} classes, the model {model.y_embedder.num_classes}: "
                         "set num_classes")
    if config.init_checkpoint and (state is None or config.adapter != "none"):  # an adapter's base, always
        load_checkpoint(model, config.init_checkpoint)
    with torch.random.fork_rng(devices=[]):  # the adapters' initial A from the run's seed, as the model's
        torch.manual_seed(config.seed)
        add_adapter(model, config)
    model.to(device)
    ema = deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
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
    objective = TrainingObjective(model, FlowMatching() if flow else GaussianDiffusion(), config.flops_weight)
    ddp = DDP(objective, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else objective
    loader = DataLoader(SeededItems(dataset), batch_sampler=StepBatches(len(dataset), B, rows, config.seed, step, end),
                        num_workers=config.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator())  # its worker seeds are unused (SeededItems seeds items)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()  # class dropout and Gumbel noise on
    bar = tqdm(total=config.max_steps, initial=step, disable=not progress or rank != 0, unit="step",
               desc=config.model, dynamic_ncols=True)
    sums, count, start, tick = None, 0, time.time(), time.time()
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
                group["lr"] = lr
            lambda_t = flops_target(step, config.flops_ratio, config.flops_hold, config.flops_warmup)
            until = config.complete_loss_until
            complete = config.complete_loss and (until is None or step < until)

            out = ddp(x, y, t, noise, lambda_t, complete, draws)
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
            update_ema(ema, model, config.ema_decay)
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
                if isinstance(model, DyDiT):  # a DiT has no FLOPs target
                    shown.update(flops=f"{mean['flops_ratio']:.3f}", lam=f"{lambda_t:.3f}")
                bar.set_postfix(shown)
                sums, count, tick = None, 0, now
            if step % config.ckpt_every == 0 or step == end:
                if not all(torch.isfinite(p).all() for p in list(model.parameters()) + list(ema.parameters())):
                    raise NonFiniteLoss(f"non-finite weights after step {step}: not saved; last good checkpoint: "
                                        f"{last or 'none written yet'}")
                last = run_dir / "checkpoints" / f"{step:07d}.pt"
                if rank == 0:
                    save_training_checkpoint(last, model, ema, opt, config, step)
                if world > 1:
                    dist.barrier()
    finally:
        bar.close()
    return TrainResult(model, ema, step, run_dir, last)
