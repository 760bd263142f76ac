"""Which engines this machine runs: their libraries' versions and what each runtime sees, and,
with the host's own facts (host.machine), the description `doctor` prints and every benchmark records.

Here, not in host/, because it asks the engine registry: host/ knows the machine, not the engines.
"""

from __future__ import annotations

import platform

from ..host.machine import CORE_LIBRARIES, cpu, gpus, library_version


def libraries() -> dict[str, str | None]:
    from .registry import library_extras

    names = [*CORE_LIBRARIES[:2], *library_extras(), *CORE_LIBRARIES[2:]]
    return {name: library_version(name) for name in names}


def runtime_details() -> dict:
    """What each installed engine sees (ONNX Runtime's execution providers, OpenVINO's
    devices): every registered engine's ``runtime_facts()``, where its libraries are installed."""
    from .registry import backends

    details: dict = {}
    for cls in backends():
        if not all(library_version(lib) for lib in cls.libraries):
            continue
        try:
            details.update(cls.runtime_facts())
        except Exception as exc:  # a broken install is itself a finding
            details[f"{cls.name}_facts"] = f"import failed: {exc}"
    return details


def describe() -> dict:
    return {"python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
            "cpu": cpu(), "libraries": libraries(), "gpus": gpus(), **runtime_details()}
