"""The mini reproduction's cells: every number comes from one measured run of the mini (bench.mini.run: models
trained here, cached), looked up by row and metric. A group is one row's model under one sampler."""
from bench.definitions import (METRIC_ACCURACY, METRIC_ACCURACY_VS_CONTROL, METRIC_ACCURACY_VS_DIT,
                               METRIC_FLOPS_RATIO, METRIC_INK_VS_BACKGROUND, METRIC_MINI_FID_OVER_FLOOR,
                               METRIC_MINI_FID_VS_CONTROL, METRIC_MINI_FID_VS_DIT, METRIC_MINI_FID_VS_FULL,
                               METRIC_MINI_FVD, METRIC_MINI_FVD_VS_CONTROL, METRIC_MINI_KID, METRIC_MINI_KID_VS_CONTROL,
                               METRIC_MOTION, METRIC_MOTION_VS_CONTROL, METRIC_READBACK, METRIC_READBACK_VS_CONTROL,
                               METRIC_SPEEDUP, METRIC_TRAINABLE_FRACTION, METRIC_WIDTH_LATE_VS_EARLY)
from bench.measure.base import Item, Measurement


class Mini(Measurement):
    """The mini's claims; its record is the bench.mini.run.MiniRun the report sections read."""
    METRICS = (METRIC_FLOPS_RATIO, METRIC_ACCURACY, METRIC_MINI_FID_VS_DIT, METRIC_ACCURACY_VS_DIT,
               METRIC_WIDTH_LATE_VS_EARLY, METRIC_INK_VS_BACKGROUND, METRIC_SPEEDUP, METRIC_TRAINABLE_FRACTION,
               METRIC_MINI_FID_VS_FULL, METRIC_MINI_FID_OVER_FLOOR, METRIC_MINI_KID, METRIC_MINI_FID_VS_CONTROL,
               METRIC_ACCURACY_VS_CONTROL, METRIC_MINI_KID_VS_CONTROL, METRIC_READBACK, METRIC_READBACK_VS_CONTROL,
               METRIC_MINI_FVD, METRIC_MINI_FVD_VS_CONTROL, METRIC_MOTION, METRIC_MOTION_VS_CONTROL)

    def group_key(self, item: Item):
        return item.row.name, item.sampler

    def group_label(self, item: Item) -> str:
        return f"{item.row.name} ({item.model}) under {item.sampler.name}-{item.sampler.steps}"

    def run(self):
        """The run's MiniRun, started (classifier, reference features) on first use."""
        if self.record is None:
            from bench.mini.run import MiniRun
            self.record = MiniRun.start(self.ctx)
            self.provenance["mini"] = self.record.provenance
        return self.record

    def build_ahead(self, items):
        """Trains the rows' models that are not cached yet, several at a time (bench.mini.parallel)."""
        from bench.mini import build, parallel
        rows = list(dict.fromkeys((item.model, item.options) for item in items))
        parallel.build_ahead(build.run_config(self.ctx), build.cache_dir(self.ctx), self.ctx.retrain, rows,
                             self.ctx.train_jobs)

    def measure(self, item: Item, ctx):  # a float, or Measured (the speed-up, over its timing rounds)
        run = self.run()
        if item.metric == METRIC_SPEEDUP:
            return run.speedup(item)
        metrics = run.measure_row(item)
        if item.metric not in metrics:
            raise ValueError(f"{item.metric!r} is not measured for this row (width and ink: DyDiT rows without "
                             f"DeepCache, on a diffusion sampler; trainable fraction: fine-tuned rows; vs full: "
                             f"adapter rows; vs control: dynamic rows; read-back: text-to-image rows; mini-FVD and "
                             f"motion: video rows)")
        return metrics[item.metric]


MEASUREMENT = Mini
