"""The CPU's INT8-relevant features as the runtimes see them: CPUID on x86, HWCAP on ARM.

The code lives in the bundle's device file (``ondevice/device.py``), so a device without
edgeresnet reads its CPU the same way; this module keeps the package's old import path."""

from __future__ import annotations

from ..ondevice.device import _x86_cpuid, runtime_isa

__all__ = ["runtime_isa", "_x86_cpuid"]
