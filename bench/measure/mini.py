"""The mini reproduction's cells: every number comes from one measured run of bench.mini (models trained
here, cached), looked up by row and metric."""
from bench.definitions import (METRIC_ACCURACY, METRIC_ACCURACY_VS_DIT, METRIC_FLOPS_RATIO, METRIC_INK_VS_BACKGROUND,
                               METRIC_MINI_FID_VS_DIT, METRIC_MINI_FID_VS_FULL, METRIC_SPEEDUP,
                               METRIC_TRAINABLE_FRACTION, METRIC_WIDTH_LATE_VS_EARLY)

METRICS = (METRIC_FLOPS_RATIO, METRIC_ACCURACY, METRIC_MINI_FID_VS_DIT, METRIC_ACCURACY_VS_DIT,
           METRIC_WIDTH_LATE_VS_EARLY, METRIC_INK_VS_BACKGROUND, METRIC_SPEEDUP, METRIC_TRAINABLE_FRACTION,
           METRIC_MINI_FID_VS_FULL)


def measure(row, metric, ctx):
    if metric not in METRICS:
        raise ValueError(f"bench.measure.mini measures {', '.join(METRICS)}, not {metric!r}")
    from bench import mini
    if metric == METRIC_SPEEDUP:
        return mini.speedup(row, ctx)
    metrics = mini.measure_row(row, ctx)
    if metric not in metrics:
        raise ValueError(f"{metric!r} is not measured for this row (width and ink: DyDiT rows without DeepCache, "
                         f"on a diffusion sampler; trainable fraction: fine-tuned rows; vs full: adapter rows)")
    return metrics[metric]
