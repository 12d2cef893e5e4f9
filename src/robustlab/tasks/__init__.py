"""Task definitions (classification, generation, ranking), discovered by the tasks registry."""
