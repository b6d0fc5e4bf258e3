#!/usr/bin/env python3
"""The mini's training throughput: steps/s of a mini model on its data (DiT-Mini/2 on the digits at batch 64,
Min-SNR-5, as the mini's recipe), with 1 or 2 threads, alone or as two processes side by side. Run it on a machine
doing nothing else (pause other jobs); the time includes setup, as a cold run's does.

    python tools/train_throughput.py --threads 2 --steps 150
    python tools/train_throughput.py --threads 1 --steps 150 & python tools/train_throughput.py --threads 1 --steps 150
    python tools/train_throughput.py --model Latte-Mini/2 --batch 16 --steps 30   # the video mini, on its clips
"""
import argparse
import tempfile
import time

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--model", default="DiT-Mini/2", help="a mini model (its recipe's data)")
    p.add_argument("--batch", type=int, default=None, help="default: the mini recipe's")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from bench import data
    from bench.mini.config import MiniConfig
    from dydit.train import train
    from dydit.train_config import TrainConfig
    recipe = MiniConfig(model=args.model)
    batch = args.batch or recipe.batch_size
    config = TrainConfig(model=recipe.model, max_steps=args.steps, global_batch_size=batch,
                         lr=recipe.dit_lr, data=recipe.data, **recipe.objective_recipe(), log_every=10**6,
                         ckpt_every=10**6, device="cpu")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        train(config, data.load(recipe.data, "train", recipe.data_seed), run_dir, progress=False)
    print(f"{args.model}, batch {batch}, {args.threads} thread(s): {args.steps / (time.perf_counter() - start):.2f} "
          f"step/s (setup included)")


if __name__ == "__main__":
    main()
