"""DyDiT reference implementation: DiT/DyDiT models, the compute-skipping path, FLOPs, checkpoints.

The re-exports load on first use (PEP 562), so that `import dydit.errors` or `dydit.fileio` does not import
torch: the CLI's `--help`, `ls` and `validate` start without it.
"""
import importlib

_EXPORTS = {"DiT": "dydit.models", "DyDiT": "dydit.models", "MODELS": "dydit.registry",
            "create_model": "dydit.registry"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dydit' has no attribute {name!r}")
