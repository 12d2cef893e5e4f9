"""Model adapters: classifiers, generators and rankers behind a tiny request interface."""

from robustlab.models.base import Classifier, Generator, Ranker
from robustlab.models.callable_adapter import CallableClassifier, CallableGenerator, CallableRanker
from robustlab.models.sklearn_adapter import SklearnClassifier
from robustlab.models.torch_adapter import TorchClassifier

__all__ = [
    "CallableClassifier",
    "CallableGenerator",
    "CallableRanker",
    "Classifier",
    "Generator",
    "Ranker",
    "SklearnClassifier",
    "TorchClassifier",
]
