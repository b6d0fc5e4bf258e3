"""`bench device-check --device cpu --quick`: every part runs at tiny size and its report carries measured values."""
import json

from bench.device_check import PRECISIONS, QUICK
from tests.bench.runner_helpers import cli


def test_device_check_quick_on_the_cpu_measures_every_part(tmp_path, capsys):
    assert cli("device-check", "--device", "cpu", "--quick", "--out", tmp_path) == 0
    check = json.loads((tmp_path / "device.json").read_text())
    assert check["quick"] and check["fingerprint"]["device"].startswith("cpu") and check["fingerprint"]["torch"]
    calls = check["parts"]["calls"]["rows"]
    timed = [r for r in calls if "dit_s" in r]
    # fp32 and bf16 (autocast) at both λ and both batches; TF32 is a CUDA mode: skipped with its reason
    assert {(r["precision"], r["lambda"], r["batch"]) for r in timed} == {
        (p, lam, b) for p in ("fp32", "bf16") for lam in (0.5, 0.7) for b in QUICK.batches}
    assert [r["skipped"] for r in calls if r.get("precision") == "tf32"] == ["TF32 is a CUDA matmul mode"]
    assert set(PRECISIONS) == {"fp32", "tf32", "bf16"}
    for r in timed:
        assert r["dit_s"] > 0 and r["fast_s"] > 0 and r["masked_s"] > 0 and r["peak_gib"] > 0
        assert abs(r["flops_ratio"] - r["lambda"]) < 0.05  # calibrated in fp32, timed under the precision
        assert r["fast_vs_masked_rel_diff"] < (1e-5 if r["precision"] == "fp32" else 2e-2)
    loop = check["parts"]["loop"]["rows"]
    assert [r["lambda"] for r in loop] == [0.5, 0.7] and all(0 < r["flops_ratio"] < 1 for r in loop)
    (compiled,) = check["parts"]["compile"]["rows"]  # CUDA only: on the CPU it says so
    assert compiled["skipped"].startswith("measured on CUDA only")
    samplers = check["parts"]["samplers"]["rows"]
    assert len(samplers) >= 5 and all(r["ok"] for r in samplers)
    (mini,) = check["parts"]["mini_training"]["rows"]
    assert mini["steps"] == QUICK.mini_steps and mini["ok"] and mini["steps_per_s"] > 0
    html = (tmp_path / "device.html").read_text()
    assert "Device check: cpu" in html and "Mini training on the device" in html
    assert 'href="device.html"' in (tmp_path / "index.html").read_text()
    assert "every part ran" in capsys.readouterr().out


def test_device_check_cuda_without_a_gpu_is_one_line(tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli("device-check", "--device", "cuda", "--out", tmp_path) == 2
    assert capsys.readouterr().err.strip().startswith("error: --device cuda, but torch sees no CUDA GPU")
