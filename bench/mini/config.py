"""The mini reproduction's recipe: data, model, training and fine-tuning budgets, in one dataclass.

Sized for a 2-core CPU: the DiT trains for dit_steps at batch 64; each DyDiT and each fair control is
fine-tuned from it for finetune_fraction of those steps (the paper: 150k-200k of DiT's 7M, 2-3 %; the mini
needs a larger share because the routers start far from their targets and the run is short), each DySiT
for flow_finetune_fraction. Every field that deviates from the paper's full-size recipe says why, with the
measurement in NOTES.md (Min-SNR weighting, the token routers' start and step size). The CFG scale and the
quality tolerances are not here: the spread study chooses them (bench/mini/spread.py).
"""
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import bench
import dydit
from dydit import registry

# source files whose change invalidates the cached models (they decide what training produces, or how a trained
# model is loaded)
CODE = [Path(dydit.__file__).parent / name for name in ("registry.py", "models.py", "diffusion.py", "flow.py",
                                                        "lora.py", "train_config.py", "train.py", "train_step.py",
                                                        "checkpoints.py")] + \
       [Path(bench.__file__).parent / name for name in ("data.py", "mini/config.py", "mini/build.py",
                                                          "metrics/digits.py")]
# per family, the model and training code its minis run beyond CODE (DiT's and SiT's is in CODE): hashed into the
# keys of that family's models only, so a change to DyFLUX retrains the FLUX minis and leaves the DiT ones
FAMILY_CODE = {"FLUX": [Path(dydit.__file__).parent / name for name in ("flux.py", "flux_flops.py", "flux_train.py",
                                                                        "text2img.py")],
               "Latte": [Path(dydit.__file__).parent / name for name in ("latte.py", "latte_flops.py")]}
# per dataset (MiniConfig.data), the code that makes it beyond bench/data.py: hashed into the keys of the models and
# judges trained on it
DATA_CODE = {"digits": [], "prompted-digits": [Path(bench.__file__).parent / "mini" / "prompted_digits.py"],
             "moving-digits": [Path(bench.__file__).parent / "mini" / "moving_digits.py"]}


FINETUNE = {"finetune": True}  # a MiniConfig field that only the fine-tunes read (not the static models' key)


@dataclass(frozen=True)
class MiniConfig:
    """Everything that decides the mini's trained models (hashed into the cache key)."""
    data_seed: int = 0  # shuffles the 5,000 digits before the fixed 4,000 / 1,000 split
    model: str = "DiT-Mini/2"
    dynamic_model: str = field(default="DyDiT-Mini/2", metadata=FINETUNE)
    seed: int = 0  # the DiT's training seed (NOTES.md: the two-seed spread used seeds 0 and 1)
    batch_size: int = 64
    dit_steps: int = 6000
    dit_lr: float = 1e-3
    dit_lr_warmup: int = 300  # then cosine decay to 0
    dit_ema: float = 0.999
    # The scaling mini's narrower DiTs (hidden below `model`'s) train dit_steps x (model's hidden / theirs) **
    # narrow_steps_exponent steps (their fine-tunes follow: finetune_fraction of it). At 6,000 steps widths 32 / 64 did
    # not learn class conditioning (validation accuracy at CFG 1.75: 0.248 / 0.764). Width 64 at 12,000 (2x): 0.984;
    # width 32 at 12,000: 0.892, at 24,000 (4x): 0.988, mini-FID 53.2 (the width-128 DiT at 6,000: 0.968, 49.3).
    # Not keyed itself: bench.mini.build.config_for writes it into those models' dit_steps, which is (NOTES.md).
    narrow_steps_exponent: float = field(default=1.0, metadata={"key": False})
    # The video mini's models (Latte-Mini on 8-frame clips, suites/latte-mini.toml) train on this many clips per step:
    # as many frames as batch_size digits (64), so a step costs about a DiT-Mini step. Not validated by a measurement
    # yet (NOTES.md). Not keyed itself: config_for writes it into those models' batch_size, which is.
    video_batch_size: int = field(default=8, metadata={"key": False})
    # The video mini's static model starts from the mini's image DiT of its size (trained here first), as Latte's
    # train.py starts from a DiT (`pretrained`: every tensor of that name; here of that name and shape). From scratch, 6,000 steps x
    # 8 clips saw 48,000 clips and read 0.13 of their frames as the digit; DiT-Mini itself at 8 digits a step reads
    # 0.53 (NOTES.md): the budget's digits, not Latte, are short. False: from scratch. Not keyed itself (nor a baseline
    # field the spread study checks: the image models do not read it): config_for writes it into the video recipe's
    # image_recipe, whose DiT's key is part of the video model's.
    video_from_image: bool = field(default=True, metadata={"key": False})
    # Set by bench.mini.build.config_for on a video model's recipe: the recipe of the image DiT it starts from
    # (not keyed itself: that DiT's key is part of the video model's)
    image_recipe: Optional["MiniConfig"] = field(default=None, metadata={"key": False})
    # -- the fine-tunes (dynamic models, controls, adapters): fields marked FINETUNE do not key the static models --
    finetune_fraction: float = field(default=0.10, metadata=FINETUNE)
    # DySiT's fine-tune (flow matching): 0.10 missed lambda by +0.04 / +0.05
    flow_finetune_fraction: float = field(default=0.20, metadata=FINETUNE)
    finetune_lr: float = field(default=5e-4, metadata=FINETUNE)
    # the fine-tune is short: an EMA of 0.999 would lag behind the routers
    finetune_ema: float = field(default=0.99, metadata=FINETUNE)
    # lambda_t = 1 for these steps, then linear to lambda over flops_warmup_fraction of the fine-tune steps
    flops_hold: int = field(default=20, metadata=FINETUNE)
    flops_warmup_fraction: float = field(default=0.5, metadata=FINETUNE)
    complete_model_loss: bool = field(default=True, metadata=FINETUNE)
    # The diffusion models' eps loss weighted by min(SNR, 5) / SNR (Min-SNR, Hang et al. 2023; DiT: unweighted). DiT's
    # unweighted loss let the clean steps' eps errors dominate: the 6,000-step DiT-Mini scored validation mini-FID
    # 64.5 / accuracy 0.826 at CFG 1.5 (127.6 / 0.656 at CFG 1); with Min-SNR-5, 35.2 / 0.940 (53.8 / 0.784): NOTES.md
    min_snr_gamma: Optional[float] = 5.0
    # The token routers. Official: bias 35, the routers' lr. In 600 fine-tuning steps Adam moves each weight <= 0.3
    # (600 x lr 5e-4): the routers stayed all-on (MLP FLOPs ink / background 1.000). DyFLUX's bias 5 and 10x their
    # lr: tokens kept 0.58, ink / background 1.29 at lambda 0.5 (NOTES.md). The full-size fine-tunes (150k-200k
    # steps) reach 35 with the official values.
    token_router_bias: Optional[float] = field(default=5.0, metadata=FINETUNE)
    token_router_lr_scale: float = field(default=10.0, metadata=FINETUNE)
    # The routers' Gumbel noise over the fine-tune's last fraction falls to 0 (TrainConfig.router_noise_anneal; 0:
    # the official recipe). The training masks keep with probability sigmoid(logit), eval keeps logit > 0: DyDiT-Mini
    # lambda=0.5 trained at 0.500 and evaluated at 0.534 (NOTES.md)
    router_noise_anneal: float = field(default=0.0, metadata=FINETUNE)
    # The fine-tunes' EMA carries the raw routers, not their average (TrainConfig.ema_routers; True: official): the
    # routers the FLOPs loss holds at lambda. 600 steps, DyDiT-Mini lambda=0.7: the EMA weights sampled at FLOPs 0.732
    # with averaged routers, 0.715 with the raw ones, the same quality; at 1,200 steps 0.740 / 0.739 (NOTES.md)
    ema_routers: bool = field(default=False, metadata=FINETUNE)
    stratified_timesteps: bool = True
    # DyDiT++'s parameter-efficient fine-tuning, at one adapter size: TD-LoRA has `adapter_experts` experts of
    # rank `adapter_rank` per layer, static LoRA one of rank adapter_rank x adapter_experts (as many weights).
    # Rank 4 x 4 experts would train 11 % of DyDiT-Mini's parameters (hidden 128): over the 10 % claimed.
    adapter_rank: int = field(default=2, metadata=FINETUNE)
    adapter_experts: int = field(default=4, metadata=FINETUNE)
    # adapters train few weights from zero: a larger step than full fine-tuning's
    adapter_lr: float = field(default=2e-3, metadata=FINETUNE)
    classifier_epochs: int = 20
    classifier_seed: int = 0  # not `seed`: models trained with other seeds are judged by the same classifier
    # where the models train and sample: None = CUDA when present, else the CPU (bench run --device). Not in the
    # cache key: the same recipe on another device is the same model up to float rounding (done.json says where)
    device: Optional[str] = field(default=None, metadata={"key": False})

    @property
    def objective(self) -> str:
        """The training objective of this recipe's models: flow matching for SiT / DySiT, else diffusion."""
        return registry.entry(self.model).objective

    @property
    def data(self) -> str:
        """What this recipe's models train on (bench.data.load): digits and their class, the text-to-image mini's
        prompted canvases for FLUX, or the video mini's moving digits for Latte."""
        entry = registry.entry(self.model)
        return "prompted-digits" if entry.is_text_to_image else "moving-digits" if entry.is_video else "digits"

    @property
    def finetune_steps(self) -> int:
        """Fine-tuning steps of this recipe's dynamic models (DySiT's: flow_finetune_fraction of the SiT's)."""
        fraction = self.flow_finetune_fraction if self.objective == "flow" else self.finetune_fraction
        return max(1, round(self.dit_steps * fraction))

    def is_narrower(self, model: str) -> bool:
        """Whether `model` is narrower than this recipe's model (it then trains more steps: steps_for)."""
        return registry.entry(model).hidden_size < registry.entry(self.model).hidden_size

    def steps_for(self, model: str) -> int:
        """The static training steps of `model` under this recipe: dit_steps, or for a narrower width dit_steps x
        (this recipe's hidden / its hidden) ** narrow_steps_exponent (DiT-Mini-32 under DiT-Mini: 4x)."""
        if not self.is_narrower(model):
            return self.dit_steps
        ratio = registry.entry(self.model).hidden_size / registry.entry(model).hidden_size
        return round(self.dit_steps * ratio ** self.narrow_steps_exponent)

    def objective_recipe(self) -> dict:
        """The TrainConfig fields of this recipe's objective (Min-SNR weights the diffusion objective only)."""
        return {"objective": self.objective, "min_snr_gamma": self.min_snr_gamma if self.objective == "diffusion"
                else None}

    def router_recipe(self, routers="all") -> dict:
        """The TrainConfig fields of a dynamic model's routers (routers="width", the ablation's TDW only: the
        frozen token routers keep the official bias 35, so they keep every token in training too)."""
        anneal = {"router_noise_anneal": self.router_noise_anneal,  # every router that learns ends on its eval decision
                  "ema_routers": self.ema_routers}
        if routers == "width":
            return anneal
        return {"token_router_bias": self.token_router_bias, "token_router_lr_scale": self.token_router_lr_scale,
                **anneal}

    def baseline_fields(self) -> dict:
        """The fields that decide the static models (trained from scratch): all but the fine-tunes' and the device."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("key", True) and not f.metadata.get("finetune", False)}

    def key(self, *parts, finetune=True, data=None) -> str:
        """Cache key of one artifact: this config (finetune=False: its baseline_fields only, for a model trained
        from scratch), the named parts and the code that trains it: CODE, this model's family's and the code of its
        data (`data`: another dataset's, for a judge trained on it)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("key", True)} \
            if finetune else self.baseline_fields()
        digest = hashlib.sha256(json.dumps([fields, parts], sort_keys=True).encode())
        for path in CODE + FAMILY_CODE.get(registry.entry(self.model).family, []) + DATA_CODE[data or self.data]:
            digest.update(path.read_bytes() if path.is_file() else b"")
        return digest.hexdigest()[:16]
