"""DyDiT reference implementation: DiT/DyDiT models, the compute-skipping path, FLOPs, checkpoints."""
from dydit.models import DiT, DyDiT
from dydit.registry import MODELS, create_model

__all__ = ["MODELS", "DiT", "DyDiT", "create_model"]
