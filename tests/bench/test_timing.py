"""Timing bookkeeping: which calls run, in what order, and what each name's totals add up (no clock asserted)."""
import pytest

from bench.timing import calls as timing


def test_interleaved_calls_rotate_the_order_and_total_each_name(monkeypatch):
    ran = []
    clock = iter(range(10_000))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))  # every call "takes" 1 unit
    calls = {name: [lambda name=name, i=i: ran.append((name, i)) for i in range(3)] for name in "abc"}

    result = timing.interleaved_call_medians(calls, repeats=2, warmup=1)

    warmup, timed = ran[:9], ran[9:]
    assert warmup == [(n, i) for i in range(3) for n in "abc"]
    # call i of every name runs back to back, the order rotated by (repeat + i)
    assert timed[:9] == [("a", 0), ("b", 0), ("c", 0), ("b", 1), ("c", 1), ("a", 1), ("c", 2), ("a", 2), ("b", 2)]
    assert timed[9:12] == [("b", 0), ("c", 0), ("a", 0)]
    assert len(timed) == 18
    for name in "abc":
        median, totals = result[name]
        assert totals == [3, 3] and median == 3  # 3 calls of 1 unit per repeat


def test_interleaved_calls_need_the_same_number_of_calls_per_name():
    with pytest.raises(ValueError, match="same number of calls"):
        timing.interleaved_call_medians({"a": [lambda: None], "b": [lambda: None] * 2})


#################################################################################
#                      DyFLUX's s/image ratio (bench.timing.flux)               #
#################################################################################

def test_dyflux_timing_calibrates_its_routers_to_the_fraction_and_times_both_paths():
    from bench.timing.flux import FluxTimingSetup, time_ratio
    from dydit import registry
    small = FluxTimingSetup(double=1, single=2, resolution=128, text_tokens=8, times=(0.9, 0.1), repeats=2,
                            overrides=(("num_attention_heads", 2), ("attention_head_dim", 16), ("joint_attention_dim", 32),
                                       ("pooled_projection_dim", 16), ("axes_dims_rope", (4, 6, 6))))
    out = time_ratio(registry.entry("DyFLUX-Lite"), small, flops_fraction=0.8, seed=0)
    assert abs(out["flops_ratio"] - 0.8) < 0.05  # calibrated on one forward's logits, reached on every timed call
    assert len(out["ratio_rounds"]) == 2 and out["ratio"] > 0 and out["realized"] == out["flops_ratio"] / out["ratio"]
    assert "num_attention_heads=2" in out["setup"]
    with pytest.raises(ValueError, match="out of reach"):  # text and attention always run: 0.05 cannot be reached
        time_ratio(registry.entry("DyFLUX-Lite"), small, flops_fraction=0.05, seed=0)


def test_dylatte_timing_calibrates_its_routers_to_the_fraction_and_times_both_paths():
    from bench.timing.latte import LatteTimingSetup, time_ratio
    from dydit import registry
    small = LatteTimingSetup(depth=2, frames=4, latent=8, batch=2, timesteps=(900.0, 100.0), repeats=2,
                             overrides=(("hidden_size", 64), ("num_heads", 4)))
    out = time_ratio(registry.entry("DyLatte-XL/2"), small, flops_fraction=0.6, seed=0)
    assert abs(out["flops_ratio"] - 0.6) < 0.05  # bisected on the timed calls' own MACs
    assert len(out["ratio_rounds"]) == 2 and out["ratio"] > 0 and out["realized"] == out["flops_ratio"] / out["ratio"]
    assert "hidden_size=64" in out["setup"]
