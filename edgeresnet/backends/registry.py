"""The engine registry: every backend module registers its class here with ``@register``;
the CLI, export, bench, runtime, doctor and the manifest read it and name no engine.

A backend class carries what the rest of the package needs to know about it:

* ``name`` (the ``target`` of report rows and manifests), ``aliases``, ``preference`` (lower
  is tried first where any engine would do);
* ``suffixes``: artifact file suffixes `bench FILE` recognises;
* ``extra``, ``libraries``: the pip extra that installs it and the Python distributions
  `doctor` and the manifest report;
* ``install_hint``: optional, the fix when it is missing (default: install the extra);
* ``thread_safe``: whether one loaded runner may be called from several threads at once;
* ``qdq_profile``, ``qdq_variants``: the QDQ encoding of its INT8 artifact;
* optional ``prepare(ctx)`` (writes files built on the device) and ``bundle`` (their folder).

Aliases resolve once, in :func:`resolve`, so every spelling gets the same checks. Engines
outside this package register the same way from a module named by the ``edgeresnet.backends``
entry point group or by the ``EDGERESNET_BACKENDS`` environment variable.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from dataclasses import replace
from importlib.metadata import entry_points

from ..errors import UsageError
from .base import Backend, EngineOptions

ENTRY_POINTS = "edgeresnet.backends"  # third-party engines: an entry point naming a module that registers
PLUGINS_ENV = "EDGERESNET_BACKENDS"  # or comma-separated module names to import, e.g. mycompany.tflite_backend
_REGISTRY: dict[str, type] = {}
_ALIASES: dict[str, str] = {}
_LOADED = {"done": False}


def register(cls: type) -> type:
    """Class decorator: add a backend; a name or alias already taken is an error."""
    names = [cls.name, *getattr(cls, "aliases", ())]
    for n in names:
        taken = _ALIASES.get(n.lower())
        if taken is not None and _REGISTRY[taken] is not cls:
            raise ValueError(f"backend name {n!r} is already registered by {_REGISTRY[taken].__name__}")
    _REGISTRY[cls.name] = cls
    for n in names:
        _ALIASES[n.lower()] = cls.name
    return cls


def unregister(name: str) -> None:
    """Remove a backend (tests that register a toy engine clean up with this)."""
    cls = _REGISTRY.pop(name, None)
    if cls is not None:
        for n in [cls.name, *getattr(cls, "aliases", ())]:
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
    return sorted(_REGISTRY.values(), key=lambda c: (getattr(c, "preference", 50), c.name))


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


def get_backend(name: str, options: EngineOptions | None = None, *, device: str | None = None) -> Backend:
    """An instance of the backend ``name`` (any alias), configured by ``options``."""
    options = options or EngineOptions()
    if device is not None:
        options = replace(options, device=device)
    return backend_class(name)(options)


def for_suffix(suffix: str) -> str | None:
    """The engine that runs artifact files ending in ``suffix`` (the most preferred one)."""
    return next((c.name for c in backends() if suffix.lower() in getattr(c, "suffixes", ())), None)


def suffixes_help() -> str:
    return ", ".join(f"{s} ({c.name})" for c in backends() for s in getattr(c, "suffixes", ()))


def install_hint(name: str) -> str:
    cls = backend_class(name)
    return getattr(cls, "install_hint", None) or f"pip install 'edgeresnet[{cls.extra}]'"


def library_extras() -> dict[str, str]:
    """Python distribution -> the pip extra that installs it, for every engine."""
    return {lib: c.extra for c in backends() for lib in getattr(c, "libraries", ())}


def bundle_dirs() -> list[str]:
    """Folders the engines' ``prepare`` hooks write (e.g. TensorRT's bundle for the device)."""
    return [c.bundle for c in backends() if getattr(c, "bundle", None)]

