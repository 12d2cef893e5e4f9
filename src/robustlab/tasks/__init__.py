"""Task definitions (classification, generation, ranking); imported lazily by the registry."""

from robustlab.tasks import classification, generation, ranking  # noqa: F401
