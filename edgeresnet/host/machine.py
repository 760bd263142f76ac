"""What machine is this: Python, libraries, CPU and its ISA, GPUs, Jetson power mode.

Used by `doctor` and recorded in every benchmark, because INT8 speed depends on exactly
these facts (VNNI decides ONNX Runtime's fast path, AMX and bf16 OpenVINO's).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path

CORE_LIBRARIES = ("torch", "onnx", "numpy", "pillow")  # plus each registered engine's own (backends.installed)


MAX_THREADS = 4 * (os.cpu_count() or 1)  # more only oversubscribes the cores (3000 once hung a machine)


@functools.lru_cache(maxsize=1)
def _cpu() -> dict:
    from ..ondevice.device import cpu_facts

    return cpu_facts()


def cpu() -> dict:
    """Model and cores from /proc/cpuinfo; the ISA as the runtimes read it (CPUID / HWCAP), else
    from /proc/cpuinfo's flags (``isa_source`` says which); the ``class`` (:func:`cpu_class`).
    Read once per process, by the bundle's device file (``ondevice/device.py``), which is the one
    implementation: a device without edgeresnet classifies its CPU with the same code."""
    return dict(_cpu())


def cpu_class(info: dict | None = None) -> str:
    """The CPU class that decides INT8 numerics and speed (``bundle/device.cpu_class``): which
    int8 dot-product the runtimes' kernels use; this CPU's by default."""
    if info is None:
        return cpu()["class"]
    from ..ondevice.device import cpu_class as classify

    return classify(info)


def library_version(name: str) -> str | None:
    dist = {"pillow": "Pillow"}.get(name, name)
    for candidate in (dist, f"{dist}-cu12", f"{dist}-cu13"):  # NVIDIA's wheels carry the CUDA major
        try:
            return importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def gpus() -> list[dict]:
    """NVIDIA GPUs from nvidia-smi, else torch; Jetsons from the device tree."""
    found: list[dict] = []
    if shutil.which("nvidia-smi"):
        try:
            res = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            for line in res.stdout.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 4:
                    found.append({"name": parts[0], "memory": parts[1], "driver": parts[2], "compute_capability": parts[3]})
        except (OSError, subprocess.SubprocessError):
            pass
    model_file = Path("/proc/device-tree/model")
    if model_file.exists() and "jetson" in model_file.read_text(errors="replace").lower():
        found.append({"name": model_file.read_text(errors="replace").strip("\x00\n "), "jetson": jetson()})
    return found


def jetson(root: str = "/") -> dict:
    """Power mode and clocks where readable (nvpmodel, sysfs); empty elsewhere. The GPU clock
    comes from the devfreq folder the bench's telemetry finds (a scan of /sys/class/devfreq, as
    jetson_stats does), so Xavier, Nano, Orin on JetPack 5 or 6 and Thor all report it. `root`
    reads a fixture tree instead of "/" (nvpmodel is run only for the real machine)."""
    from ..ondevice.trt_device import gpu_devfreq

    base = Path(root)
    info: dict = {}
    release = base / "etc/nv_tegra_release"
    if release.exists():
        info["l4t"] = release.read_text(errors="replace").splitlines()[0].strip()
    if base.resolve() == Path("/") and shutil.which("nvpmodel"):
        try:
            res = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10)
            info["power_mode"] = " ".join(res.stdout.split())
        except (OSError, subprocess.SubprocessError):
            pass
    devfreq = gpu_devfreq(root)
    files = {"gpu_freq_hz": Path(devfreq) / "cur_freq"} if devfreq else {}
    files["cpu0_freq_khz"] = base / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"
    if devfreq:
        info["gpu_devfreq"] = Path(devfreq).name
    for name, path in files.items():
        try:
            info[name] = int(path.read_text().strip())
        except (OSError, ValueError):
            pass
    return info
