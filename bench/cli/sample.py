"""`python -m bench sample`: sharded, resumable sampling to an ADM-format .npz (run it under torchrun).

    torchrun --standalone --nproc_per_node=8 -m bench sample --model DiT-XL/2 --ckpt dit-xl-2 \\
        --assets /data/dydit-assets --num-samples 50000 --out samples/dit-xl-2-ddpm250
    python -m bench sample --model DyFLUX-Mini --ckpt runs/dyflux/checkpoints/last.pt --sampler flow-euler \\
        --prompt "a thick seven on the left" --prompt "two , thin , right" --num-samples 8 --out samples/dyflux
    python -m bench sample --model DyLatte-Mini/2 --ckpt runs/dylatte/checkpoints/last.pt --sampler ddim \
        --num-samples 16 --out samples/dylatte          # clips: arr_0 (N, 8, 16, 16, 1), samples.gif a preview
"""

import sys

from bench import assets, preflight
from bench.cli import args as types
from dydit import sampler_spec
from dydit.errors import UserError


def register(subparsers):
    p = subparsers.add_parser("sample", help="sample N images (sharded, resumable, torchrun) to an ADM .npz",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, type=types.model_name(flux=True, video=True),
                   help="model name, e.g. DiT-XL/2, DyDiT-XL/2, the text-to-image DyFLUX-Mini or the video DyLatte-Mini/2")
    p.add_argument("--ckpt", help="checkpoint: a path, or an asset name of suites/assets.toml (e.g. dit-xl-2)")
    p.add_argument("--random-weights", action="store_true", help="random weights, no checkpoint (pipeline checks)")
    p.add_argument("--sampler", default=sampler_spec.DEFAULT_SAMPLER, choices=list(sampler_spec.SAMPLERS))
    p.add_argument("--steps", type=types.positive_int, default=None,
                   help="sampling steps (default: ddpm 250, ddim 50, dpm-solver++ 20)")
    p.add_argument("--cfg-scale", type=types.cfg_scale, default=sampler_spec.DEFAULT_CFG_SCALE,
                   help="classifier-free guidance scale (1 = none)")
    p.add_argument("--guided-channels", default="3", choices=["3", "all"],
                   help="3: DiT's guidance of the first 3 latent channels (the paper's FID); all: all 4")
    p.add_argument("--labels", default=sampler_spec.DEFAULT_LABELS, choices=list(sampler_spec.LABELS),
                   help="uniform: a random class per index (as DiT's sample_ddp.py); balanced: N/1000 per class")
    # not --num: torchrun would take it for an abbreviation of its own --numa-binding
    p.add_argument("--num-samples", type=types.positive_int, required=True, help="number of images")
    p.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="text-to-image (FLUX-Mini, DyFLUX-Mini): a prompt, repeatable; image i draws prompt i mod count")
    p.add_argument("--prompts", type=types.text_file, default=None, metavar="FILE",
                   help="text-to-image: a file of prompts, one per line")
    p.add_argument("--batch-size", type=types.positive_int, default=sampler_spec.DEFAULT_BATCH_SIZE, help="images per process per step (and per shard file)")
    p.add_argument("--seed", type=types.non_negative_int, default=0)
    p.add_argument("--vae", default=None, help=f"VAE: a diffusers folder or file, or {sampler_spec.RANDOM_VAE!r} "
                                               "(default: the vae-ft-ema asset)")
    p.add_argument("--assets", default=None, help=f"assets root (default: ${assets.ENV_VAR})")
    p.add_argument("--latent-size", type=types.positive_int, default=None,
                   help="latent side (default: the model's: 32 -> 256 x 256 images; the mini's 16 x 16 pixels)")
    p.add_argument("--precision", default=None, choices=list(sampler_spec.PRECISIONS), help="default: tf32 on CUDA, else fp32")
    p.add_argument("--deepcache-interval", type=types.non_negative_int, default=0, metavar="N",
                   help="DeepCache: the whole model at steps 0, N, 2N, ..., cached block outputs in between "
                        "(dydit/deepcache.py); 0 or 1: no cache")
    p.add_argument("--masked", action="store_true", help="DyDiT: the masked reference path instead of FastDyDiT")
    p.add_argument("--device", type=types.device, default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--max-shards", type=types.positive_int, default=None, help="stop after this many new shards per process")
    p.add_argument("--dist-timeout", type=types.positive_float, default=None, metavar="MINUTES",
                   help="collective timeout of the torchrun process group (ranks wait at most ~one shard for "
                        "each other; rank 0 assembles after the group is gone; default: bench/sample.py's DIST_TIMEOUT_MINUTES)")
    p.add_argument("--out", required=True, help="output folder (shards/, run.json, samples.npz)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args):
    import torch

    from bench import sample
    from dydit import registry
    if not args.ckpt and not args.random_weights:
        raise UserError("sample: no weights: give --ckpt PATH (or an asset name), or --random-weights for a "
                        "pipeline check")
    root, manifest = assets.assets_root(args.assets), assets.load_manifest()
    ckpt = assets.resolve(args.ckpt, root, manifest) if args.ckpt else None
    prompts = list(args.prompt or [])
    if args.prompts is not None:  # the file's text
        prompts += [line.strip() for line in args.prompts.splitlines() if line.strip()]
        if not prompts:
            raise UserError("--prompts: the file holds no prompt (one per line)")
    pixels = registry.entry(args.model).is_mini  # the mini samples digits in pixel space: no VAE
    if pixels and args.vae:
        raise UserError(f"--vae: {args.model} samples pixels (16 x 16 digits), it has no VAE: drop --vae")
    vae = None if pixels else args.vae if args.vae == sampler_spec.RANDOM_VAE else \
        assets.resolve(args.vae or "vae-ft-ema", root, manifest)
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    spec = sample.SampleSpec(
        model=args.model, num=args.num_samples, sampler=args.sampler, steps=args.steps, cfg_scale=args.cfg_scale,
        guided_channels=None if args.guided_channels == "all" else int(args.guided_channels), labels=args.labels,
        seed=args.seed, batch_size=args.batch_size, ckpt=ckpt, random_weights=args.random_weights, vae=vae,
        latent_size=args.latent_size, precision=args.precision or ("tf32" if cuda else "fp32"), fast=not args.masked,
        deepcache_interval=args.deepcache_interval, prompts=prompts or None)
    out = preflight.writable_folder(args.out, "--out")
    # a rough bound of what the shards still to sample and the assembled .npz hold (uint8 images; shards of an
    # interrupted run of the same spec are on disk already)
    left = 1 - len(sample.finished_shards(out, spec)) / max(1, spec.num_shards)
    preflight.free_space(out, (1 + left) * spec.num * spec.image_bytes, "--out", "the shards and samples.npz")
    try:
        path = sample.run(spec, out, max_shards=args.max_shards, device=args.device, progress=not args.no_progress,
                          timeout_minutes=args.dist_timeout or sample.DIST_TIMEOUT_MINUTES)
    except KeyboardInterrupt:
        shards = len(sample.finished_shards(out, spec))
        print(f"\ninterrupted: {shards}/{spec.num_shards} shards are on disk under {out / sample.SHARD_DIR} and stay; "
              f"run the same command again to sample the rest", file=sys.stderr)
        return 130
    if path is not None:  # rank 0, all shards done
        sha = (path.parent / (path.name + ".sha256")).read_text().split()[0]
        what = f"arr_1: the index of each image's prompt of {len(prompts)}" if prompts else f"{spec.labels} labels"
        kind = f"clips of {spec.frames} frames" if spec.video else "images"
        print(f"wrote {path} ({spec.num} {kind}, {what}), sha256 {sha}")
        if spec.video:
            print(f"preview: {path.parent / sample.PREVIEW_FILE}")
