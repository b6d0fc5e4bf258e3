"""Shared test setup: deterministic and single-threaded.

Tests run tiny models on a 2-core machine: one thread avoids OpenMP spin contention (5-10x slower
otherwise) and makes CPU results independent of the thread count, which the bit-identical sampling
tests need (their torchrun subprocesses get OMP_NUM_THREADS=1 too). Speed is measured in benchmarks.
"""
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
