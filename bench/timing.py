"""Wall-clock timing done right: warm-up, CUDA synchronisation (events on GPU), median of repeats."""
import statistics
import time

import torch


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn, device="cpu") -> float:
    """Seconds of one call of fn(); on CUDA measured with events between synchronisations."""
    if torch.device(device).type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        _sync(device)
        start.record()
        fn()
        end.record()
        _sync(device)
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_seconds(fn, repeats=5, warmup=1, device="cpu"):
    """(median, all timings) of fn() over `repeats` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = [time_once(fn, device) for _ in range(repeats)]
    return statistics.median(times), times


def interleaved_medians(fns: dict, repeats=5, warmup=1, device="cpu"):
    """Times several functions round-robin (so drift and contention hit all alike): name -> (median, all)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn, device))
    return {name: (statistics.median(ts), ts) for name, ts in times.items()}
