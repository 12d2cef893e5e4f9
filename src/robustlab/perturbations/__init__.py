"""Built-in perturbations, registered in :data:`robustlab.core.registry.perturbations`."""

from robustlab.perturbations import image  # noqa: F401
