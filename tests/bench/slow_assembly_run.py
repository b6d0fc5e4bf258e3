"""Run by test_sample under torchrun (2 gloo ranks): rank 0's assembly outlasts the collective timeout.

A 50k-image run has rank 0 write and hash ~10 GB after sampling; no other rank may be waiting in a
collective meanwhile. Here assembly sleeps ASSEMBLY_SECONDS under a TIMEOUT_SECONDS process group.
"""
import sys
import time

from bench import sample

TIMEOUT_SECONDS, ASSEMBLY_SECONDS = 10, 20


def slow_assemble(out, spec, _assemble=sample.assemble):
    time.sleep(ASSEMBLY_SECONDS)
    return _assemble(out, spec)


if __name__ == "__main__":
    sample.assemble = slow_assemble
    spec = sample.SampleSpec(model="DiT-S/8", num=4, sampler="ddpm", steps=2, seed=0, batch_size=2,
                             random_weights=True, latent_size=8, num_classes=10)
    path = sample.run(spec, sys.argv[1], device="cpu", progress=False, timeout_minutes=TIMEOUT_SECONDS / 60)
    print(f"rank done: {path}")
