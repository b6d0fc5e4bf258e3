"""The text-to-image mini end to end on a tiny budget (suites/dyflux-mini.toml): FLUX-Mini trained on prompted digits,
its control and DyFLUX-Minis fine-tuned from it, every cell measured from canvases sampled from held-out prompts."""
import pytest
import torch

from bench.mini import evaluate_text2img as t2i
from tests.bench.test_mini import measured_cells, run, tiny_suite


def test_tiny_dyflux_mini_measures_every_cell(tmp_path):
    result, record = run(tmp_path, tiny_suite(tmp_path, "dyflux-mini.toml"))
    cells = measured_cells(result)
    assert 0.0 <= cells[("FLUX-Mini", "readback")] <= 1.0
    assert cells[("FLUX-Mini", "flops")] == 1.0
    for lam in (0.7, 0.5):  # dynamic FLOPs of the fast path's recorded masks, routers counted: near all-on here
        assert 0.3 < cells[(f"DyFLUX-Mini λ={lam}", "flops")] < 1.1
    assert cells[("DyFLUX-Mini λ=0.5", "speedup")] > 0  # FLUX's s/image over the fast path's, timed interleaved
    mini = result["provenance"]["measurements"]["mini"]
    assert set(mini["models"]) == {"FLUX-Mini", "FLUX-Mini + FT", "DyFLUX-Mini λ=0.7", "DyFLUX-Mini λ=0.5"}
    assert 0.0 <= mini["reader"]["heldout_readback"] <= 1.0  # what real held-out canvases score (tiny reader here)


def test_masks_of_a_sampling_run_give_flops_width_and_ink(tmp_path):
    """The records' arithmetic on hand-made masks: the top half's tokens and 8 more kept, every head and group on."""
    from dydit import registry
    from dydit.flux import FluxMasks
    model = registry.create_model("DyFLUX-Mini").eval()
    blocks = 4
    tokens = torch.zeros(4, model.image_tokens)
    tokens[:, : model.image_tokens // 2 + 8] = 1  # the top half of the canvas (4 token rows of 16) and 8 more
    heads = torch.ones(4, 4)
    record = [FluxMasks(tokens, heads, heads)] * blocks
    calls = [(0, 0.1, record), (0, 0.9, record)]
    ratio = t2i.flops_ratio(model, calls)
    assert 0.5 < ratio < 1.0
    assert t2i.width_noisy_minus_clean(calls) == 0.0
    canvases = -torch.ones(2, 1, 16, 32)
    canvases[:, :, :8] = 1.0  # ink on the top half: the kept tokens
    assert t2i.ink_over_background(model, calls, canvases) == pytest.approx(8.0)  # 1 per ink token, 8 / 64 per other
