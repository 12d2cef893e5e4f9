"""Export runs to other tools (MLflow: :mod:`robustlab.export.mlflow`)."""
