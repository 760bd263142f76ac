"""Engines behind one typed contract (base.Backend), each in one module that registers
itself (registry.register); looked up by name or alias through the registry."""

from __future__ import annotations

from .base import Artifact, Backend, BuildInputs, Capabilities, Input, OptionSpec, Runner, Skip
from .registry import (EngineOptions, backend_class, backends, engine_options, expand_targets, get_backend,
                       install_hint, names, register, resolve)

__all__ = ["Artifact", "Backend", "BuildInputs", "Capabilities", "EngineOptions", "Input", "OptionSpec", "Runner",
           "Skip", "backend_class", "backends", "engine_options", "expand_targets", "get_backend", "install_hint",
           "names", "register", "resolve"]
