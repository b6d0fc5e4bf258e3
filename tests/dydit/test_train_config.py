"""The training config and its presets (dydit/train_config.py)."""
import dataclasses

import pytest

from dydit.registry import MODELS
from dydit.train_config import PRESETS, Preset, TrainConfig, TrainError


def old_presets():
    """The override dicts as dydit/train.py built them before each preset carried its note."""
    presets = {
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
    for size, steps, finetune in (("s", 5_000_000, 50_000), ("b", 1_600_000, 100_000)):
        presets[f"dit-{size}"] = dict(presets["dit-xl"], model=f"DiT-{size.upper()}/2", max_steps=steps)
        for lam in (0.9, 0.8, 0.7, 0.5, 0.4, 0.3):
            presets[f"dydit-{size}-{lam:g}"] = dict(presets["dydit-xl-0.7"], model=f"DyDiT-{size.upper()}/2",
                                                    init_checkpoint=f"dit-{size}-2", flops_ratio=lam,
                                                    max_steps=finetune)
    presets["sit-xl"] = dict(presets["dit-xl"], model="SiT-XL/2", objective="flow")
    for lam in (0.7, 0.5):
        presets[f"dysit-xl-{lam:g}"] = dict(presets[f"dydit-xl-{lam:g}"], model="DySiT-XL/2", objective="flow",
                                             init_checkpoint="sit-xl-2")
    return presets


def test_presets_keep_their_names_order_and_overrides():
    old = old_presets()
    assert list(PRESETS) == list(old)
    for name, preset in PRESETS.items():
        assert isinstance(preset, Preset) and preset.overrides == old[name], name
        assert {k: type(v) for k, v in preset.overrides.items()} == {k: type(v) for k, v in old[name].items()}


def test_every_preset_has_a_note_and_makes_a_valid_config():
    for name, preset in PRESETS.items():
        assert preset.note and "\n" not in preset.note, name
        config = TrainConfig(**preset.overrides)
        config.validate()
        assert config.model in MODELS
    assert PRESETS["dydit-b-0.4"].note.startswith("DyDiT-B/2 lambda 0.4 from dit-b-2 (")
    assert "100k steps" in PRESETS["dydit-b-0.4"].note and "1.6M steps" in PRESETS["dit-b"].note
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["dit-xl"].note = "changed"


def test_validate_names_the_bad_field():
    with pytest.raises(TrainError, match="unknown model 'DiT-Q/2'"):
        TrainConfig(model="DiT-Q/2").validate()
    with pytest.raises(TrainError, match="bad routers"):
        TrainConfig(routers="some").validate()
