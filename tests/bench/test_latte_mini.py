"""The video mini end to end on a tiny budget (suites/latte-mini.toml): Latte-Mini trained on moving digits, its
control and DyLatte-Minis fine-tuned from it, every cell measured from sampled clips; and the per-frame arithmetic
of a sampling run's records on hand-made masks."""
import pytest
import torch

from bench.mini import evaluate_video as video
from dydit import registry
from dydit.models import BlockMasks
from tests.bench.test_mini import measured_cells, run, tiny_suite


def test_tiny_latte_mini_measures_every_cell(tmp_path):
    result, record = run(tmp_path, tiny_suite(tmp_path, "latte-mini.toml"))
    cells = measured_cells(result)
    assert cells[("Latte-Mini", "flops")] == 1.0
    assert 0.0 <= cells[("Latte-Mini", "accuracy")] <= 1.0 and 0.0 <= cells[("Latte-Mini", "motion")] <= 1.0
    for lam in (0.7, 0.5):  # dynamic FLOPs of the fast path's recorded masks, routers counted
        assert 0.3 < cells[(f"DyLatte-Mini λ={lam}", "flops")] < 1.1
    assert cells[("DyLatte-Mini λ=0.5", "speedup")] > 0  # Latte's s/clip over the fast path's, timed interleaved
    mini = result["provenance"]["measurements"]["mini"]
    assert set(mini["models"]) == {"Latte-Mini", "Latte-Mini + FT", "DyLatte-Mini λ=0.7", "DyLatte-Mini λ=0.5"}
    assert 0.0 <= mini["frame_classifier"]["heldout_accuracy"] <= 1.0
    measured = {name.removesuffix(" · ddim-4"): ev for name, ev in record.measured.items()}
    ev = measured["DyLatte-Mini λ=0.5"]
    assert ev["images"].shape == (20, 8, 16, 16, 1) and ev["patch_flops"].shape == (20, 8, 64)
    assert ev["mini_fvd"] >= 0 and "mini_fvd" in measured["Latte-Mini + FT"]
    (section,) = result["sections"]
    assert any("clips" in f["title"] for f in section["figures"])


def test_a_sampling_runs_masks_give_flops_and_per_frame_ink():
    """One call's records by hand: every head and group on; the spatial blocks keep the left half's patches of every
    frame, the temporal blocks every token. The left half holds the ink: its patches get twice the MLP work."""
    model = registry.create_model("DyLatte-Mini/2").eval()
    F, T, H = model.num_frames, model.x_embedder.num_patches, model.num_heads
    left = (torch.arange(T) % 8 < 4).float()  # patch columns 0-3 of the 8 x 8 grid
    on = torch.ones
    spatial = BlockMasks(on(2 * F, H), on(2 * F, H), left.repeat(2 * F, 1))  # [cond; uncond] x frames rows of T
    temporal = BlockMasks(on(2 * T, H), on(2 * T, H), on(2 * T, F))  # [cond; uncond] x patches rows of F
    record = [spatial, temporal] * (len(model.blocks) // 2)
    calls = [(0, 999.0, record), (0, 0.0, record)]
    assert 0.7 < video.flops_ratio(model, calls) < 1.0  # a quarter of the MLP rows skipped, attention whole
    per_patch = video.frame_patch_mlp_flops(model, calls, 1)  # the conditional clip: (1, F, T)
    assert per_patch.shape == (1, F, T)
    assert torch.allclose(per_patch[0, :, left == 1], 2 * per_patch[0, :, left == 0])
    pixels = -torch.ones(1, F, 1, 16, 16)
    pixels[..., :8] = 1.0  # ink on the left half of every frame
    assert video.ink_over_background(per_patch, pixels, model.patch_size) == pytest.approx(2.0)
