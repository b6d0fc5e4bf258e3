"""Parameter count of a model config, in millions (the frozen sin-cos pos_embed included, as DiT reports)."""
import torch

from dydit.flops import count_params
from dydit.models import create_model

from bench.definitions import METRIC_PARAMS


def measure(row, metric, ctx):
    """Millions of parameters of row["model"]; the count is cached per model name for the run."""
    if metric != METRIC_PARAMS:
        raise ValueError(f"bench.measure.params measures {METRIC_PARAMS!r}, not {metric!r}")
    key = (METRIC_PARAMS, row["model"])
    if key not in ctx.cache:
        # built on the meta device: the same modules and shapes, no memory and no weight init
        with torch.device("meta"):
            model = create_model(row["model"])
        ctx.cache[key] = count_params(model)
    return ctx.cache[key] / 1e6
