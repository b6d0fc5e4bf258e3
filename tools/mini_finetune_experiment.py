#!/usr/bin/env python3
"""One mini fine-tune outside the suite's cache, to test a recipe change before it goes into
bench/mini/config.py (which retrains every cached model): rerun a cached fine-tune's config with another
step count and λ, then sample 500 digits as the suite does and print FLOPs ratio, mini-FID, mini-KID and accuracy against the
500 validation digits (settings are chosen there, never on the held-out digits that score the claims).

    python tools/mini_finetune_experiment.py reports/work/mini-models/dydit-mini-0.5-<key>/run/config.json \\
        --steps 1200 --lam 0.5 --sampler flow-euler --cfg 1.5 --out /tmp/dysit-1200-0.5

The flops warm-up stays half of the steps, as in the mini's recipe.
"""
import argparse
import json
from pathlib import Path

from bench import data
from bench.metrics import digits
from bench.mini import build, evaluate
from bench.mini.config import MiniConfig
from dydit.checkpoints import load_trained
from dydit.sampling import SamplerSpec
from dydit.train import train
from dydit.train_config import TrainConfig


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="run/config.json of a cached mini fine-tune")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--lam", type=float, required=True)
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--cfg", type=float, default=2.0)
    parser.add_argument("--cache", default="reports/work/mini-models", help="the mini's cache (its classifier)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    base = json.loads(Path(args.config).read_text())
    run = TrainConfig(**{**base, "max_steps": args.steps, "flops_warmup": args.steps // 2,
                         "ckpt_every": args.steps, "flops_ratio": args.lam})
    result = train(run, data.digits("train", 0), Path(args.out), progress=True)
    model = load_trained(result.checkpoint)
    config = MiniConfig()
    config = build.config_for(config, base["model"])  # the model's family and size (DySiT: the SiT pair)
    classifier, _ = build.classifier(config, Path(args.cache))
    extractor = digits.extractor(classifier)
    val, _ = build.real_digits("val", config)  # a recipe is chosen on the validation digits, never the held-out
    sampling = SamplerSpec(name=args.sampler, steps=50, cfg_scale=args.cfg, num_samples=500, batch_size=250,
                           guided_channels=None)
    recorder = evaluate.Recorder(model)
    images, labels, _ = evaluate.sample_digits(model, sampling, recorder)
    print(json.dumps({"checkpoint": str(result.checkpoint), "flops_ratio": evaluate.flops_ratio(model, recorder.calls),
                      **evaluate.quality(images, labels, extractor, digits.features(val, extractor))}))


if __name__ == "__main__":
    main()
