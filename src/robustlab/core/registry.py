"""One registry type for every kind of component.

Components register by name next to their code::

    from robustlab.core.registry import attacks

    @attacks.register("pgd")
    class PGD: ...

Built-ins are discovered lazily: on a registry's first full lookup (``names()``, ``items()``, an
unknown name) every module of its package (e.g. all of ``robustlab.attacks``) is imported, so
adding a component is adding one file. ``get``/``create``/``levels`` of a built-in name import only
the module that registers it, found in the catalog (:mod:`robustlab.core.catalog`, which records
each name's registering module) when its key matches the source tree; a stale or missing catalog,
an unknown name or a plugin falls back to full discovery, so results and errors are the same.
Third-party packages add components through the entry-point group ``robustlab.<kind>`` (for example
``robustlab.attacks``), each entry point naming the object to register. Modules with optional
dependencies import them inside functions, so discovery never fails on a missing extra.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import inspect
import math
import sys
import threading
import types
import typing
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from robustlab.core.errors import ConfigError, UnknownComponentError
from robustlab.core.levels import Levels

if TYPE_CHECKING:  # pydantic is imported where parameters are checked, not to list components
    from pydantic import ConfigDict, TypeAdapter, ValidationError

T = TypeVar("T")
_DISCOVERY = threading.RLock()  # held while a registry imports its built-in modules


class Registry(Generic[T]):
    """Name -> component (a class or factory) for one kind of component."""

    def __init__(
        self, kind: str, builtin_modules: tuple[str, ...] = (), levels: Levels | None = None
    ) -> None:
        self.kind = kind
        self._builtin_modules = builtin_modules
        self._items: dict[str, T] = {}
        self._modules: dict[str, str] = {}  # name -> the module whose import registers it
        self._loaded = False  # discovery started
        self._ready = False  # discovery finished
        self.plugin_names: set[str] = set()  # names registered from entry points (not built in)
        self.default_levels = levels  # the level domain of components that declare none

    def register(self, name: str, *, levels: Levels | None = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a name may be registered once.

        ``levels`` declares the domain of the component's probe levels (severities, eps, radii);
        a class may instead define ``level_domain`` (a :class:`Levels`, or a method of its
        constructor's parameters returning one, for domains that depend on them)."""

        module = _importing_module(sys._getframe(1))

        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            with contextlib.suppress(AttributeError, TypeError):
                obj.registered_name = name  # type: ignore[attr-defined]
            if levels is not None:
                obj.level_domain = levels  # type: ignore[attr-defined]
            self._modules.setdefault(name, module)
            self._items[name] = obj  # last: another thread never sees a half-registered object
            return obj

        return deco

    def levels(self, name: str, params: dict[str, Any] | None = None) -> Levels | None:
        """The domain of the levels of component ``name`` built with ``params``."""
        obj = self.get(name)
        dom = getattr(obj, "level_domain", None)
        if dom is None:
            return self.default_levels
        if isinstance(dom, Levels):
            return dom
        return dom(**check_params(obj, dict(params or {}), f"{self.kind[:-1]} {name!r}"))

    def _load(self) -> None:
        """Discover the built-ins once. Another thread's first lookup waits until discovery is
        complete (it used to see a half-filled registry: "unknown models 'trained'"); a lookup
        from the discovering thread itself (a module that looks up at import time) returns."""
        if self._ready:
            return
        with _DISCOVERY:  # one lock for all registries: discovery of one imports others
            if self._loaded:
                return
            self._loaded = True
            for mod in self._builtin_modules:
                _import_tree(mod)
            for ep in plugin_entry_points(self.kind):
                if ep.name not in self._items:
                    self._items[ep.name] = ep.load()
                    self.plugin_names.add(ep.name)
            self._ready = True

    def _find(self, name: str) -> None:
        """Make ``name`` registered if it is a built-in, importing as little as possible: the
        module the current catalog names for it. Where that does not register it (a stale or
        missing catalog, an unknown name, a plugin) the registry is fully discovered, as before
        (and a stale or missing catalog is rebuilt, so the next process is targeted)."""
        if self._ready:
            return
        with _DISCOVERY:  # the lock discovery holds: lookups wait for imports in other threads
            if self._loaded:  # discovery finished, or this thread is discovering (re-entrant)
                return
            if name in self._items:  # registered already (its module's import may be ongoing)
                module = self._modules.get(name)
                if module in sys.modules:
                    importlib.import_module(module)  # waits for another thread's import of it
                return
            from robustlab.core import catalog

            found = catalog.import_builtin(self, name)
            if found:
                return
            if found is None:  # no current catalog: discover everything once and cache it
                catalog.rebuild(self)
        self._load()

    def registered_module(self, name: str) -> str | None:
        """The module whose import registered ``name`` in this process (None for plugins'
        entry points and names not registered)."""
        return None if name in self.plugin_names else self._modules.get(name)

    def registered(self) -> list[tuple[str, T]]:
        """What is registered in this process so far, sorted by name, without discovering."""
        return sorted(self._items.items())

    @property
    def builtin_modules(self) -> tuple[str, ...]:
        """The packages whose modules discovery imports."""
        return self._builtin_modules

    @property
    def discovered(self) -> bool:
        """Whether discovery has finished in this process (lookups are then free)."""
        return self._ready

    def get(self, name: str) -> T:
        """Return the component called ``name``; unknown names raise with a suggestion."""
        self._find(name)
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
        params = check_params(factory, params, f"{self.kind[:-1]} {name!r}")
        return factory(**params)  # type: ignore[operator]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        yield from sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        if self._ready or name in self._items:
            return name in self._items
        self._load()
        return name in self._items

    def __len__(self) -> int:
        self._load()
        return len(self._items)


def plugin_entry_points(kind: str) -> list[Any]:
    """The entry points of group ``robustlab.<kind>`` (third-party components, not loaded)."""
    from importlib.metadata import entry_points  # costs ~50 ms: only where plugins are needed

    return list(entry_points(group=f"robustlab.{kind}"))


def _importing_module(frame: types.FrameType | None) -> str:
    """The module whose top-level code is running at ``frame`` or below: the one whose import
    makes the registration (a helper in another module may call ``register`` for it)."""
    caller = frame.f_globals.get("__name__", "") if frame is not None else ""
    while frame is not None:
        if frame.f_code.co_name == "<module>":
            return str(frame.f_globals.get("__name__", caller))
        frame = frame.f_back
    return str(caller)


def _import_tree(name: str) -> None:
    """Import a module and, if it is a package, all of its submodules (recursively)."""
    import pkgutil

    module = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{name}."):
        importlib.import_module(info.name)


def check_params(factory: Any, params: dict[str, Any], what: str) -> dict[str, Any]:
    """Check ``params`` against ``factory``'s keyword signature and return them, ready to pass.

    Each parameter is validated against its annotation with pydantic in strict mode (``int`` takes
    no ``3.0`` or ``"3"``; ``Annotated[float, Field(gt=0)]`` ranges are enforced), and no float
    anywhere in a value (nested lists and dicts included) may be NaN or infinite unless the
    annotation opts in (:data:`robustlab.core.types.AllowNonFinite`). A string YAML 1.1 would
    have read as a boolean (``yes``/``no``/``on``/``off``) is converted for ``bool`` parameters;
    the suite loader reads only ``true``/``false`` as booleans, so ``cache: off`` stays a string.
    Raises :class:`ConfigError` naming the parameter.
    """
    try:
        sig = _signature(factory)
    except (TypeError, ValueError):
        return params
    accepted = {
        n: p
        for n, p in sig.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return params
    for key in params:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{what} has no parameter {key!r}{hint} (parameters: {', '.join(accepted)})"
            )
    out = dict(params)
    for n, p in accepted.items():
        if p.default is p.empty and n not in params:
            raise ConfigError(f"{what} needs parameter {n!r}")
        if n in params:
            out[n] = check_value(params[n], p.annotation, f"{what} parameter {n!r}")
    return out


_YAML11_BOOLS = {
    "yes": True, "y": True, "on": True, "true": True,
    "no": False, "n": False, "off": False, "false": False,
}  # fmt: skip
_CONFIG: ConfigDict = {"strict": True, "allow_inf_nan": False, "arbitrary_types_allowed": True}


def check_value(value: Any, annotation: Any, what: str) -> Any:
    """``value`` checked against ``annotation`` (see :func:`check_params`); returns the value to
    use (unchanged, except YAML 1.1 boolean words given to a ``bool``)."""
    allow_non_finite = _allows_non_finite(annotation)
    if not allow_non_finite:
        bad = _non_finite(value)
        if bad is not None:
            raise ConfigError(f"{what}{bad} must be a finite number, got {_short(value)}")
    adapter = _adapter(annotation)
    if adapter is None:
        return value
    from pydantic import ValidationError

    try:
        adapter.validate_python(value)
        return value
    except ValidationError as e:
        if isinstance(value, str) and value.lower() in _YAML11_BOOLS:
            with contextlib.suppress(ValidationError):
                adapter.validate_python(_YAML11_BOOLS[value.lower()])
                return _YAML11_BOOLS[value.lower()]
        raise ConfigError(_message(e, value, annotation, what)) from None


def _message(e: ValidationError, value: Any, annotation: Any, what: str) -> str:
    errs = e.errors()
    # a union reports one error per member: the most specific is the one with a constraint
    err = next((x for x in errs if x["type"] not in _TYPE_ERRORS), errs[0])
    loc = "".join(f"[{p!r}]" for p in err["loc"] if not isinstance(p, str) or p not in _MEMBERS)
    ann = _type_name(annotation)
    choices = _literal_choices(annotation)
    if choices and not isinstance(value, dict | list):
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        options = ", ".join(repr(c) for c in choices)
        return f"{what} must be one of {options}, got {value!r}{hint}"
    msg = err["msg"]
    if err["type"] in _TYPE_ERRORS or len(errs) > 1:
        msg = f"must be {ann}"
    else:
        msg = msg[0].lower() + msg[1:] if msg else msg
        msg = msg.removeprefix("input should be ").removeprefix("value error, ")
        msg = f"must be {msg}"
    hint = ""
    if isinstance(value, bool) and "str" in ann:
        hint = " (YAML reads unquoted yes/no/on/off/true/false as booleans: quote the string)"
    got = f"{type(value).__name__} {_short(value)}"
    return f"{what}{loc} {msg}, got {got}{hint}"


_TYPE_ERRORS = {
    "int_type", "float_type", "string_type", "bool_type", "list_type", "dict_type", "none_required",
    "int_from_float", "literal_error", "is_instance_of", "tuple_type", "model_type", "union_tag_invalid",
}  # fmt: skip
_MEMBERS = {
    "int", "float", "str", "bool", "list", "dict", "none", "tuple", "list[str]", "list[int]",
    "dict[str,any]", "function-after", "function-before", "constrained-float", "constrained-int",
}  # fmt: skip


def _literal_choices(annotation: Any) -> tuple[Any, ...]:
    """The choices of a ``Literal`` (possibly Optional or Annotated) annotation, else ()."""
    if _is_annotated(annotation):
        return _literal_choices(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _literal_choices(args[0])
    return ()


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    if text.startswith("Annotated["):
        inner = typing.get_args(annotation)[0]
        return _type_name(inner)
    return text


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _non_finite(value: Any, depth: int = 0) -> str | None:
    """Where a non-finite float sits in ``value`` ("" for the value itself), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else ""
    if depth > 50:
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        inner = _non_finite(v, depth + 1)
        if inner is not None:
            return f"[{k!r}]{inner}"
    return None


def _allows_non_finite(annotation: Any) -> bool:
    for meta in typing.get_args(annotation)[1:] if _is_annotated(annotation) else ():
        if getattr(meta, "allow_inf_nan", None) is True:
            return True
        for m in getattr(meta, "metadata", ()):
            if getattr(m, "allow_inf_nan", None) is True:
                return True
    return any(_allows_non_finite(a) for a in typing.get_args(annotation) if a is not None)


def _is_annotated(annotation: Any) -> bool:
    return typing.get_origin(annotation) is typing.Annotated


@functools.lru_cache(maxsize=2048)
def _adapter_cached(annotation: Any) -> TypeAdapter[Any] | None:
    from pydantic import TypeAdapter

    try:
        return TypeAdapter(annotation, config=_CONFIG)
    except Exception:  # an annotation pydantic cannot check (a protocol, a forward reference)
        return None


def _adapter(annotation: Any) -> TypeAdapter[Any] | None:
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, str):
        return None
    try:
        return _adapter_cached(annotation)
    except TypeError:  # unhashable annotation
        from pydantic import TypeAdapter

        try:
            return TypeAdapter(annotation, config=_CONFIG)
        except Exception:
            return None


def _signature(factory: Any) -> inspect.Signature:
    """``factory``'s signature with string annotations resolved where possible."""
    try:
        return inspect.signature(factory, eval_str=True)
    except (NameError, SyntaxError, AttributeError, TypeError):
        return inspect.signature(factory)


def describe(obj: Any) -> str:
    """First line of an object's docstring (for ``robustlab list``)."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


models: Registry[Any] = Registry("models", ("robustlab.models",))
datasets: Registry[Any] = Registry("datasets", ("robustlab.data",))
perturbations: Registry[Any] = Registry(
    "perturbations", ("robustlab.perturbations",), Levels(what="severity")
)
attacks: Registry[Any] = Registry("attacks", ("robustlab.attacks",), Levels(0, what="eps"))
certifiers: Registry[Any] = Registry("certifiers", ("robustlab.certify",), Levels(0, what="radius"))
metrics: Registry[Any] = Registry("metrics", ("robustlab.metrics",))
tasks: Registry[Any] = Registry("tasks", ("robustlab.tasks",))
report_sections: Registry[Any] = Registry("report_sections", ("robustlab.report.sections",))
trainers: Registry[Any] = Registry("trainers", ("robustlab.training",))
diagnoses: Registry[Any] = Registry("diagnoses", ("robustlab.diagnose",), Levels(what="level"))

REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r
    for r in (
        models, datasets, perturbations, attacks, certifiers, metrics, tasks, report_sections,
        trainers, diagnoses,
    )
}  # fmt: skip
