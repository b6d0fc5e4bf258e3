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
