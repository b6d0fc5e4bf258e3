"""Params/FLOPs: fvcore with attention counted, the analytic cross-check, dynamic FLOPs of a plan."""
import json
import subprocess
import sys

import pytest
import torch

from dydit.fast import FastDyDiT, widths_from_masks
from dydit.flops import (analytic_macs, block_flops_ratio, dynamic_macs, example_inputs, fvcore_macs,
                         run_average_gmacs)
from dydit.models import randomize_
from dydit.registry import create_model
from tests.dydit.test_fast import calibrated_routers, random_masks

# PAPER.md section 1 (fvcore, LayerNorm counted): GMACs of one forward, batch 1
PAPER_GFLOPS = {"DiT-S/2": 6.07, "DiT-B/2": 23.02, "DiT-L/2": 80.75, "DiT-XL/2": 118.69}


@pytest.mark.parametrize("name", sorted(PAPER_GFLOPS))
def test_analytic_gflops_of_the_official_sizes(name):
    with torch.device("meta"):
        model = create_model(name)
    assert round(analytic_macs(model) / 1e9, 2) == PAPER_GFLOPS[name]


@pytest.mark.parametrize("name", ["DiT-S/8", "DiT-B/4", "DyDiT-S/4", "SiT-S/2"])
def test_fvcore_equals_the_analytic_count(name):
    model = create_model(name, input_size=16).eval()
    assert fvcore_macs(model) == analytic_macs(model)


def test_fvcore_counts_fused_attention_through_the_handle():
    from fvcore.nn import FlopCountAnalysis
    model = create_model("DiT-S/2", input_size=16).eval()
    plain = FlopCountAnalysis(model, example_inputs(model))
    plain.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    T, D, depth = model.x_embedder.num_patches, model.hidden_size, len(model.blocks)
    assert fvcore_macs(model) - plain.total() == depth * 2 * T * T * D  # Q K^T and A V of every block


def test_dit_s2_full_size_fvcore():
    model = create_model("DiT-S/2").eval()
    assert round(fvcore_macs(model) / 1e9, 2) == 6.07


def test_fvcore_count_of_the_fast_path_matches_the_analytic_dynamic_flops():
    model = randomize_(create_model("DyDiT-S/2", input_size=16), seed=2, std=0.1).eval()
    masks = random_masks(model, batch=1, seed=7)
    widths, tokens = widths_from_masks(masks), [m.tokens for m in masks]
    fast = FastDyDiT(model)
    counted = fvcore_macs(model, forward=lambda x, t, y: fast(x, t, y, widths=widths, token_masks=tokens))
    analytic = float(dynamic_macs(model, masks, routers=False)[0])  # masks imposed: no router ran
    assert abs(counted - analytic) / analytic < 0.01
    assert analytic < 0.9 * analytic_macs(model), "the plan should skip a good part of the work"


def test_fvcore_count_of_the_router_driven_fast_path_matches_the_analytic_count():
    model = calibrated_routers(randomize_(create_model("DyDiT-S/4", input_size=16), seed=3, std=0.1).eval(), seed=3)
    fast = FastDyDiT(model)
    x, t, y = example_inputs(model, t=400)
    record = []
    fast(x, t, y, record=record)
    assert 0 < float(torch.stack([r.tokens.mean() for r in record]).mean()) < 1
    counted = fvcore_macs(model, inputs=(x, t, y), forward=fast)
    analytic = float(dynamic_macs(model, record)[0])
    assert abs(counted - analytic) / analytic < 0.01


def test_dynamic_flops_per_sample_and_over_a_run():
    model = create_model("DyDiT-S/2", input_size=16).eval()
    T = model.x_embedder.num_patches

    def masks_with(tokens_sample1):
        ms = random_masks(model, batch=2, seed=3)
        for m in ms:
            m.tokens[0] = 1
            m.tokens[1] = 0
            m.tokens[1, :tokens_sample1] = 1
        return ms
    full = masks_with(T)
    per_sample = dynamic_macs(model, full)
    assert per_sample[0] == per_sample[1]
    half = dynamic_macs(model, masks_with(T // 2))
    assert half[0] == per_sample[0] and half[1] < per_sample[1]
    assert run_average_gmacs([per_sample, half]) == pytest.approx(float(torch.cat([per_sample, half]).mean()) / 1e9)
    ratio = block_flops_ratio(model, full)
    assert torch.all((ratio > 0) & (ratio < 1))


def test_bench_info_cli_prints_params_and_gflops():
    out = subprocess.run([sys.executable, "-m", "bench", "info", "DyDiT-S/2", "--json"],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert info["params"] == 33_120_740
    assert info["complete_gflops"] == pytest.approx(6.0655, abs=1e-3)
    assert info["gflops"] > info["complete_gflops"]  # the routers cost a little


def test_bench_info_rejects_an_unknown_model():
    proc = subprocess.run([sys.executable, "-m", "bench", "info", "DiT-Q/2"], capture_output=True, text=True)
    assert proc.returncode == 2 and "'DiT-Q/2' is not a model of the registry: did you mean DiT-S/2?" in proc.stderr
