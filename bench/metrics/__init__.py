"""Image-quality metrics: torch-fidelity (FID, IS, KID, precision/recall), clean-fid (FID), sFID (ours)."""
