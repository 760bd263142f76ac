"""Engines behind one small interface (base.Backend), each in one module that registers
itself (registry.register); looked up by name or alias through the registry."""

from __future__ import annotations

from .base import Artifact, Backend, EngineOptions, Runner, Skip
from .registry import backend_class, backends, expand_targets, get_backend, install_hint, names, register, resolve

__all__ = ["Artifact", "Backend", "EngineOptions", "Runner", "Skip", "backend_class", "backends", "expand_targets",
           "get_backend", "install_hint", "names", "register", "resolve"]
