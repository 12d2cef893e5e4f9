"""Image corruptions on [B, C, H, W] batches in [0, 1]."""

from robustlab.perturbations.image import blur, noise, photometric  # noqa: F401
