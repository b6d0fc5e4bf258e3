"""Parameter count of a model config, in millions (the frozen sin-cos pos_embed included, as DiT reports)."""
import torch

from bench.definitions import METRIC_PARAMS
from bench.measure.base import Item, Measurement
from dydit.flops import count_params
from dydit.registry import create_model


class Params(Measurement):
    """Millions of parameters of a row's model; cells of the same model are one group (counted once)."""
    METRICS = (METRIC_PARAMS,)
    ONE_VALUE_PER_GROUP = True

    def group_key(self, item: Item):
        return item.model

    def group_label(self, item: Item) -> str:
        return f"{item.model} parameters"

    def measure(self, item: Item, ctx) -> float:
        # built on the meta device: the same modules and shapes, no memory and no weight init
        with torch.device("meta"):
            model = create_model(item.model)
        return count_params(model) / 1e6


MEASUREMENT = Params
