"""Built-in perturbations (every module below is discovered by the perturbations registry)."""
