"""Model names: the one place that knows what "DyDiT-XL/2" means (family, dynamic or not, size, patch).

    from dydit.registry import MODELS, create_model, entry
    model = create_model("DyDiT-XL/2")              # the module, with the name's defaults
    entry("DyDiT-XL/2").static                      # "DiT-XL/2": its static counterpart

Every name is written out below (DiT's models.py writes each config out), so a search for a name finds it.
MODELS holds the DiT family (DiT, DyDiT, SiT, DySiT), what training, sampling and the timings take; FLUX_MODELS
holds FLUX and DyFLUX (dydit/flux.py), built from diffusers' configs.
"""
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict

if TYPE_CHECKING:  # the names alone import no torch: the CLI checks them before torch is loaded
    import torch.nn as nn

# name: (depth, hidden_size, num_heads). "Mini" is the mini reproduction's model (a CPU trains it on
# 16 x 16 one-channel digits of ten classes: MINI_DEFAULTS); "Mini-32" and "Mini-64" are its narrower
# siblings for the scaling mini (same depth; 4 heads each, so the width routers choose among as many
# groups at every size); the rest are DiT's sizes.
SIZES = {"Mini": (4, 128, 4), "Mini-64": (4, 64, 4), "Mini-32": (4, 32, 4),
         "S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
MINI_SIZES = ("Mini", "Mini-64", "Mini-32")
MINI_DEFAULTS = dict(input_size=16, in_channels=1, num_classes=10)
FAMILIES = ("DiT", "SiT")  # the backbone's family: it fixes the objective (and SiT's learn_sigma=False)


#################################################################################
#                                  Entries                                      #
#################################################################################

@dataclass(frozen=True)
class ModelEntry:
    """What a model name means, and how to build it."""
    name: str  # "DyDiT-XL/2"
    family: str  # "DiT" or "SiT"
    is_dynamic: bool  # DyDiT's routers (DyDiT, DySiT) or not (DiT, SiT)
    size: str  # a key of SIZES: "XL", "Mini-32", ...
    patch: int  # 2, 4 or 8
    static: str  # the static counterpart ("DiT-XL/2"); the name itself for a static model
    dynamic: str  # the dynamic counterpart ("DyDiT-XL/2"); the name itself for a dynamic model

    @property
    def objective(self) -> str:
        """The training objective of the family: "diffusion" (DiT) or "flow" (SiT's flow matching)."""
        return "diffusion" if self.family == "DiT" else "flow"

    @property
    def is_text_to_image(self) -> bool:
        """Conditioned on prompts (FLUX) rather than classes: False for the DiT family."""
        return False

    @property
    def is_video(self) -> bool:
        """Generates clips (Latte) rather than images: False for the DiT family."""
        return False

    @property
    def is_mini(self) -> bool:
        """A mini size: trained here on 16 x 16 one-channel digits (MINI_DEFAULTS)."""
        return self.size in MINI_SIZES

    @property
    def label(self) -> str:
        """Family and size without the patch: "DiT-Mini-32", "SiT-Mini"."""
        return f"{self.family}-{self.size}"

    @property
    def hidden_size(self) -> int:
        """The width of its blocks (SIZES)."""
        return SIZES[self.size][1]

    def build(self, **kwargs) -> "nn.Module":
        """The module; kwargs go to the constructor and override the name's defaults."""
        from dydit.models import DiT, DyDiT
        depth, hidden_size, num_heads = SIZES[self.size]
        defaults = dict(MINI_DEFAULTS) if self.is_mini else {}
        if self.family == "SiT":  # SiT's backbone is DiT without learned sigma (4 output channels)
            defaults["learn_sigma"] = False
        model_class = DyDiT if self.is_dynamic else DiT
        return model_class(depth=depth, hidden_size=hidden_size, num_heads=num_heads, patch_size=self.patch,
                           **{**defaults, **kwargs})


def _entry(name, family, is_dynamic, size, patch) -> ModelEntry:
    """One registry line; the counterparts follow from family, size and patch."""
    static, dynamic = f"{family}-{size}/{patch}", f"Dy{family}-{size}/{patch}"
    assert family in FAMILIES and size in SIZES and name == (dynamic if is_dynamic else static), name
    return ModelEntry(name, family, is_dynamic, size, patch, static, dynamic)


# Every size with patch 2/4/8, for DiT, DyDiT, SiT and DySiT.
MODELS: Dict[str, ModelEntry] = {e.name: e for e in [
    #################################################################################
    #      DiT (facebookresearch/DiT): learned sigma, the diffusion objective       #
    #################################################################################
    _entry("DiT-Mini/2", "DiT", False, "Mini", 2),
    _entry("DiT-Mini/4", "DiT", False, "Mini", 4),
    _entry("DiT-Mini/8", "DiT", False, "Mini", 8),
    _entry("DiT-Mini-64/2", "DiT", False, "Mini-64", 2),
    _entry("DiT-Mini-64/4", "DiT", False, "Mini-64", 4),
    _entry("DiT-Mini-64/8", "DiT", False, "Mini-64", 8),
    _entry("DiT-Mini-32/2", "DiT", False, "Mini-32", 2),
    _entry("DiT-Mini-32/4", "DiT", False, "Mini-32", 4),
    _entry("DiT-Mini-32/8", "DiT", False, "Mini-32", 8),
    _entry("DiT-S/2", "DiT", False, "S", 2),
    _entry("DiT-S/4", "DiT", False, "S", 4),
    _entry("DiT-S/8", "DiT", False, "S", 8),
    _entry("DiT-B/2", "DiT", False, "B", 2),
    _entry("DiT-B/4", "DiT", False, "B", 4),
    _entry("DiT-B/8", "DiT", False, "B", 8),
    _entry("DiT-L/2", "DiT", False, "L", 2),
    _entry("DiT-L/4", "DiT", False, "L", 4),
    _entry("DiT-L/8", "DiT", False, "L", 8),
    _entry("DiT-XL/2", "DiT", False, "XL", 2),
    _entry("DiT-XL/4", "DiT", False, "XL", 4),
    _entry("DiT-XL/8", "DiT", False, "XL", 8),

    #################################################################################
    #                DyDiT: DiT + per-block width and token routers                 #
    #################################################################################
    _entry("DyDiT-Mini/2", "DiT", True, "Mini", 2),
    _entry("DyDiT-Mini/4", "DiT", True, "Mini", 4),
    _entry("DyDiT-Mini/8", "DiT", True, "Mini", 8),
    _entry("DyDiT-Mini-64/2", "DiT", True, "Mini-64", 2),
    _entry("DyDiT-Mini-64/4", "DiT", True, "Mini-64", 4),
    _entry("DyDiT-Mini-64/8", "DiT", True, "Mini-64", 8),
    _entry("DyDiT-Mini-32/2", "DiT", True, "Mini-32", 2),
    _entry("DyDiT-Mini-32/4", "DiT", True, "Mini-32", 4),
    _entry("DyDiT-Mini-32/8", "DiT", True, "Mini-32", 8),
    _entry("DyDiT-S/2", "DiT", True, "S", 2),
    _entry("DyDiT-S/4", "DiT", True, "S", 4),
    _entry("DyDiT-S/8", "DiT", True, "S", 8),
    _entry("DyDiT-B/2", "DiT", True, "B", 2),
    _entry("DyDiT-B/4", "DiT", True, "B", 4),
    _entry("DyDiT-B/8", "DiT", True, "B", 8),
    _entry("DyDiT-L/2", "DiT", True, "L", 2),
    _entry("DyDiT-L/4", "DiT", True, "L", 4),
    _entry("DyDiT-L/8", "DiT", True, "L", 8),
    _entry("DyDiT-XL/2", "DiT", True, "XL", 2),
    _entry("DyDiT-XL/4", "DiT", True, "XL", 4),
    _entry("DyDiT-XL/8", "DiT", True, "XL", 8),

    #################################################################################
    #    SiT (willisma/SiT): DiT's backbone without learned sigma, flow matching    #
    #################################################################################
    _entry("SiT-Mini/2", "SiT", False, "Mini", 2),
    _entry("SiT-Mini/4", "SiT", False, "Mini", 4),
    _entry("SiT-Mini/8", "SiT", False, "Mini", 8),
    _entry("SiT-Mini-64/2", "SiT", False, "Mini-64", 2),
    _entry("SiT-Mini-64/4", "SiT", False, "Mini-64", 4),
    _entry("SiT-Mini-64/8", "SiT", False, "Mini-64", 8),
    _entry("SiT-Mini-32/2", "SiT", False, "Mini-32", 2),
    _entry("SiT-Mini-32/4", "SiT", False, "Mini-32", 4),
    _entry("SiT-Mini-32/8", "SiT", False, "Mini-32", 8),
    _entry("SiT-S/2", "SiT", False, "S", 2),
    _entry("SiT-S/4", "SiT", False, "S", 4),
    _entry("SiT-S/8", "SiT", False, "S", 8),
    _entry("SiT-B/2", "SiT", False, "B", 2),
    _entry("SiT-B/4", "SiT", False, "B", 4),
    _entry("SiT-B/8", "SiT", False, "B", 8),
    _entry("SiT-L/2", "SiT", False, "L", 2),
    _entry("SiT-L/4", "SiT", False, "L", 4),
    _entry("SiT-L/8", "SiT", False, "L", 8),
    _entry("SiT-XL/2", "SiT", False, "XL", 2),
    _entry("SiT-XL/4", "SiT", False, "XL", 4),
    _entry("SiT-XL/8", "SiT", False, "XL", 8),

    #################################################################################
    #            DySiT: DyDiT's routers on SiT (DyDiT++), flow matching             #
    #################################################################################
    _entry("DySiT-Mini/2", "SiT", True, "Mini", 2),
    _entry("DySiT-Mini/4", "SiT", True, "Mini", 4),
    _entry("DySiT-Mini/8", "SiT", True, "Mini", 8),
    _entry("DySiT-Mini-64/2", "SiT", True, "Mini-64", 2),
    _entry("DySiT-Mini-64/4", "SiT", True, "Mini-64", 4),
    _entry("DySiT-Mini-64/8", "SiT", True, "Mini-64", 8),
    _entry("DySiT-Mini-32/2", "SiT", True, "Mini-32", 2),
    _entry("DySiT-Mini-32/4", "SiT", True, "Mini-32", 4),
    _entry("DySiT-Mini-32/8", "SiT", True, "Mini-32", 8),
    _entry("DySiT-S/2", "SiT", True, "S", 2),
    _entry("DySiT-S/4", "SiT", True, "S", 4),
    _entry("DySiT-S/8", "SiT", True, "S", 8),
    _entry("DySiT-B/2", "SiT", True, "B", 2),
    _entry("DySiT-B/4", "SiT", True, "B", 4),
    _entry("DySiT-B/8", "SiT", True, "B", 8),
    _entry("DySiT-L/2", "SiT", True, "L", 2),
    _entry("DySiT-L/4", "SiT", True, "L", 4),
    _entry("DySiT-L/8", "SiT", True, "L", 8),
    _entry("DySiT-XL/2", "SiT", True, "XL", 2),
    _entry("DySiT-XL/4", "SiT", True, "XL", 4),
    _entry("DySiT-XL/8", "SiT", True, "XL", 8),
]}


#################################################################################
#     FLUX (black-forest-labs): diffusers' FluxTransformer2DModel; DyFLUX         #
#################################################################################

# size: what its config changes of FLUX_DEFAULTS. "Dev": FLUX.1-dev (12 B); "Lite": Freepik's FLUX.1-lite-8B, the
# DyFLUX release's base; "Mini": the text-to-image mini's (16 x 32 one-channel digits packed 2 x 2, its own text
# encoder MINI_TEXT_ENCODER; built as a dydit.text2img.TextToImageFlux).
FLUX_DEFAULTS = dict(patch_size=1, in_channels=64, num_attention_heads=24, attention_head_dim=128,
                     joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                     axes_dims_rope=(16, 56, 56))
FLUX_SIZES = {"Dev": dict(num_layers=19, num_single_layers=38), "Lite": dict(num_layers=8, num_single_layers=38),
              "Mini": dict(num_layers=2, num_single_layers=2, num_attention_heads=4, attention_head_dim=32,
                           in_channels=4, joint_attention_dim=128, pooled_projection_dim=128, guidance_embeds=False,
                           axes_dims_rope=(8, 12, 12))}
# transformers' CLIPTextConfig of the mini's text encoder, trained with it (no hub weights); vocab_size bounds the
# prompt tokenizer's (bench.mini.prompted_digits)
MINI_TEXT_ENCODER = dict(vocab_size=64, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, pad_token_id=0, bos_token_id=1,
                         eos_token_id=1)
MINI_IMAGE = (16, 32)  # (H, W) of the mini's canvases


@dataclass(frozen=True)
class FluxEntry:
    """What a FLUX name means: its size and whether it carries DyFLUX's routers (dydit.flux)."""
    name: str  # "DyFLUX-Lite"
    size: str  # a key of FLUX_SIZES
    is_dynamic: bool  # DyFLUX: the release's token routers on every block
    static: str
    dynamic: str
    family: str = "FLUX"
    objective: str = "flow"  # rectified flow (dydit.text2img maps it onto dydit.flow's conventions)

    @property
    def is_text_to_image(self) -> bool:
        """Conditioned on prompts (dydit.text2img at the mini's size), not classes."""
        return True

    @property
    def is_video(self) -> bool:
        """Generates images, not clips."""
        return False

    @property
    def label(self) -> str:
        """The static name: "FLUX-Mini" (DyDiT's convention: the dynamic one is "Dy" + label)."""
        return self.static

    @property
    def is_mini(self) -> bool:
        """The text-to-image mini's model, trained here (bench train --data prompted-digits)."""
        return self.size == "Mini"

    @property
    def config(self) -> dict:
        """diffusers' FluxTransformer2DModel config."""
        return dict(FLUX_DEFAULTS, **FLUX_SIZES[self.size])

    @property
    def hidden_size(self) -> int:
        """The width of its blocks: heads x head dim (3072 at Dev / Lite, 128 at the mini)."""
        return self.config["num_attention_heads"] * self.config["attention_head_dim"]

    def build(self, **kwargs) -> "nn.Module":
        """diffusers' model with, for a dynamic name, DyFLUX's routers (the release's tokens at full size; tokens and
        DyDiT's widths on the mini); kwargs override the config. The mini is a dydit.text2img.TextToImageFlux:
        image_size and in_channels (kwargs) are its images'."""
        from diffusers import FluxTransformer2DModel
        from dydit.flux import add_token_routers, add_width_routers
        image_size, in_channels = kwargs.pop("image_size", MINI_IMAGE), kwargs.pop("in_channels", 1)
        if self.is_mini:
            kwargs.setdefault("in_channels", 4 * in_channels)
        model = FluxTransformer2DModel(**{**self.config, **kwargs})
        if self.is_dynamic:
            add_token_routers(model)
            if self.is_mini:
                add_width_routers(model)
        if not self.is_mini:
            return model
        from transformers import CLIPTextConfig, CLIPTextModel
        from dydit.text2img import TextToImageFlux
        return TextToImageFlux(model, CLIPTextModel(CLIPTextConfig(**MINI_TEXT_ENCODER)), image_size, in_channels)


def _flux(size, is_dynamic) -> FluxEntry:
    static, dynamic = f"FLUX-{size}", f"DyFLUX-{size}"
    return FluxEntry(dynamic if is_dynamic else static, size, is_dynamic, static, dynamic)


FLUX_MODELS: Dict[str, FluxEntry] = {e.name: e for e in [
    _flux("Dev", False), _flux("Lite", False), _flux("Mini", False),
    _flux("Dev", True), _flux("Lite", True), _flux("Mini", True)]}


#################################################################################
#       Latte (Vchitect/Latte): DiT's blocks on video, spatial / temporal       #
#################################################################################

# Latte's defaults: the class-conditional UCF-101 checkpoint (16 frames of 256 x 256: 32 x 32 latents, 101 classes);
# the mini's: 8 frames of the mini's 16 x 16 one-channel digits, 40 classes (digit x direction: the moving-digits
# mini, bench/mini/moving_digits.py)
LATTE_DEFAULTS = dict(input_size=32, in_channels=4, num_frames=16, num_classes=101)
LATTE_MINI_DEFAULTS = dict(MINI_DEFAULTS, num_frames=8, num_classes=40)


@dataclass(frozen=True)
class LatteEntry:
    """What a Latte name means: DiT's size and patch, and whether it carries DyDiT's routers (dydit.latte)."""
    name: str  # "DyLatte-XL/2"
    size: str  # a key of SIZES
    patch: int
    is_dynamic: bool
    static: str
    dynamic: str
    family: str = "Latte"
    objective: str = "diffusion"  # DiT's (learned sigma, the hybrid loss)
    is_text_to_image: bool = False
    is_video: bool = True  # clips (B, F, C, H, W) of num_frames frames

    @property
    def is_mini(self) -> bool:
        return self.size in MINI_SIZES

    @property
    def label(self) -> str:
        return f"Latte-{self.size}"

    @property
    def image_model(self) -> str:
        """The image DiT whose blocks a Latte of this size and patch shares ("DiT-XL/2" for Latte-XL/2): Latte's
        train.py starts from such a DiT's weights (`pretrained`)."""
        return f"DiT-{self.size}/{self.patch}"

    @property
    def hidden_size(self) -> int:
        """The width of its blocks (SIZES)."""
        return SIZES[self.size][1]

    def build(self, **kwargs) -> "nn.Module":
        """dydit.latte.Latte or DyLatte; kwargs (num_frames, num_classes: 0 for the unconditional checkpoints, ...)
        override the defaults."""
        from dydit.latte import DyLatte, Latte
        depth, hidden_size, num_heads = SIZES[self.size]
        args = dict(depth=depth, hidden_size=hidden_size, num_heads=num_heads, patch_size=self.patch,
                    **(LATTE_MINI_DEFAULTS if self.is_mini else LATTE_DEFAULTS))
        return (DyLatte if self.is_dynamic else Latte)(**{**args, **kwargs})


def _latte(size, patch, is_dynamic) -> LatteEntry:
    static, dynamic = f"Latte-{size}/{patch}", f"DyLatte-{size}/{patch}"
    return LatteEntry(dynamic if is_dynamic else static, size, patch, is_dynamic, static, dynamic)


LATTE_MODELS: Dict[str, LatteEntry] = {e.name: e for e in [
    _latte(size, patch, dynamic) for dynamic in (False, True) for size in ("Mini", "S", "B", "L", "XL")
    for patch in (2, 4, 8)]}


def entry(name):
    """The registry entry of a model name: a ModelEntry ("DiT-XL/2", "DyDiT-S/4", ...), a FluxEntry ("FLUX-Lite",
    "DyFLUX-Lite") or a LatteEntry ("Latte-XL/2", "DyLatte-Mini/2")."""
    for models in (MODELS, FLUX_MODELS, LATTE_MODELS):
        if name in models:
            return models[name]
    raise KeyError(f"unknown model {name!r}; known: {', '.join([*MODELS, *FLUX_MODELS, *LATTE_MODELS])}")


def is_known(name) -> bool:
    return name in MODELS or name in FLUX_MODELS or name in LATTE_MODELS


def create_model(name, **kwargs) -> "nn.Module":
    """Builds a model by its name ("DiT-XL/2", "DyDiT-S/4", "FLUX-Lite", ...); kwargs go to the constructor."""
    return entry(name).build(**kwargs)
