#!/usr/bin/env python3
"""The mini's training throughput: steps/s of DiT-Mini/2 on the digits (batch 64, Min-SNR-5, as the mini's
recipe), with 1 or 2 threads, alone or as two processes side by side. Run it on a machine doing nothing else
(pause other jobs); the time includes setup, as a cold run's does.

    python tools/train_throughput.py --threads 2 --steps 150
    python tools/train_throughput.py --threads 1 --steps 150 & python tools/train_throughput.py --threads 1 --steps 150
"""
import argparse
import tempfile
import time

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=150)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from bench import data
    from bench.mini.config import MiniConfig
    from dydit.train import train
    from dydit.train_config import TrainConfig
    recipe = MiniConfig()
    config = TrainConfig(model=recipe.model, max_steps=args.steps, global_batch_size=recipe.batch_size,
                         lr=recipe.dit_lr, data="digits", **recipe.objective_recipe(), log_every=10**6,
                         ckpt_every=10**6, device="cpu")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        train(config, data.digits("train", recipe.data_seed), run_dir, progress=False)
    print(f"{args.threads} thread(s): {args.steps / (time.perf_counter() - start):.2f} step/s (setup included)")


if __name__ == "__main__":
    main()
