"""Sharded, resumable sampling under torchrun, ending in one ADM-format `.npz` (arr_0 uint8 N x H x W x 3).

Images are cut into fixed shards of `batch_size` consecutive global indices; each image's label and
noise come from (seed, index) (dydit.sampling), so the set of images is the same for any world size or
restart. Rank r takes every world_size-th unfinished shard. Each finished shard is written atomically
(temporary file + os.replace); on restart rank 0 decides which shards are done and broadcasts it, so
ranks never race over the file system. When all shards exist, rank 0 streams them, in index order,
into `samples.npz` (arr_0 images, arr_1 labels, as ADM's own sampler writes) and its sha256.
"""
import dataclasses
import json
import math
import os
import zipfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from dydit import registry, sampling
from dydit.errors import UserError
from dydit.sampling import RANDOM_VAE, SamplerSpec
from dydit.fileio import atomic_write, sha256_file

CONFIG_FILE = "run.json"
SHARD_DIR = "shards"
SAMPLES_FILE = "samples.npz"
PREVIEW_FILE = "samples.gif"  # clips (Latte): an animated grid of the first 16
# collective timeout: ranks wait at most ~one shard for each other (assembly happens after the group is gone)
DIST_TIMEOUT_MINUTES = 60


class SampleError(UserError, ValueError):
    """A sampling setup that cannot run, or an --out folder that holds another setup's samples."""


@dataclass
class SampleSpec:
    """Everything that decides the images; a restart must use the same spec (the world size may change)."""
    model: str
    num: int
    sampler: str = sampling.DEFAULT_SAMPLER
    steps: Optional[int] = None  # None: the sampler's default (ddpm 250, ddim 50, dpm-solver++ 20)
    cfg_scale: float = sampling.DEFAULT_CFG_SCALE
    guided_channels: Optional[int] = sampling.DEFAULT_GUIDED_CHANNELS  # None guides all 4
    labels: str = sampling.DEFAULT_LABELS
    seed: int = 0
    batch_size: int = sampling.DEFAULT_BATCH_SIZE  # per process and per shard
    ckpt: Optional[str] = None  # path; None with random_weights for pipeline checks
    random_weights: bool = False
    vae: Optional[str] = RANDOM_VAE  # a path (diffusers folder or file) or RANDOM_VAE; None for a pixel model
    latent_size: Optional[int] = None  # None: the model's (32 -> 256 x 256 images through the SD VAE; mini: 16)
    num_classes: Optional[int] = None  # None: the model's (1000; the mini's 10 digits)
    precision: str = sampling.DEFAULT_PRECISION  # tf32 (as DiT's sample_ddp.py) or fp32
    fast: bool = True  # DyDiT through FastDyDiT (skips compute) rather than the masked reference
    deepcache_interval: int = 0  # N > 1: whole model at steps 0, N, 2N, ..., cached blocks between (dydit.deepcache)
    # a text-to-image model's prompts (the mini's words: bench.mini.prompted_digits): image i draws prompt i mod len;
    # its "label" in the .npz is that prompt's index
    prompts: Optional[List[str]] = None

    def __post_init__(self):
        self.steps = self.steps or sampling.SAMPLERS.get(self.sampler)
        entry = registry.entry(self.model)
        if self.text_to_image:
            if not entry.is_mini:
                raise SampleError(f"{self.model}: bench sample takes the text-to-image mini (FLUX-Mini, DyFLUX-Mini); "
                                  f"full-size FLUX needs its T5 / CLIP encoders and VAE: not yet")
            if not self.prompts:
                raise SampleError(f"{self.model} is text-to-image: give --prompt TEXT (repeatable) or --prompts FILE")
            from bench.mini.prompted_digits import PromptTokenizer
            PromptTokenizer()(self.prompts)  # a word it does not know, or too many: one line (DataError) now
            if self.deepcache_interval > 1:
                raise SampleError(f"--deepcache-interval: DeepCache is DiT's here (dydit.deepcache), not {self.model}'s")
            self.labels, self.guided_channels, self.vae = "uniform", None, None
        elif self.prompts:
            raise SampleError(f"--prompt: {self.model} is class-conditional; prompts are for text-to-image models "
                              f"(FLUX-Mini, DyFLUX-Mini)")
        if self.video and self.deepcache_interval > 1:
            raise SampleError(f"--deepcache-interval: DeepCache is DiT's here (dydit.deepcache), not {self.model}'s")
        # the mini models sample 16 x 16 one-channel digits of 10 classes in pixel space: no VAE, every
        # channel guided; the others latents of the SD VAE (ImageNet's 1000 classes)
        mini = entry.is_mini
        self.latent_size = self.latent_size or (registry.MINI_DEFAULTS["input_size"] if mini else 32)
        self.num_classes = self.num_classes or (self._defaults["num_classes"] if self.video else
                                                registry.MINI_DEFAULTS["num_classes"] if mini else 1000)
        if mini:
            self.vae, self.guided_channels = None, None
        if self.video:  # Latte guides every latent channel (its forward_with_cfg), not DiT's first 3
            self.guided_channels = None
        # absolute paths, so a restart from another working directory is recognised as the same setup
        self.ckpt = str(Path(self.ckpt).resolve()) if self.ckpt else None
        self.vae = self.vae if self.vae in (RANDOM_VAE, None) else str(Path(self.vae).resolve())
        if self.sampler not in sampling.SAMPLERS:
            raise SampleError(f"unknown sampler {self.sampler!r}; known: {', '.join(sampling.SAMPLERS)}")
        flow = registry.entry(self.model).objective == "flow"
        if flow != (self.sampler in sampling.FLOW_SAMPLERS):
            kind = "a flow-matching (SiT) model: give --sampler " + " or ".join(sampling.FLOW_SAMPLERS) if flow else \
                "a diffusion (DiT) model: give --sampler " + " or ".join(sampling.DIFFUSION_SAMPLERS)
            raise SampleError(f"--sampler {self.sampler} does not fit {self.model}, {kind}")
        if self.labels not in sampling.LABELS:
            raise ValueError(f"unknown label mode {self.labels!r}; known: {', '.join(sampling.LABELS)}")
        if self.precision not in sampling.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(sampling.PRECISIONS)}, got {self.precision!r}")
        if self.deepcache_interval < 0:
            raise ValueError(f"deepcache_interval must be >= 0 (0 or 1: no cache), got {self.deepcache_interval}")
        if self.num < 1 or self.batch_size < 1:
            raise ValueError("num and batch_size must be positive")

    @classmethod
    def of(cls, model: str, sampler: SamplerSpec, **rest) -> "SampleSpec":
        """The spec of sampling `model` as a suite's SamplerSpec says (rest: ckpt, vae, latent_size, ...)."""
        return cls(model=model, num=sampler.num_samples, sampler=sampler.name, steps=sampler.steps,
                   cfg_scale=sampler.cfg_scale, guided_channels=sampler.guided_channels, labels=sampler.labels,
                   seed=sampler.seed, batch_size=sampler.batch_size, precision=sampler.precision,
                   deepcache_interval=sampler.deepcache_interval, **rest)

    @property
    def text_to_image(self) -> bool:
        """A FLUX model: prompts, not classes (dydit.text2img)."""
        return registry.entry(self.model).is_text_to_image

    @property
    def video(self) -> bool:
        """A Latte: clips of `frames` frames (dydit.latte), written as (N, F, H, W, C)."""
        return registry.entry(self.model).family == "Latte"

    @property
    def _defaults(self) -> dict:
        return registry.LATTE_MINI_DEFAULTS if registry.entry(self.model).is_mini else registry.LATTE_DEFAULTS

    @property
    def frames(self) -> int:
        """Frames per clip (1 for an image model)."""
        return self._defaults["num_frames"] if self.video else 1

    @property
    def channels(self) -> int:
        """Channels the model samples: the mini's pixels (1), else SD VAE latents (4)."""
        return registry.MINI_DEFAULTS["in_channels"] if self.vae is None else 4

    @property
    def shape(self) -> Tuple[int, ...]:
        """(C, H, W) the model samples: the text-to-image mini's 16 x 32 canvas, else square latents or digits;
        (C, F, H, W) for a clip (dydit.latte.ChannelsFirst's layout)."""
        if self.text_to_image:
            return (self.channels, *registry.MINI_IMAGE)
        if self.video:
            return self.channels, self.frames, self.latent_size, self.latent_size
        return self.channels, self.latent_size, self.latent_size

    @property
    def image_bytes(self) -> int:
        """Bytes of one uint8 image this spec writes (pixels as sampled, or decoded RGB at 8x the latents)."""
        return math.prod(self.shape) if self.vae is None else 3 * (8 * self.latent_size) ** 2 * self.frames

    @property
    def num_shards(self):
        return math.ceil(self.num / self.batch_size)

    def shard_indices(self, shard):
        return range(shard * self.batch_size, min(self.num, (shard + 1) * self.batch_size))


#################################################################################
#                          Model, VAE and one batch                              #
#################################################################################

def build_model_fn(spec, device):
    """The denoiser callable for a spec: the model with its checkpoint (FastDyDiT for a DyDiT)."""
    from dydit.checkpoints import load_model
    from dydit.models import DyDiT, randomize_
    from dydit.registry import create_model
    sizes = {} if spec.text_to_image else {"input_size": spec.latent_size, "num_classes": spec.num_classes}
    if spec.ckpt:  # a checkpoint of any kind: plain, a training run's EMA, adapters on their base
        model = load_model(spec.model, spec.ckpt, **sizes)
    elif spec.random_weights:
        model = create_model(spec.model, **sizes)
        randomize_(model, seed=spec.seed, std=0.01)
    else:
        raise ValueError("no checkpoint: pass --ckpt PATH (or --random-weights for a pipeline check)")
    model = model.eval().to(device)
    if spec.video:  # clips: the samplers see (B, C, F, H, W)
        from dydit.latte import ChannelsFirst, DyLatte, FastDyLatte
        return ChannelsFirst(FastDyLatte(model) if isinstance(model, DyLatte) and spec.fast else model)
    if spec.text_to_image:
        model.fast = spec.fast and model.is_dynamic  # dydit.text2img: DyFLUX's compute-skipping path
        return model
    if isinstance(model, DyDiT) and spec.fast:
        from dydit.fast import FastDyDiT
        return FastDyDiT(model)
    return model


def build_vae(spec, device):
    """The VAE that decodes the spec's latents (None: a pixel-space model's samples are the images)."""
    if spec.vae is None:
        return None
    vae = sampling.random_vae(spec.seed) if spec.vae == RANDOM_VAE else sampling.load_vae(spec.vae)
    return vae.to(device)


def generate(model_fn, vae, spec, indices, device):
    """(uint8 images (B, H, W, 3), or (B, H, W, 1) for the mini's digits; labels (B,)) of the given global indices."""
    if spec.text_to_image:  # the prompts' token ids condition; the empty prompt (all PAD) is the null
        from bench.mini.prompted_digits import PromptTokenizer
        from dydit.text2img import PAD_ID
        labels = torch.tensor([i % len(spec.prompts) for i in indices])
        condition, null = PromptTokenizer()([spec.prompts[i] for i in labels]), PAD_ID
    else:
        labels = sampling.labels_for(indices, spec.seed, spec.labels, spec.num_classes)
        condition, null = labels, spec.num_classes
    noise, generators = sampling.noise_for(indices, spec.seed, spec.shape)
    latents = sampling.sample_latents(model_fn, spec.sampler, noise.to(device), condition, spec.steps, generators,
                                      spec.cfg_scale, spec.guided_channels, null, spec.deepcache_interval)
    if spec.video:  # (B, C, F, H, W) -> every frame an image, then (B, F, H, W, C)
        frames = latents.transpose(1, 2).flatten(0, 1)
        images = sampling.to_uint8(frames) if vae is None else sampling.decode_to_uint8(vae, frames)
        return images.reshape(len(latents), spec.frames, *images.shape[1:]), labels.numpy()
    images = sampling.to_uint8(latents) if vae is None else sampling.decode_to_uint8(vae, latents)
    return images, labels.numpy()


#################################################################################
#                               Shards on disk                                   #
#################################################################################

def shard_path(out, shard):
    return Path(out) / SHARD_DIR / f"shard-{shard:06d}.npz"


def write_shard(out, shard, images, labels, indices):
    atomic_write(shard_path(out, shard), lambda f: np.savez(f, images=images, labels=labels,
                                                             indices=np.asarray(indices, dtype=np.int64)))


def finished_shards(out, spec):
    """Shard ids whose file exists and holds the expected indices (a damaged file is redone)."""
    done = []
    for shard in range(spec.num_shards):
        path = shard_path(out, shard)
        if not path.is_file():
            continue
        try:
            with np.load(path) as f:
                ok = np.array_equal(f["indices"], np.asarray(spec.shard_indices(shard)))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            ok = False
        if ok:
            done.append(shard)
    return done


def check_or_write_config(out, spec):
    """Records the spec in out/run.json; refuses to resume a folder that was sampled with another spec."""
    path = Path(out) / CONFIG_FILE
    mine = dataclasses.asdict(spec)
    if path.is_file():
        theirs = json.loads(path.read_text()).get("spec", {})
        changed = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if changed:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise SampleError(f"{out} holds samples of another setup ({what}); use a new --out or the same options")
        return
    atomic_write(path, lambda f: f.write(json.dumps({"spec": mine}, indent=1).encode()))


def assemble(out, spec):
    """Streams the shards, in index order, into one ADM-format samples.npz; returns (path, sha256)."""
    out = Path(out)
    with np.load(shard_path(out, 0)) as f:
        item = tuple(int(n) for n in f["images"].shape[1:])  # (H, W, C): RGB or the mini's one channel; a clip's (F, H, W, C)

    def write(fileobj):
        with zipfile.ZipFile(fileobj, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, shape, key in (("arr_0.npy", (spec.num, *item), "images"),
                                     ("arr_1.npy", (spec.num,), "labels")):
                dtype = np.uint8 if key == "images" else np.int64
                with zf.open(name, "w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(
                        np.dtype(dtype)), "fortran_order": False, "shape": shape})
                    for shard in range(spec.num_shards):
                        with np.load(shard_path(out, shard)) as f:
                            member.write(np.ascontiguousarray(f[key], dtype=dtype).tobytes())
    path = out / SAMPLES_FILE
    atomic_write(path, write)
    sha = sha256_file(path)
    atomic_write(out / (SAMPLES_FILE + ".sha256"), lambda f: f.write(f"{sha}  {SAMPLES_FILE}\n".encode()))
    config = json.loads((out / CONFIG_FILE).read_text())
    config["result"] = {"file": SAMPLES_FILE, "sha256": sha, "num": spec.num, "shape": [spec.num, *item]}
    atomic_write(out / CONFIG_FILE, lambda f: f.write(json.dumps(config, indent=1).encode()))
    return path, sha


#################################################################################
#                                   The run                                      #
#################################################################################

def init_distributed(device=None, timeout_minutes=DIST_TIMEOUT_MINUTES):
    """(rank, world size, device): torchrun's process group (gloo on CPU, nccl on GPU) or a single process."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1, torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
    return dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")


def _barrier(world):
    if world > 1:  # NCCL wants to know the device; gloo takes none
        dist.barrier(device_ids=[torch.cuda.current_device()] if dist.get_backend() == "nccl" else None)


def run(spec, out, max_shards=None, device=None, progress=True, timeout_minutes=DIST_TIMEOUT_MINUTES):
    """Samples what is missing under out/ (this rank's share), then assembles on rank 0 when complete.

    max_shards stops this process after that many new shards (preemptible machines; restart tests).
    The only collectives are the broadcast of what is done and one barrier after sampling (ranks differ
    by at most one shard); the process group is gone before rank 0 assembles and hashes the npz (~10 GB
    for 50k images), so no rank waits on that under a collective timeout, on the first run or a rerun.
    Returns the samples.npz path on rank 0 once complete, else None.
    """
    rank, world, device = init_distributed(device, timeout_minutes)
    out = Path(out)
    if rank == 0:
        (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        check_or_write_config(out, spec)
    decided = [finished_shards(out, spec) if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(decided, src=0)  # rank 0 alone decides what is done
    done = set(decided[0])
    todo = [s for s in range(spec.num_shards) if s not in done]
    mine = todo[rank::world][:max_shards]
    if mine:
        model_fn, vae = build_model_fn(spec, device), build_vae(spec, device)
        remaining = sum(len(spec.shard_indices(s)) for s in todo)
        with sampling.precision(spec.precision, device), tqdm(
                total=remaining, unit="img", disable=not progress or rank != 0,
                desc=f"sampling ({world} rank{'s' * (world > 1)})", dynamic_ncols=True) as bar:
            for shard in mine:
                indices = spec.shard_indices(shard)
                images, labels = generate(model_fn, vae, spec, indices, device)
                write_shard(out, shard, images, labels, indices)
                bar.update(min(len(indices) * world, bar.total - bar.n))  # every rank advances alike
    _barrier(world)  # every rank's shards are on disk
    if world > 1:
        dist.destroy_process_group()
    if rank != 0:
        return None
    missing = spec.num_shards - len(finished_shards(out, spec))
    done_before = json.loads((out / CONFIG_FILE).read_text()).get("result")
    if missing:
        print(f"{spec.num_shards - missing}/{spec.num_shards} shards done under {out}; run again to continue")
        return None
    if done_before and not todo and (out / SAMPLES_FILE).is_file():
        path = out / SAMPLES_FILE  # complete already: no need to rewrite (and rehash) gigabytes
    else:
        path = assemble(out, spec)[0]
    if spec.video and not (out / PREVIEW_FILE).is_file():
        write_preview(path, out / PREVIEW_FILE)
    return path


def write_preview(samples_path, gif_path, clips=16, scale=4, frame_ms=150):
    """An animated GIF of the first `clips` clips of a samples.npz of clips (N, F, H, W, C), in a square grid."""
    from PIL import Image
    with np.load(samples_path) as f:
        videos = f["arr_0"][:clips]  # (n, F, H, W, C) uint8
    n, frames, h, w, c = videos.shape
    side = math.ceil(math.sqrt(n))
    grid = np.zeros((frames, side * h, side * w, c), dtype=np.uint8)
    for i, video in enumerate(videos):
        r, col = divmod(i, side)
        grid[:, r * h:(r + 1) * h, col * w:(col + 1) * w] = video
    grid = grid.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(g[..., 0] if c == 1 else g) for g in grid]
    atomic_write(gif_path, lambda f: images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                                                    duration=frame_ms, loop=0))
    return gif_path
