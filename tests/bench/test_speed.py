"""The speed benchmark's bookkeeping on a tiny model (timings themselves are never asserted)."""
import json
import subprocess
import sys

import pytest


def test_speed_json_reports_consistent_ratios_for_a_calibrated_tiny_model():
    out = subprocess.run([sys.executable, "-m", "bench", "speed", "--model", "DyDiT-S/8", "--steps", "3",
                          "--flops-fraction", "0.6", "--json"], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    for key in ("dit_s", "dydit_s", "masked_s", "flops_ratio", "speedup", "realized"):
        assert r[key] > 0, key
    assert r["calibrated_fraction"] == pytest.approx(0.6, abs=0.05)
    assert r["flops_ratio"] == pytest.approx(1 / r["calibrated_fraction"])
    assert r["speedup"] == pytest.approx(r["dit_s"] / r["dydit_s"])
    assert r["realized"] == pytest.approx(r["speedup"] / r["flops_ratio"])
    assert r["max_rel_diff_fast_vs_masked"] < 1e-5
    assert "calibrated" in r["note"] and "not a trained" in r["note"]  # says so in the result


def test_speed_refuses_a_static_model_and_too_few_repeats():
    for args in (["--model", "DiT-S/8"], ["--model", "DyDiT-S/8", "--repeats", "3"]):
        proc = subprocess.run([sys.executable, "-m", "bench", "speed", *args], capture_output=True, text=True)
        assert proc.returncode != 0
    assert "at least 5" in proc.stderr


def test_run_fraction_follows_the_router_offset():
    """Calibration moves the routers between runs: each run uses the widths of the current routers."""
    import torch
    from bench.timing.calibration import run_fraction, schedule, set_offset, standardize_routers
    from dydit.fast import FastDyDiT
    from dydit.models import randomize_
    from dydit.registry import create_model
    model = randomize_(create_model("DyDiT-S/8"), seed=0).eval()
    x, y, ts = torch.randn(1, 4, 32, 32), torch.tensor([3]), schedule(3)
    standardize_routers(model, ts, x, y)
    fast = FastDyDiT(model, cache_bytes=0)
    fractions = []
    for offset in (-1.0, 1.0):
        set_offset(model, offset)
        fractions.append(run_fraction(fast, ts, x, y))
        assert fractions[-1] == pytest.approx(run_fraction(FastDyDiT(model, cache_bytes=0), ts, x, y))
    assert fractions[0] < fractions[1]


def test_speed_times_a_mini_model_per_call_and_over_a_pixel_loop(capsys):
    """The mini models (1 channel, 10 classes, no VAE) go through `bench speed` like any other."""
    from bench.cli import main
    assert main(["speed", "--model", "DyDiT-Mini/2", "--steps", "2", "--batch", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["realized"] > 0
    assert main(["speed", "--loop", "--model", "DyDiT-Mini/2", "--steps", "3", "--calls", "1", "--repeats", "1",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["vae"] == "none: the mini samples pixels" and set(r["paths"]) >= {"DiT"}
