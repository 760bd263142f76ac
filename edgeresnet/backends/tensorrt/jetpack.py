"""Which TensorRT a Jetson has, and how it installs: L4T (Jetson Linux) -> JetPack -> TensorRT line,
read from the board itself for `edgeresnet doctor`, and the install hints per line.

The L4T -> JetPack names are NVIDIA's JetPack archive (developer.nvidia.com/embedded/jetpack-archive)
as rbonghi/jetson_stats ``jtop/core/jetson_variables.py`` (NVIDIA_JETPACK) and dusty-nv/jetson-containers
``jetson_containers/l4t_version.py`` (get_jetpack_version) tabulate them; the compute stack per
release is cited in each row of ``STACKS``. ``root`` lets tests point the reader at a fixture tree
(tests/data/jetson_doctor/<board>/etc/nv_tegra_release, .../proc/device-tree/model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .recipes import recipe_for

# jtop/core/jetson_variables.py NVIDIA_JETPACK (rbonghi/jetson_stats f41d5cad), the releases with a
# TensorRT line here; jetson-containers l4t_version.py agrees on every row it has.
JETPACK_BY_L4T = {
    "32.6.1": "4.6", "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4", "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3", "35.6.0": "5.1.4",
    "35.6.1": "5.1.5", "35.6.2": "5.1.5", "35.6.3": "5.1.5", "35.6.4": "5.1.6",
    "36.2.0": "6.0 DP", "36.3.0": "6.0", "36.4.0": "6.1", "36.4.2": "6.1 (rev1)", "36.4.3": "6.2", "36.4.4": "6.2.1",
    "36.4.7": "6.2.1", "36.5.0": "6.2.2",
    "38.2.0": "7.0", "38.2.1": "7.0", "38.2.2": "7.0", "38.4.0": "7.1", "39.0.0": "7.2 EA", "39.2.0": "7.2",
}


@dataclass(frozen=True)
class Stack:
    """What one L4T release series ships: the TensorRT a JetPack of it installs, and how."""

    l4t: str  # "35.1": every L4T 35.1.x
    jetpack: str
    tensorrt: str
    cuda: str
    ubuntu: str
    python: str
    install: str  # "apt" or "apt or pip"
    source: str


STACKS = (
    Stack("35.1", "5.0.2", "8.4.1", "11.4", "20.04", "3.8", "apt",
          "developer.nvidia.com/embedded/jetpack-sdk-502: Jetson Linux 35.1, CUDA 11.4, TensorRT 8.4.1, Ubuntu 20.04"),
    Stack("35", "5.1.x", "8.5.2", "11.4", "20.04", "3.8", "apt",
          "JetPack 5.1 release notes: TensorRT 8.5.2, CUDA 11.4; jetpack-sdk-514: 5.1.4 'packages the same compute "
          "stack as JetPack 5.1.3'"),
    Stack("36.2", "6.0 DP", "8.6.2", "12.2", "22.04", "3.10", "apt", "JetPack 6.0 DP introduction (Jetson Linux 36.2)"),
    Stack("36.3", "6.0", "8.6.2", "12.2", "22.04", "3.10", "apt",
          "JetPack 6.0 release notes: TensorRT 8.6.2, CUDA 12.2"),
    Stack("36", "6.1/6.2", "10.3.0", "12.6", "22.04", "3.10", "apt",
          "JetPack 6.1/6.2 release notes: CUDA 12.6, TensorRT 10.3, cuDNN 9.3"),
    Stack("38", "7.0/7.1 (Thor)", "10.13", "13.0", "24.04", "3.12", "apt or pip",
          "JetPack 7.0/7.1 (Jetson Linux 38.2/38.4, Thor only; developer.nvidia.com/embedded/jetpack/downloads/"
          "archive-7.0, archive-7.1): CUDA 13.0; TensorRT 10.13.x per NVIDIA TensorRT-Edge-LLM's support matrix "
          "(IGX Thor: 10.13.3.9, CUDA 13.0), not stated on the JetPack page itself"),
    Stack("39", "7.2 (Orin, Thor)", "10.16", "13.2", "24.04", "3.12", "apt or pip",
          "JetPack 7.2 (Jetson Linux 39): CUDA 13.2 (TensorRT-Edge-LLM support matrix); the TensorRT 10.x download "
          "page: Orin's iGPU joins the SBSA build 'bundled in the upcoming JetPack 7.x', Orin DLA not supported; "
          "TensorRT 11.4.1+ (SBSA build) supports JetPack 7.2.2+ with DLA on AGX Orin"),
)

# jetson-containers packages/cuda/cuda-python/config.py installs cuda-python==<CUDA major.minor> for the
# JetPack's CUDA: pip picking 12.9 or 13.x on a 12.2/12.6 Tegra driver is what that pin avoids.
APT_TENSORRT = "sudo apt install python3-libnvinfer"  # JetPack's own TensorRT, part of nvidia-jetpack
PIP_NOTE = ("PyPI's tensorrt supports ARM only as SBSA / JetPack 7 on Ubuntu 24.04+ (TensorRT install guide, "
            "'Method 1: Python Package Index (pip)')")


def cuda_python_pin(cuda: str) -> str:
    return f'pip install "cuda-python=={cuda}.*"  # optional: the device file reaches libcudart through ctypes'


def install_hint(stack: Stack | None) -> str:
    """How TensorRT's Python module gets onto this device."""
    if stack is None:
        return f"x86-64 or ARM SBSA (Ubuntu 24.04+): `pip install tensorrt` (PyPI); JetPack 5/6: `{APT_TENSORRT}`"
    if stack.install == "apt":
        return (f"JetPack {stack.jetpack}: `{APT_TENSORRT}` (JetPack's own TensorRT {stack.tensorrt}, for its python3 "
                f"{stack.python}), never pip: {PIP_NOTE}")
    return (f"JetPack {stack.jetpack}: sudo apt install nvidia-jetpack (TensorRT {stack.tensorrt}), or pip install "
            "tensorrt (the SBSA build; 11.4.1+ on JetPack 7.2.2+ for DLA on AGX Orin)")


def stack_for(l4t: str) -> Stack | None:
    """The release series an L4T version belongs to: the longest matching prefix."""
    for s in sorted(STACKS, key=lambda s: -len(s.l4t)):
        if l4t == s.l4t or l4t.startswith(s.l4t + "."):
            return s
    return None


_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")


def read_l4t(root: str | Path = "/") -> tuple[str | None, str]:
    """(L4T version, where it was read): /etc/nv_tegra_release's first line ("# R36 (release),
    REVISION: 4.3, ...", as jetson_stats and jetson-containers parse it), else the nvidia-l4t-core
    package's version in dpkg's status file (jetson_stats' fallback)."""
    root = Path(root)
    try:
        first = (root / "etc/nv_tegra_release").read_text(errors="replace").splitlines()[0]
        m = _RELEASE.match(first.strip())
        if m:
            parts = (m.group(1) + "." + m.group(2)).split(".")
            return ".".join((parts + ["0", "0"])[:3]), "/etc/nv_tegra_release"
    except (OSError, IndexError):
        pass
    try:
        status = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return None, "no /etc/nv_tegra_release"
    m = re.search(r"^Package: nvidia-l4t-core\n(?:.+\n)*?Version: ([0-9.]+)", status, re.M)
    return (m.group(1), "dpkg nvidia-l4t-core") if m else (None, "no /etc/nv_tegra_release")


def read_model(root: str | Path = "/") -> str | None:
    """The board's name from the device tree (NUL-terminated), as jetson_stats reads it."""
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        try:
            return (Path(root) / rel).read_bytes().rstrip(b"\0\n").decode(errors="replace").strip() or None
        except OSError:
            continue
    return None


def jetson_facts(root: str | Path = "/", installed_tensorrt: str | None = None) -> dict | None:
    """What `doctor` says on a Jetson: the board, L4T, JetPack, the TensorRT line it ships and how it
    installs, and the line of the TensorRT actually importable. None when this is no Jetson."""
    l4t, found_in = read_l4t(root)
    model = read_model(root)
    if l4t is None and not (model and "jetson" in model.lower()):
        return None
    stack = stack_for(l4t) if l4t else None
    facts = {"model": model, "l4t": l4t, "l4t_source": found_in,
             "jetpack": JETPACK_BY_L4T.get(l4t or "", stack.jetpack if stack else None)}
    if stack is None:
        facts.update(supported=False, why=f"L4T {l4t or 'unknown'}: no TensorRT line here (JetPack 5.0.2 / L4T R35.1 "
                     "and newer are supported; JetPack 4 ships Python 3.6 and TensorRT <= 8.2)",
                     install=install_hint(None))
    else:
        line = recipe_for(stack.tensorrt)[0]
        facts.update(supported=True, tensorrt=stack.tensorrt, trt_line=line.line, trt_label=line.label,
                     cuda=stack.cuda, ubuntu=stack.ubuntu, python=stack.python, install_path=stack.install,
                     install=install_hint(stack), cuda_python=cuda_python_pin(stack.cuda), source=stack.source,
                     dla=_dla_note(model, line.line))
    if installed_tensorrt:
        facts["installed_tensorrt"] = installed_tensorrt
        try:
            facts["installed_line"] = recipe_for(installed_tensorrt)[0].line
        except Exception:  # noqa: BLE001 - an unknown version is a fact to show, not a doctor crash
            facts["installed_line"] = None
    return facts


def _dla_note(model: str | None, line: str) -> str:
    name = (model or "").lower()
    if "thor" in name:
        return "no DLA on Thor"
    if "orin nano" in name:
        return "no DLA on Orin Nano"
    if line == "10":
        return "no DLA on this TensorRT (10.7 was the last 10.x with DLA; 11.4.1+ brings it back on AGX Orin)"
    return "DLA cores usable (--dla-core 0/1)" if ("orin" in name or "xavier" in name) else "DLA: see the board's specs"
