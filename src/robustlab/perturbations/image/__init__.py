"""Image corruptions on [B, C, H, W] batches in [0, 1]."""
