"""One registry type for every kind of component.

Components register by name next to their code::

    from robustlab.core.registry import attacks

    @attacks.register("pgd")
    class PGD: ...

Built-ins are discovered lazily: on a registry's first lookup every module of its package (e.g. all
of ``robustlab.attacks``) is imported, so adding a component is adding one file. Third-party
packages add components through the entry-point group ``robustlab.<kind>`` (for example
``robustlab.attacks``), each entry point naming the object to register. Modules with optional
dependencies import them inside functions, so discovery never fails on a missing extra.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from robustlab.core.errors import ConfigError, UnknownComponentError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> component (a class or factory) for one kind of component."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._builtin_modules = builtin_modules
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a name may be registered once."""

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            with contextlib.suppress(AttributeError, TypeError):
                obj.registered_name = name  # type: ignore[attr-defined]
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._builtin_modules:
            _import_tree(mod)
        for ep in entry_points(group=f"robustlab.{self.kind}"):
            if ep.name not in self._items:
                self._items[ep.name] = ep.load()

    def get(self, name: str) -> T:
        """Return the component called ``name``; unknown names raise with a suggestion."""
        self._load()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}{hint} (known: {known})"
            ) from None

    def create(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """Instantiate ``name`` with ``params`` after checking them against its signature."""
        factory = self.get(name)
        params = dict(params or {})
        check_params(factory, params, f"{self.kind} {name!r}")
        return factory(**params)  # type: ignore[operator]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        yield from sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __len__(self) -> int:
        self._load()
        return len(self._items)


def _import_tree(name: str) -> None:
    """Import a module and, if it is a package, all of its submodules (recursively)."""
    module = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{name}."):
        importlib.import_module(info.name)


def check_params(factory: Any, params: dict[str, Any], what: str) -> None:
    """Raise :class:`ConfigError` if ``params`` do not fit ``factory``'s keyword signature."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    accepted = {
        n: p
        for n, p in sig.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    for key in params:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{what} has no parameter {key!r}{hint} (parameters: {', '.join(accepted)})"
            )
    for n, p in accepted.items():
        if p.default is p.empty and n not in params:
            raise ConfigError(f"{what} needs parameter {n!r}")
        if n in params:
            _check_type(params[n], p.annotation, f"{what} parameter {n!r}")


_SIMPLE = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _check_type(value: Any, annotation: Any, what: str) -> None:
    """Best-effort check of YAML scalars against simple annotations (int, float, str, bool,
    ``Literal[...]`` choices)."""
    if typing.get_origin(annotation) is typing.Literal:
        annotation = repr(list(typing.get_args(annotation)))  # checked as the string form below
    ann = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    ann = ann.replace(" ", "")
    if ann.startswith(("Literal[", "[")) and ann.endswith("]"):
        try:
            choices = ast.literal_eval("(" + ann[ann.index("[") + 1 : -1] + ",)")
        except (ValueError, SyntaxError):
            return  # not literal values: accept
        if not any(c == value and type(c) is type(value) for c in choices):
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            options = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{what} must be one of {options}, got {value!r}{hint}")
        return
    options = ann.split("|")
    if "None" in options and value is None:
        return
    kinds: tuple[type, ...] = ()
    for opt in options:
        if opt not in _SIMPLE:
            return  # not a simple annotation: accept
        kinds += _SIMPLE[opt]
    if not kinds:
        return
    bad_bool = isinstance(value, bool) and bool not in kinds
    if bad_bool or not isinstance(value, kinds):
        raise ConfigError(f"{what} must be {ann}, got {type(value).__name__} {value!r}")


def describe(obj: Any) -> str:
    """First line of an object's docstring (for ``robustlab list``)."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


models: Registry[Any] = Registry("models", ("robustlab.models",))
datasets: Registry[Any] = Registry("datasets", ("robustlab.data",))
perturbations: Registry[Any] = Registry("perturbations", ("robustlab.perturbations",))
attacks: Registry[Any] = Registry("attacks", ("robustlab.attacks",))
certifiers: Registry[Any] = Registry("certifiers", ("robustlab.certify",))
metrics: Registry[Any] = Registry("metrics", ("robustlab.metrics",))
tasks: Registry[Any] = Registry("tasks", ("robustlab.tasks",))
report_sections: Registry[Any] = Registry("report_sections", ("robustlab.report.sections",))

REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r
    for r in (models, datasets, perturbations, attacks, certifiers, metrics, tasks, report_sections)
}
