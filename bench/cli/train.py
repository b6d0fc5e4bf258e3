"""`python -m bench train`: DiT training and DyDiT fine-tuning (one process, or torchrun for several).

    python -m bench train --preset dydit-xl-0.7 --data /data/imagenet/train --out runs/dydit-0.7
    torchrun --standalone --nproc_per_node=8 -m bench train --preset dydit-xl-0.7 --data ... --out ...
    python -m bench train --resume runs/dydit-0.7          # continues bit-exactly (same config)
"""
import argparse
import dataclasses
import os
import sys
import traceback
import typing
from pathlib import Path

from bench.cli import args as types
from dydit import sampler_spec


HELP = {
    "model": "model name, e.g. DyDiT-XL/2, DiT-XL/2, DyDiT-Mini/2, FLUX-Mini",
    "init_checkpoint": "weights to start from: a path or an asset name (dit-xl-2); a DiT loads into a DyDiT "
                       "with fresh routers",
    "init_matching": "load only --init-checkpoint's tensors whose name and shape match; the rest keep their init "
                     "(Latte's `pretrained`: a Latte starts from the image DiT of its size)",
    "flops_ratio": "lambda: target F_dyn / F_static in (0, 1] (DyDiT)",
    "flops_hold": "lambda_t = 1 for these steps ...",
    "flops_warmup": "... then linear from 1 to lambda over these steps",
    "complete_loss": "add the complete model's diffusion loss (DyDiT)",
    "complete_loss_until": "stop the complete-model loss at this step",
    "objective": "diffusion (DDPM eps + VB: DiT, DyDiT) or flow (SiT's velocity flow matching: SiT-*, DySiT-*)",
    "min_snr_gamma": "diffusion: weight the eps loss by min(SNR, gamma) / SNR (Min-SNR; default none: DiT's)",
    "adapter": "none, lora (static, peft) or td-lora (timestep-dynamic LoRA): the base (--init-checkpoint) frozen",
    "adapter_rank": "LoRA rank (both adapters)",
    "adapter_experts": "TD-LoRA: LoRA experts per layer, mixed by a gate on the timestep embedding",
    "token_router_bias": "DyDiT: the token routers' bias when the run starts (default: the init's 35, official)",
    "token_router_lr_scale": "DyDiT: the token routers learn at lr x this (default 1, official)",
    "router_noise_anneal": "DyDiT: the routers' Gumbel noise falls linearly to 0 over this last fraction of the run, "
                           "so training ends on the eval decision (default 0: noise throughout, official)",
    "ema_routers": "DyDiT: the EMA averages the routers too (default, official); --no-ema-routers: it carries the raw routers",
    "routers": "DyDiT: which routers learn: all, width (TDW only) or token (SDT only); the others keep everything",
    "stratified_timesteps": "timesteps from the four quarters of [0, 1000) in turn (official DyDiT)",
    "global_batch_size": "global batch, split evenly over the torchrun ranks",
    "lr_warmup": "linear learning-rate warm-up steps",
    "lr_cosine": "cosine decay of the learning rate to --min-lr at --max-steps",
    "grad_clip": "max global gradient norm ('none': no clipping)",
    "vae": f"SD VAE for image folders: a path or asset name (default vae-ft-ema), or {sampler_spec.RANDOM_VAE!r}",
    "data": "training data: an image folder (one sub-folder per class), an .npz of latents "
            "(latents (N,C,H,W) float, labels (N,) int), 'digits' (the mini's) or 'prompted-digits' (the "
            "text-to-image mini's: FLUX-Mini, DyFLUX-Mini)",
    "device": "cuda or cpu (none: cuda when available)",
}


def _type(field):
    """(argparse type, is_bool) of a TrainConfig field; Optional fields also take 'none'."""
    args = typing.get_args(field.type)
    base = next((a for a in args if a is not type(None)), field.type) if args else field.type
    if base is bool:
        return None, True
    if not args:
        return base, False
    return (lambda text: None if text.lower() == "none" else base(text)), False


def register(subparsers):
    from dydit.train_config import PRESETS, TrainConfig
    presets = "\n".join(f"  {name}: {preset.note}\n    {preset.overrides}" for name, preset in PRESETS.items())
    p = subparsers.add_parser("train", help="train a DiT or fine-tune a DyDiT (torchrun for several GPUs)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=f"presets (overridden by the options given):\n{presets}")
    p.add_argument("--preset", choices=list(PRESETS), help="one of the recipes below")
    p.add_argument("--out", help="run folder (checkpoints/, log.jsonl, config.json)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    p.add_argument("--stop-after", type=types.positive_int, metavar="STEP", help="stop (with a checkpoint) after this step")
    p.add_argument("--split", default="train", help="digits: train, val or heldout (bench/data.py SPLITS)")
    p.add_argument("--data-seed", type=types.non_negative_int, default=0, help="digits: the shuffle before the fixed split")
    p.add_argument("--image-size", type=types.positive_int, default=256, help="image folders: crop size")
    p.add_argument("--assets", default=None, help="assets root (default: $DYDIT_ASSETS)")
    p.add_argument("--no-progress", action="store_true")
    for field in dataclasses.fields(TrainConfig):
        kind, is_bool = _type(field)
        flags = [f"--{field.name.replace('_', '-')}"] + (["--lambda"] if field.name == "flops_ratio" else [])
        text = HELP.get(field.name, "") + f" (default {field.default!r})"
        if is_bool:
            p.add_argument(*flags, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(*flags, dest=field.name, type=kind, default=None, help=text)
    p.set_defaults(func=run)


def build_config(args):
    """TrainConfig: defaults (or the resumed run's saved config), then the preset, then the options given."""
    import json
    from dydit.train_config import PRESETS, TrainConfig, TrainError
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    values = {}
    if args.resume:
        saved = Path(args.resume) / "config.json"
        if not saved.is_file():
            raise TrainError(f"cannot resume {args.resume}: no config.json (not a run folder)")
        values = {k: v for k, v in json.loads(saved.read_text()).items() if k in names}
    if args.preset:
        values.update(PRESETS[args.preset].overrides)
    values.update({k: getattr(args, k) for k in names if getattr(args, k) is not None})
    return TrainConfig(**values)


def run(args):
    from torchvision.datasets import ImageFolder

    from bench import assets, data, preflight
    from bench.cli import debug_wanted, one_line
    from dydit import sampling
    from dydit.errors import UserError
    from dydit.train import TrainInterrupted, train
    from dydit.train_config import TrainError
    rank0 = int(os.environ.get("RANK", 0)) == 0
    try:
        if not args.out and not args.resume:
            raise TrainError("give --out RUN_DIR for a new run, or --resume RUN_DIR")
        if args.out and args.resume and Path(args.out).resolve() != Path(args.resume).resolve():
            raise TrainError("--out and --resume name different folders")
        config = build_config(args)
        if not config.data:
            raise TrainError("give --data (an image folder, an .npz of latents, 'digits' or 'prompted-digits')")
        config.validate()  # before the data load: a wrong option is refused in the first second
        preflight.writable_folder(args.resume or args.out, "--resume" if args.resume else "--out", create=False)
        root, manifest = assets.assets_root(args.assets), assets.load_manifest()
        dataset = data.load(config.data, args.split, args.data_seed, args.image_size)
        images = isinstance(dataset, ImageFolder)
        vae = None
        if config.vae and not images:
            raise TrainError(f"--vae applies to image folders; {config.data} holds latents already")
        if images and config.vae != sampler_spec.RANDOM_VAE:
            config.vae = assets.resolve(config.vae or "vae-ft-ema", root, manifest)
        elif images:
            vae = sampling.random_vae(config.seed)
        if config.init_checkpoint:
            config.init_checkpoint = assets.resolve(config.init_checkpoint, root, manifest)
        run_dir = args.resume or args.out
        if rank0:
            print(f"{config.model}: {len(dataset):,} training items from {config.data}; steps "
                  f"{config.max_steps:,}, global batch {config.global_batch_size}, lr {config.lr:g} -> {run_dir}",
                  file=sys.stderr)
        result = train(config, dataset, run_dir, resume=bool(args.resume), stop_after=args.stop_after,
                       progress=not args.no_progress, vae=vae)
    except (UserError, FileNotFoundError) as err:  # every rank raises it; one prints
        if rank0:
            if debug_wanted(args):
                traceback.print_exc()
            print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except TrainInterrupted as stop:
        if rank0:
            launcher = "torchrun ... -m bench" if int(os.environ.get("WORLD_SIZE", 1)) > 1 else "python -m bench"
            print(f"\ninterrupted by {stop.signal_name} after step {stop.step}: checkpoint {stop.checkpoint} written, "
                  f"nothing lost. Resume: {launcher} train --resume {stop.run_dir}", file=sys.stderr)
        return 130
    if rank0:
        print(f"trained to step {result.step}: {result.checkpoint}")
    return 0
