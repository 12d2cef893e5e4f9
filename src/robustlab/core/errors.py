"""Errors robustlab raises on bad input.

Every error a user can cause derives from :class:`RobustlabError`; the CLI prints its message as one
line and exits with status 2. The message names the culprit (a component, a file, a field).
"""

from __future__ import annotations


class RobustlabError(Exception):
    """Base class of all user-facing robustlab errors."""


class ConfigError(RobustlabError, ValueError):
    """A suite, YAML file or component parameter is malformed or mistyped."""


class UnknownComponentError(ConfigError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelOutputError(RobustlabError):
    """A model returned output of the wrong shape, or output that cannot be used."""


class DomainError(RobustlabError, ValueError):
    """Input lies outside the declared input domain, or has the wrong shape/channel order."""


class CapabilityError(RobustlabError):
    """A component needs a model capability (e.g. gradients) that the adapter does not declare."""


class UnsafeFileError(RobustlabError):
    """A model file would need unpickling, which is refused unless explicitly allowed."""


class StoreError(RobustlabError):
    """The results store cannot be used (unknown run, newer schema, unreadable file)."""
