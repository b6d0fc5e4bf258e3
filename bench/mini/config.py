"""The mini reproduction's recipe: data, model, training and fine-tuning budgets, in one dataclass.

Sized for a 2-core CPU: the DiT trains for DIT_STEPS at batch 64 (a probe: 6,000 steps at lr 1e-3 with
warm-up and cosine decay gave clean digits, 99.8 % classified correctly); each DyDiT is fine-tuned from
it for FINETUNE_FRACTION of those steps (the paper: 150k-200k of DiT's 7M, 2-3 %; the mini needs a
larger share because the routers start far from their targets and the run is short), each DySiT for
FLOW_FINETUNE_FRACTION (twice as long: its token routers learn to follow the digits' strokes, and in 600
steps their eval FLOPs stayed 0.04-0.05 above lambda; NOTES.md).
"""
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class MiniConfig:
    """Everything that decides the mini's trained models (hashed into the cache key)."""
    data_seed: int = 0  # shuffles the 5,000 digits before the fixed 4,000 / 1,000 split
    model: str = "DiT-Mini/2"
    dynamic_model: str = "DyDiT-Mini/2"
    seed: int = 0  # the DiT's training seed (NOTES.md: the two-seed spread used seeds 0 and 1)
    batch_size: int = 64
    dit_steps: int = 6000
    dit_lr: float = 1e-3
    dit_lr_warmup: int = 300  # then cosine decay to 0
    dit_ema: float = 0.999
    finetune_fraction: float = 0.10
    flow_finetune_fraction: float = 0.20  # DySiT's fine-tune (flow matching): 0.10 missed lambda by +0.04 / +0.05
    finetune_lr: float = 5e-4
    finetune_ema: float = 0.99  # the fine-tune is short: an EMA of 0.999 would lag behind the routers
    flops_hold: int = 20  # lambda_t = 1 for these steps, then linear to lambda over flops_warmup
    flops_warmup_fraction: float = 0.5  # of the fine-tune steps
    complete_model_loss: bool = True
    stratified_timesteps: bool = True
    # DyDiT++'s parameter-efficient fine-tuning, at one adapter size: TD-LoRA has `adapter_experts` experts of
    # rank `adapter_rank` per layer, static LoRA one of rank adapter_rank x adapter_experts (as many weights).
    # Rank 4 x 4 experts would train 11 % of DyDiT-Mini's parameters (hidden 128): over the 10 % claimed.
    adapter_rank: int = 2
    adapter_experts: int = 4
    adapter_lr: float = 2e-3  # adapters train few weights from zero: a larger step than full fine-tuning's
    classifier_epochs: int = 20
    classifier_seed: int = 0  # not `seed`: models trained with other seeds are judged by the same classifier

    @property
    def objective(self) -> str:
        """The training objective of this recipe's models: flow matching for SiT / DySiT, else diffusion."""
        return registry.entry(self.model).objective

    @property
    def finetune_steps(self) -> int:
        """Fine-tuning steps of this recipe's dynamic models (DySiT's: flow_finetune_fraction of the SiT's)."""
        fraction = self.flow_finetune_fraction if self.objective == "flow" else self.finetune_fraction
        return max(1, round(self.dit_steps * fraction))

    def key(self, *parts) -> str:
        """Cache key of one artifact: this config, the named parts and the code that trains it."""
        digest = hashlib.sha256(json.dumps([dataclasses.asdict(self), parts], sort_keys=True).encode())
        for path in CODE:
            digest.update(path.read_bytes() if path.is_file() else b"")
        return digest.hexdigest()[:16]
