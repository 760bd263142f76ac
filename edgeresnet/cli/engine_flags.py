"""The engines' own flags (``--trt-version``, ``--device``, ...) on a command, built from every
registered engine's OptionSpecs: a new engine's options appear here with no CLI file changed.
``engine_flags`` puts every engine's options on `export`; ``device_flags`` puts those the engines
built on the device declare for it (``OptionSpec.device_help``) on `build`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated

import typer

PANEL = "Engine options"


def _parameter(spec, owners: list[str], device: bool = False) -> inspect.Parameter:
    show_default = spec.default is not None and spec.type is not bool and not device
    option = typer.Option(spec.flag if spec.type is not bool else f"{spec.flag}/--no-{spec.flag[2:]}",
                          help=spec.device_help if device else spec.help,
                          rich_help_panel=f"{PANEL} ({', '.join(owners)})", show_default=show_default)
    kind = spec.type if not device or spec.type is bool else spec.type | None  # build: None = the bundle's
    return inspect.Parameter(spec.key, inspect.Parameter.KEYWORD_ONLY, default=None if device else spec.default,
                             annotation=Annotated[kind, option])


def engine_flags(fn: Callable) -> Callable:
    """Add one typer option per engine option to ``fn``'s signature; the values reach ``fn`` as
    ``engine_options``: a mapping OptionSpec.key -> value, for ExportConfig.engine_options."""
    from ..backends.registry import option_specs

    return _with_flags(fn, option_specs(), device=False)


def device_flags(fn: Callable) -> Callable:
    """`edgeresnet build`'s engine flags: each defaults to None (the bundle's value); ``fn`` gets
    ``engine_options``: OptionSpec.key -> the flag's value, None where not given."""
    from ..backends.registry import device_option_specs

    return _with_flags(fn, device_option_specs(), device=True)


def _with_flags(fn: Callable, specs: list, device: bool) -> Callable:
    from ..backends.registry import option_owners

    signature = inspect.signature(fn, eval_str=True)
    taken = set(signature.parameters)
    clash = [s.flag for s in specs if s.key in taken]
    if clash:
        raise TypeError(f"engine option(s) {', '.join(clash)} clash with {fn.__name__}'s own parameters")
    own = [p for p in signature.parameters.values() if p.name != "engine_options"]
    extra = [_parameter(s, option_owners(s.key), device) for s in specs]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = {s.key: kwargs.pop(s.key, None if device else s.default) for s in specs}
        return fn(*args, engine_options=values, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + extra)
    return wrapper
