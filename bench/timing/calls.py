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


def interleaved_call_medians(calls: dict, repeats=5, warmup=1, device="cpu"):
    """Times several runs of K calls each, interleaved call by call: name -> list of K callables (call i
    of every name does comparable work, e.g. the model call at the i-th timestep). Call i of every name
    runs back to back, in an order rotated each time, so host drift (shared VMs drift 10-20 % within
    seconds) lands on all names alike. Returns name -> (median over repeats of the K-call total, totals)."""
    names = list(calls)
    steps = len(calls[names[0]])
    if any(len(fns) != steps for fns in calls.values()):
        raise ValueError("every name needs the same number of calls")
    for _ in range(warmup):
        for i in range(steps):
            for name in names:
                calls[name][i]()
    _sync(device)
    totals = {name: [] for name in names}
    for r in range(repeats):
        spent = dict.fromkeys(names, 0.0)
        for i in range(steps):
            k = (r + i) % len(names)
            for name in names[k:] + names[:k]:
                spent[name] += time_once(calls[name][i], device)
        for name in names:
            totals[name].append(spent[name])
    return {name: (statistics.median(ts), ts) for name, ts in totals.items()}
