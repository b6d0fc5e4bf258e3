#!/usr/bin/env python3
"""Why a fine-tuned DyDiT's FLOPs at evaluation differ from its training readout: the FLOPs ratio of one
checkpoint on the same training inputs with the routers' Gumbel noise (training) and without it (eval:
sigmoid > 0.5), for real and null (CFG) labels.

    python tools/router_flops_gap.py reports/work/mini-models/dydit-mini-0.5-<key>/run/checkpoints/0000600.pt
    python tools/router_flops_gap.py <a DySiT checkpoint> --objective flow

Inputs: 256 training digits at uniform t (DDPM's 1000 steps, or flow's [0, 1]), one thread, fixed seeds.
"""
import argparse
import json

import torch

from bench import data
from dydit.checkpoints import load_trained
from dydit.diffusion import GaussianDiffusion
from dydit.flops import block_flops_ratio
from dydit.flow import FlowMatching


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--objective", choices=("diffusion", "flow"), default="diffusion")
    parser.add_argument("--num", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = data.digits("train", 0).tensors
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(x), generator=g)[: args.num]
    x, y = x[idx], y[idx]
    noise = torch.randn(x.shape, generator=g)
    if args.objective == "flow":
        objective, t = FlowMatching(), torch.rand(len(x), generator=g)
    else:
        objective, t = GaussianDiffusion(), torch.randint(0, 1000, (len(x),), generator=g)
    x_t = objective.q_sample(x, t, noise)
    model = load_trained(args.checkpoint)
    null = torch.full_like(y, model.y_embedder.num_classes)
    out = {}
    for mode in ("train", "eval"):  # train: Gumbel-sigmoid masks (and class dropout); eval: logit > 0
        model.train(mode == "train")
        for labels, yy in (("real", y), ("null", null)):
            torch.manual_seed(1)
            record = []
            with torch.no_grad():
                model(x_t, t, yy, record=record)
            out[f"{mode}, {labels} labels"] = round(float(block_flops_ratio(model, record).mean()), 4)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
