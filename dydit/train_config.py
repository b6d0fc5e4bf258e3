"""The training config and the paper's recipes (presets), each preset with its note.

    from dydit.train_config import PRESETS, TrainConfig
    config = TrainConfig(**{**PRESETS["dydit-xl-0.7"].overrides, "max_steps": 1000})
    print(PRESETS["dydit-xl-0.7"].note)

The loop that runs a config is dydit/train.py.
"""
from dataclasses import dataclass
from typing import Optional

from dydit.errors import UserError
from dydit import registry
from dydit.registry import MODELS


class TrainError(UserError, ValueError):
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
    # init_checkpoint gives only the tensors whose name and shape match the model's; the others keep their init.
    # As Latte's train.py `pretrained` (by name there): a Latte starts from an image DiT (its blocks by index, even
    # ones spatial, odd ones temporal; the temporal position table and a class table of another size start fresh)
    init_matching: bool = False
    # objective
    flops_ratio: float = 0.7  # lambda: the target F_dyn / F_static (DyDiT only)
    flops_weight: float = 2.0
    flops_hold: int = 100  # lambda_t = 1 for these steps, then linear to lambda over flops_warmup
    flops_warmup: int = 5000
    complete_loss: bool = True  # DyDiT: add the complete model's diffusion loss
    complete_loss_until: Optional[int] = None  # ... only before this step (the two-stage lambda=0.5 recipe)
    objective: str = "diffusion"  # "diffusion": DDPM eps + VB (DiT, DyDiT); "flow": SiT's velocity flow matching
    min_snr_gamma: Optional[float] = None  # diffusion: eps MSE weighted by min(SNR, gamma) / SNR (None: DiT's, unweighted)
    adapter: str = "none"  # "lora" (static, peft) or "td-lora" (dydit.lora): the base frozen, only adapters
    # and routers train, and checkpoints hold only those plus the sha256 of init_checkpoint (the base)
    adapter_rank: int = 4
    adapter_experts: int = 4  # TD-LoRA's experts per layer
    routers: str = "all"  # DyDiT: which routers learn; "width" (TDW only) / "token" (SDT only) freeze the
    # other kind at its init, which keeps every head, channel group or token (the paper's ablation)
    # DyDiT's token routers (None / 1.0: the official recipe). A short fine-tune cannot move them: Adam moves each
    # weight about lr per step, the routers start 35 logits from their decision boundary, and their first layer
    # gets no gradient until the zero-initialised last layer has moved (NOTES.md, the mini's SDT)
    token_router_bias: Optional[float] = None  # the token routers' output bias when the run starts (None: 35)
    token_router_lr_scale: float = 1.0  # the token routers learn at lr x this
    # The routers' training masks keep with probability sigmoid(logit) (Gumbel noise); eval keeps logit > 0, so the
    # FLOPs loss holds lambda in expectation under the noise, not at eval. Over this last fraction of the run the
    # noise falls linearly to 0, so the run ends on the eval decision (0: noise throughout, the official recipe)
    router_noise_anneal: float = 0.0
    # The EMA averages the routers' weights too (True: official). Their decisions are thresholds: the decision of
    # averaged weights is not the average decision (DyDiT-Mini lambda=0.7 after 600 steps: 0.732 with averaged
    # routers, 0.715 with the raw ones on the same EMA weights; NOTES.md). False: the EMA model carries the raw
    # routers, the ones the FLOPs loss holds at lambda
    ema_routers: bool = True
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
        if not registry.is_known(self.model):
            raise TrainError(f"unknown model {self.model!r}; known: "
                             f"{', '.join([*MODELS, *registry.FLUX_MODELS, *registry.LATTE_MODELS])}")
        entry = registry.entry(self.model)
        if entry.family == "FLUX" and not entry.is_mini:
            raise TrainError(f"{self.model}: of FLUX, bench train takes the text-to-image mini (FLUX-Mini, DyFLUX-Mini "
                             f"with --data prompted-digits); full-size FLUX needs its T5 / CLIP encoders and VAE: not yet")
        if entry.family == "FLUX" and self.objective != "flow":
            raise TrainError(f"{self.model} trains with rectified flow: give objective 'flow'")
        if not 0.0 < self.flops_ratio <= 1.0:
            raise TrainError(f"flops_ratio (lambda) must be in (0, 1], got {self.flops_ratio}")
        checks = [("max_steps", self.max_steps > 0), ("global_batch_size", self.global_batch_size > 0),
                  ("lr", self.lr > 0), ("ema_decay", 0.0 <= self.ema_decay <= 1.0),
                  ("grad_clip", self.grad_clip is None or self.grad_clip > 0),
                  ("log_every", self.log_every > 0), ("ckpt_every", self.ckpt_every > 0),
                  ("precision", self.precision in ("fp32", "tf32")),
                  ("routers", self.routers in ROUTERS), ("objective", self.objective in OBJECTIVES),
                  ("adapter", self.adapter in ADAPTERS), ("adapter_rank", self.adapter_rank > 0),
                  ("adapter_experts", self.adapter_experts > 0), ("token_router_lr_scale", self.token_router_lr_scale > 0),
                  ("router_noise_anneal", 0.0 <= self.router_noise_anneal <= 1.0)]
        for name, ok in checks:
            if not ok:
                raise TrainError(f"bad {name}: {getattr(self, name)!r}")
        if self.min_snr_gamma is not None and (self.objective != "diffusion" or not self.min_snr_gamma > 0):
            raise TrainError(f"min_snr_gamma weights the diffusion objective's eps loss: a number > 0 with objective "
                             f"'diffusion', got {self.min_snr_gamma!r} with {self.objective!r}")
        if self.adapter != "none" and not self.init_checkpoint:
            raise TrainError(f"adapter={self.adapter!r} fine-tunes a base: give init_checkpoint (its weights)")
        if self.init_matching and (not self.init_checkpoint or self.adapter != "none"):
            raise TrainError("init_matching starts a full training from init_checkpoint's matching tensors: give "
                             "init_checkpoint, and no adapter (an adapter's base must load whole)")


ROUTERS = ("all", "width", "token")  # TrainConfig.routers
OBJECTIVES = ("diffusion", "flow")  # TrainConfig.objective
ADAPTERS = ("none", "lora", "td-lora")  # TrainConfig.adapter
RUN_ONLY = ("log_every", "ckpt_every", "num_workers", "device")


#################################################################################
#                                   Presets                                     #
#################################################################################

@dataclass(frozen=True)
class Preset:
    """One recipe: a line saying what it is, and its overrides of TrainConfig."""
    note: str
    overrides: dict


# The paper's recipes as overrides of TrainConfig (ALI train.py and its scripts; DiT's train.py).
# "dit-xl-2" is an asset name of suites/assets.toml (DiT-XL-2-256x256.pt): `python -m bench train`
# resolves it; in Python pass a path.
PRESETS = {
    "dit-xl": Preset(
        "DiT-XL/2 from scratch (DiT's train.py: AdamW lr 1e-4, batch 256, EMA 0.9999; 7M steps)",
        dict(model="DiT-XL/2", lr=1e-4, global_batch_size=256, ema_decay=0.9999, max_steps=7_000_000,
             complete_loss=False, stratified_timesteps=False, ckpt_every=50_000)),
    "dydit-xl-0.7": Preset(
        "DyDiT-XL/2 lambda 0.7 from DiT-XL-2-256x256.pt: lr 2.5e-5, clip 50, FLOPs warm-up 5000, "
        "150k steps, batch 256, EMA 0.9999, stratified t, complete-model loss",
        dict(model="DyDiT-XL/2", init_checkpoint="dit-xl-2", flops_ratio=0.7, lr=2.5e-5,
             grad_clip=50.0, flops_hold=100, flops_warmup=5000, max_steps=150_000,
             global_batch_size=256, ema_decay=0.9999, stratified_timesteps=True, complete_loss=True)),
    "dydit-xl-0.5": Preset(
        "DyDiT-XL/2 lambda 0.5, two stages in one run: lr 1e-4, clip 200, FLOPs warm-up 1000; "
        "steps 0-30k with the complete-model loss, then to 200k without it",
        dict(model="DyDiT-XL/2", init_checkpoint="dit-xl-2", flops_ratio=0.5, lr=1e-4,
             grad_clip=200.0, flops_hold=100, flops_warmup=1000, max_steps=200_000,
             global_batch_size=256, ema_decay=0.9999, stratified_timesteps=True, complete_loss=True,
             complete_loss_until=30_000)),
}
# DiT-S/B and DyDiT-S/B (the scaling table): the paper gives only the lengths (DiT-S 5M and DiT-B 1.6M
# steps, pre-trained elsewhere; fine-tuning S 50k, B 100k); the rest follows DiT's and DyDiT-XL lambda=0.7's
# recipes. No DiT-S/B weights are public: a DyDiT-S/B run starts from the asset dit-s-2 / dit-b-2, which a
# dit-s / dit-b run makes (suites/assets.toml says where it goes).
SCALING_LAMBDAS = (0.9, 0.8, 0.7, 0.5, 0.4, 0.3)
for _size, _steps, _finetune, _steps_text, _finetune_text in (("s", 5_000_000, 50_000, "5M", "50k"),
                                                              ("b", 1_600_000, 100_000, "1.6M", "100k")):
    PRESETS[f"dit-{_size}"] = Preset(
        f"DiT-{_size.upper()}/2 from scratch, DiT's recipe, {_steps_text} steps (the scaling table's baseline)",
        dict(PRESETS["dit-xl"].overrides, model=f"DiT-{_size.upper()}/2", max_steps=_steps))
    for _lam in SCALING_LAMBDAS:
        PRESETS[f"dydit-{_size}-{_lam:g}"] = Preset(
            f"DyDiT-{_size.upper()}/2 lambda {_lam:g} from dit-{_size}-2 (the assets' DiT-{_size.upper()}-2-256x256.pt,"
            f" trained with --preset dit-{_size}): {_finetune_text} steps, otherwise dydit-xl-0.7's recipe",
            dict(PRESETS["dydit-xl-0.7"].overrides, model=f"DyDiT-{_size.upper()}/2",
                 init_checkpoint=f"dit-{_size}-2", flops_ratio=_lam, max_steps=_finetune))
# SiT-XL/2 (willisma/SiT train.py: AdamW lr 1e-4, batch 256, EMA 0.9999, flow matching, 7M steps) and DyDiT on
# it (DyDiT++): DyDiT-XL's fine-tuning recipes with the flow-matching objective, from SiT-XL-2-256x256.pt.
PRESETS["sit-xl"] = Preset(
    "SiT-XL/2 from scratch with flow matching (SiT's train.py: lr 1e-4, batch 256, EMA 0.9999)",
    dict(PRESETS["dit-xl"].overrides, model="SiT-XL/2", objective="flow"))
for _lam in (0.7, 0.5):
    PRESETS[f"dysit-xl-{_lam:g}"] = Preset(
        f"DyDiT on SiT-XL/2 (DyDiT++), lambda {_lam:g}, from SiT-XL-2-256x256.pt: "
        f"dydit-xl-{_lam:g}'s recipe with the flow-matching objective",
        dict(PRESETS[f"dydit-xl-{_lam:g}"].overrides, model="DySiT-XL/2", objective="flow",
             init_checkpoint="sit-xl-2"))
