"""The engine registry: every engine module registers its class here with ``@register``;
the CLI, export, bench, runtime, doctor and the manifest read it and name no engine.

What a class must declare is :class:`~.base.Backend`'s contract; :func:`register` checks it and
raises ``TypeError`` naming whatever is missing, so nothing downstream needs a ``getattr`` default.

Aliases resolve once, in :func:`resolve`, so every spelling gets the same checks. Engines
outside this package register the same way from a module named by the ``edgeresnet.backends``
entry point group or by the ``EDGERESNET_BACKENDS`` environment variable.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import pkgutil
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from pathlib import Path

from ..errors import InputError, UsageError
from ..quantize.profile import Profile
from .base import Backend, Capabilities, Input, OptionSpec

ENTRY_POINTS = "edgeresnet.backends"  # third-party engines: an entry point naming a module that registers
PLUGINS_ENV = "EDGERESNET_BACKENDS"  # or comma-separated module names to import, e.g. mycompany.tflite_backend
_REGISTRY: dict[str, type] = {}
_ALIASES: dict[str, str] = {}
_LOADED = {"done": False}


def check_contract(cls: type) -> None:
    """``TypeError`` naming every declaration or method ``cls`` lacks (see base.Backend)."""
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise TypeError(f"{getattr(cls, '__name__', cls)!r} must subclass edgeresnet.backends.base.Backend")
    missing = [a for a in Backend.REQUIRED if a not in dir(cls)]
    missing += sorted(f"{m}()" for m in inspect.getattr_static(cls, "__abstractmethods__", ()))
    if missing:
        raise TypeError(f"engine {cls.__name__} does not declare {', '.join(missing)} (see edgeresnet.backends.base.Backend)")
    wrong = []
    if not isinstance(cls.capabilities, Capabilities):
        wrong.append("capabilities must be a Capabilities")
    if not (isinstance(cls.takes, frozenset) and cls.takes and all(isinstance(t, Input) for t in cls.takes)):
        wrong.append("takes must be a non-empty frozenset of Input")
    if not (isinstance(cls.option_specs, tuple) and all(isinstance(o, OptionSpec) for o in cls.option_specs)):
        wrong.append("option_specs must be a tuple of OptionSpec")
    if isinstance(cls.takes, frozenset) and Input.QDQ_ONNX in cls.takes and not isinstance(cls.qdq_profile, Profile):
        wrong.append("an engine that takes QDQ_ONNX needs a qdq_profile")
    for flag, method in (("self_timed", "bench_block"), ("device_build", "device_job"), ("device_build", "device_plan")):
        if isinstance(cls.capabilities, Capabilities) and getattr(cls.capabilities, flag) \
                and getattr(cls, method) is getattr(Backend, method):
            wrong.append(f"capabilities.{flag} needs {method}()")
    if isinstance(cls.capabilities, Capabilities) and cls.capabilities.device_build \
            and not (cls.bundle and cls.device_files):
        wrong.append("capabilities.device_build needs bundle and device_files")
    if wrong:
        raise TypeError(f"engine {cls.__name__}: {'; '.join(wrong)}")


def _check_shared_options(cls: type) -> None:
    """Two engines may share a flag (one value for both) only with the same type and default."""
    for spec in cls.option_specs:
        for other in _REGISTRY.values():
            theirs = next((o for o in other.option_specs if o.key == spec.key), None)
            if other is not cls and theirs is not None and (theirs.type, theirs.default) != (spec.type, spec.default):
                raise TypeError(f"engine {cls.__name__} declares {spec.flag} unlike {other.__name__} does")


def register(cls: type) -> type:
    """Class decorator: add an engine; a missing declaration is a TypeError, a name or alias
    already taken a ValueError."""
    check_contract(cls)
    names = [cls.name, *cls.aliases]
    for n in names:
        taken = _ALIASES.get(n.lower())
        if taken is not None and _REGISTRY[taken] is not cls:
            raise ValueError(f"backend name {n!r} is already registered by {_REGISTRY[taken].__name__}")
    _check_shared_options(cls)
    _REGISTRY[cls.name] = cls
    for n in names:
        _ALIASES[n.lower()] = cls.name
    return cls


def unregister(name: str) -> None:
    """Remove a backend (tests that register a toy engine clean up with this)."""
    cls = _REGISTRY.pop(name, None)
    if cls is not None:
        for n in [cls.name, *cls.aliases]:
            _ALIASES.pop(n.lower(), None)


def _load() -> None:
    """Import every module of this package (each registers itself), then plug-ins."""
    if _LOADED["done"]:
        return
    _LOADED["done"] = True
    for mod in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
        if mod.name not in ("base", "registry"):
            importlib.import_module(f"{__package__}.{mod.name}")
    plugins = [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINTS)]
    plugins += [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]
    for module in plugins:
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken plug-in must not take the built-in engines down with it
            from ..core.progress import stderr

            stderr.print(f"warning: engine plug-in {module!r} not loaded ({type(exc).__name__}: {exc}); "
                         f"check {PLUGINS_ENV} and the installed packages", style="yellow", markup=False, soft_wrap=True)


def backends() -> list[type]:
    """Every registered backend class, in preference order."""
    _load()
    return sorted(_REGISTRY.values(), key=lambda c: (c.preference, c.name))


def names() -> tuple[str, ...]:
    return tuple(c.name for c in backends())


def names_help() -> str:
    """'ort, openvino, trt' for help texts and hints."""
    return ", ".join(names())


def resolve(raw: str) -> str:
    """A target name or alias, any case -> the registered name; unknown names are refused."""
    _load()
    name = _ALIASES.get(raw.strip().lower())
    if name is None:
        close = difflib.get_close_matches(raw.strip().lower(), [*_ALIASES, "all"], n=1)
        raise UsageError(f"unknown target {raw!r}" + (f"; did you mean {_ALIASES.get(close[0], close[0])}?" if close else ""),
                         hint=f"targets: {names_help()}, or all (comma-separated lists work)")
    return name


def expand_targets(raw: tuple[str, ...]) -> tuple[str, ...]:
    """``all`` -> every engine; aliases resolved; duplicates dropped; unknown names refused."""
    out: list[str] = []
    for item in raw:
        for name in names() if item.strip().lower() == "all" else (resolve(item),):
            if name not in out:
                out.append(name)
    if not out:
        raise UsageError("no --target given", hint=f"targets: {names_help()}, or all")
    return tuple(out)


def backend_class(name: str) -> type:
    return _REGISTRY[resolve(name)]


EngineOptions = Mapping[str, Mapping[str, Any]]  # engine name -> its option values (OptionSpec.key -> value)


def option_specs() -> list[OptionSpec]:
    """Every option any registered engine declares, once per flag, in preference order."""
    seen: dict[str, OptionSpec] = {}
    for cls in backends():
        for spec in cls.option_specs:
            seen.setdefault(spec.key, spec)
    return list(seen.values())


def device_option_specs() -> list[OptionSpec]:
    """The options `edgeresnet build` takes: those the engines built on the device declare for it."""
    return [s for s in option_specs() if s.device_help is not None
            and any(c.capabilities.device_build for c in backends() if s in c.option_specs)]


def option_owners(key: str) -> list[str]:
    """The engines that declare the option ``key``."""
    return [c.name for c in backends() if any(s.key == key for s in c.option_specs)]


def engine_options(flat: Mapping[str, Any], known_only: bool = False) -> dict[str, dict[str, Any]]:
    """Flag values (``{"trt_version": "8.6", "device": "GPU"}``) -> each engine's own mapping,
    defaults filled in and parsed; a key no engine declares is refused (UsageError) unless
    ``known_only`` drops it (a generic flag such as bench's --device)."""
    known = {s.key for s in option_specs()}
    unknown = set(flat) - known
    if unknown and known_only:
        flat = {k: v for k, v in flat.items() if k in known}
    elif unknown:
        raise UsageError(f"no engine takes the option(s) {', '.join(sorted(unknown))}",
                         hint=f"engine options: {', '.join(sorted(known)) or 'none'}")
    return {c.name: {s.key: s.value(flat.get(s.key)) for s in c.option_specs} for c in backends()}


def get_backend(name: str, options: EngineOptions | None = None) -> Backend:
    """An instance of the backend ``name`` (any alias), configured by its entry of ``options``."""
    cls = backend_class(name)
    return cls((options or {}).get(cls.name))


def for_suffix(suffix: str) -> str | None:
    """The engine that runs artifact files ending in ``suffix`` (the most preferred one)."""
    return next((c.name for c in backends() if suffix.lower() in c.suffixes), None)


def suffixes_help() -> str:
    return ", ".join(f"{s} ({c.name})" for c in backends() for s in c.suffixes)


def install_hint(name: str) -> str:
    cls = backend_class(name)
    return cls.install_hint or f"pip install 'edgeresnet[{cls.extra}]'"


def library_extras() -> dict[str, str]:
    """Python distribution -> the pip extra that installs it, for every engine."""
    return {lib: c.extra for c in backends() for lib in c.libraries}


def bundle_dirs() -> list[str]:
    """Folders the engines' ``prepare`` hooks write (e.g. TensorRT's bundle for the device)."""
    return [c.bundle for c in backends() if c.bundle]


def device_built() -> list[str]:
    """Engines `edgeresnet build` builds on the device (``capabilities.device_build``)."""
    return [c.name for c in backends() if c.capabilities.device_build]


def device_engine(folder: Path) -> Backend:
    """The device-built engine whose bundle ``folder`` holds (an export directory, or the bundle
    folder itself); with one such engine registered, that one (its build says what is missing)."""
    built = [c for c in backends() if c.capabilities.device_build]
    for cls in built:
        if folder.name == cls.bundle or (folder / cls.bundle).is_dir():
            return cls()
    if len(built) == 1:
        return built[0]()
    raise InputError(f"{folder} holds no device bundle ({', '.join(str(c.bundle) for c in built) or 'no engine builds on the device'})",
                     hint=f"export with --target {','.join(c.name for c in built)} first")

