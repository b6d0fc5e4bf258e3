"""FLUX and DyFLUX (suites/dyflux.toml): TFLOPs of one forward counted from the config (dydit.flux_flops).

The convention is the one that reproduces the DyFLUX README's 30.0 T for FLUX-Lite: MACs of one forward of one
image at 1024 x 1024 (4,096 packed latent tokens) with FLUX's default 512 text tokens, no CFG (FLUX-dev is
guidance-distilled), the last single-stream block's unread text rows left out (dydit.flux_flops). No 8-12 B
weights are built: the count needs the config alone, and tests/dydit/test_flux.py checks it against fvcore on a
small config. A DyFLUX's FLOPs depend on what its trained routers keep: they need the release's checkpoint.
"""
from bench.definitions import METRIC_TFLOPS
from bench.measure.base import Item, Measurement, Skip
from dydit import registry

RESOLUTION = 1024  # pixels: the README's (and the release's) 1024 x 1024
IMAGE_TOKENS = (RESOLUTION // 16) ** 2  # the SD3-style VAE (/8) then FLUX's 2 x 2 packing
TEXT_TOKENS = 512  # FLUX's default max_sequence_length: what reproduces 30.0 T (the release samples with 256)


class FluxFlops(Measurement):
    """TFLOPs (MACs x 1e-12) of one forward of a row's FLUX at the convention above; a model is counted once."""
    METRICS = (METRIC_TFLOPS,)
    ONE_VALUE_PER_GROUP = True

    def group_key(self, item: Item):
        return item.model

    def group_label(self, item: Item) -> str:
        return f"{item.model} TFLOPs ({RESOLUTION}², {TEXT_TOKENS} text tokens)"

    def measure(self, item: Item, ctx) -> float:
        from dydit.flux_flops import FluxShape, flux_macs
        entry = registry.entry(item.model)
        if not isinstance(entry, registry.FluxEntry):
            raise ValueError(f"row {item.row.name!r}: TFLOPs are counted for FLUX models, not {item.model!r}")
        if entry.is_dynamic:
            raise Skip(f"{item.model}'s FLOPs depend on what its trained routers keep: needs the DyFLUX release's "
                       f"checkpoint (alibaba-damo-academy/DyDiT, DyFLUX/) and sampling with it on a GPU")
        return flux_macs(FluxShape.of(entry.config), IMAGE_TOKENS, TEXT_TOKENS) / 1e12


MEASUREMENT = FluxFlops
