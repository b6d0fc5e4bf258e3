"""Wall-clock timing done right: warm-up, CUDA synchronisation (events on GPU), median of repeats."""
import math
import statistics
import time
from typing import List, Tuple

import torch

# a timed value's interval: the order statistics of its rounds that hold the median with at least this probability
MEDIAN_COVERAGE = 0.90


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


def median_interval(values: List[float]) -> Tuple[float, float, int, float]:
    """(low, high, dropped, coverage): a distribution-free confidence interval of the median of rounds' values, the
    order statistics x(k) and x(n+1-k) with the largest k whose coverage 1 - 2 P(Binomial(n, 1/2) < k) is at least
    MEDIAN_COVERAGE; `dropped` = k - 1 rounds left out at each end. 5 rounds: their min and max (coverage 0.94);
    9 rounds: the lowest and highest left out (0.96). One slow round (a neighbour's burst) then decides nothing."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    if n == 0:
        raise ValueError("an interval of the median needs at least one round")
    below = lambda k: sum(math.comb(n, i) for i in range(k)) / 2 ** n  # noqa: E731  P(Binomial(n, 1/2) < k)
    k = 1
    while 2 * (k + 1) <= n + 1 and 1 - 2 * below(k + 1) >= MEDIAN_COVERAGE:
        k += 1
    return xs[k - 1], xs[n - k], k - 1, 1 - 2 * below(k)
