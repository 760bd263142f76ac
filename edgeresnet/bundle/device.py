#!/usr/bin/env python3
"""The device side of an edgeresnet export, in one file: check the bundle, describe the machine,
verify every engine on the bundle's golden images, time them.

    python3 device.py check     # SHA-256 of every file the manifest lists
    python3 device.py info      # this machine: Python, numpy, runtimes, CPU class, GPU
    python3 device.py verify    # golden set on every runnable engine -> verify.json
    python3 device.py bench     # batch-1 latency of every runnable engine
    python3 device.py eval      # golden-set accuracy of every runnable engine

Needs Python >= 3.8 and the standard library for ``check`` and ``info``; numpy and at least one
runtime (onnxruntime, openvino, or TensorRT through the bundle's ``trt/trt_device.py``) for the
rest. It imports nothing from edgeresnet: the package imports this file (the CPU class, the
verdict rule), so there is one implementation.

Errors are one line on stderr, ``edgeresnet-device: <kind>: <message> (<hint>)``, with an exit
code per kind (``KINDS``); the kinds are stable strings tools map to their own messages.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import hashlib
import json
import mmap
import os
import platform
import posixpath
import shutil
import socket
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

FORMAT = "edgeresnet-device/1"
MANIFEST = "edgeresnet.json"
EXIT_FAILED, EXIT_USAGE, EXIT_BUNDLE, EXIT_MISSING, EXIT_NO_SPACE = 1, 2, 3, 4, 28
# kind -> exit code: the stable vocabulary of the stderr line
KINDS = {
    "usage": EXIT_USAGE,
    "bad-manifest": EXIT_BUNDLE, "missing-file": EXIT_BUNDLE, "hash-mismatch": EXIT_BUNDLE, "bad-file": EXIT_BUNDLE,
    "no-numpy": EXIT_MISSING, "no-runtime": EXIT_MISSING,
    "no-space": EXIT_NO_SPACE,
    "failed": EXIT_FAILED,
}


class DeviceError(Exception):
    """One line: a stable ``kind`` (its exit code in KINDS), a message and a hint naming the fix."""

    def __init__(self, kind: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint
        self.code = KINDS[kind]

    def line(self) -> str:
        return f"edgeresnet-device: {self.kind}: {self.message} ({self.hint})"


def _numpy() -> Any:
    """numpy, imported only by the actions that need it, so `check` and `info` run without it."""
    try:
        import numpy
    except ImportError:
        raise DeviceError("no-numpy", f"numpy is not installed for {sys.executable}",
                          "install it: `python3 -m pip install numpy` (JetPack: `sudo apt install python3-numpy`)") from None
    return numpy


# ---------------------------------------------------------------------------------------------
# The bundle: the manifest and the hashes of its files
# ---------------------------------------------------------------------------------------------

class Bundle:
    """An export folder as the device sees it: edgeresnet.json (read once) and every file it
    lists with its SHA-256. A file is used only after :meth:`path`: inside the folder, no link,
    a regular file, its hash as exported."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        path = os.path.join(self.root, MANIFEST)
        if not os.path.isfile(path):
            raise DeviceError("missing-file", f"{path} is missing", "copy the whole export directory")
        with open(path, "rb") as f:
            self.manifest_bytes = f.read()
        try:
            manifest = json.loads(self.manifest_bytes.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise DeviceError("bad-manifest", f"{path} is not JSON ({exc})", "copy the export again") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts", []), list):
            raise DeviceError("bad-manifest", f"{path} is not an edgeresnet manifest", "copy the export again")
        self.manifest = manifest
        self.sha256 = hashlib.sha256(self.manifest_bytes).hexdigest()
        self.hashes = {}  # type: Dict[str, str]
        for files in [manifest.get("files") or {}] + [a.get("files") or {} for a in manifest["artifacts"]
                                                       if isinstance(a, dict)]:
            if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
                raise DeviceError("bad-manifest", f"{path}: a 'files' map is not names to hashes", "copy the export again")
            self.hashes.update(files)
        self._checked = set()  # type: set

    def rel(self, name: str) -> str:
        """``name`` as a normal path inside the bundle; refused when it leads outside."""
        norm = posixpath.normpath(name) if isinstance(name, str) and name and "\x00" not in name else ""
        if not norm or posixpath.isabs(norm) or norm in (".", "..") or norm.startswith("../"):
            raise DeviceError("bad-manifest", f"{MANIFEST} names a file outside the bundle: {name!r}",
                              "copy the export again; its manifest must not be edited")
        full = os.path.join(self.root, *norm.split("/"))
        if not os.path.realpath(full).startswith(os.path.realpath(self.root) + os.sep):
            raise DeviceError("bad-file", f"{norm} in {self.root} is a link to a file outside the bundle",
                              "replace the link with the file itself")
        return norm

    def path(self, name: str) -> str:
        """The path of a listed file after its check (once per Bundle)."""
        rel = self.rel(name)
        if rel not in self.hashes:
            raise DeviceError("bad-manifest", f"{rel} is not listed in {MANIFEST} (no hash to check it by)",
                              "copy the export again; a bundle's files must not be added by hand")
        full = os.path.join(self.root, *rel.split("/"))
        if rel not in self._checked:
            if not os.path.lexists(full):
                raise DeviceError("missing-file", f"{rel} is missing from {self.root}", "copy the whole export directory")
            if not os.path.isfile(full):  # a FIFO would block the hash for good
                raise DeviceError("bad-file", f"{rel} in {self.root} is not a regular file", "copy the export again")
            if file_sha256(full) != self.hashes[rel]:
                raise DeviceError("hash-mismatch", f"{rel} in {self.root} differs from the exported file (SHA-256)",
                                  "copy the export again; a bundle's files must not be edited")
            self._checked.add(rel)
        return full

    def check(self) -> int:
        """Every listed file, checked; how many."""
        for rel in sorted(self.hashes):
            self.path(rel)
        return len(self.hashes)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The machine: CPU class (CPUID / HWCAP, as the runtimes read it), runtimes, GPU
# ---------------------------------------------------------------------------------------------

# cpuinfo flag -> what users call it; x86 first, then ARM's "Features" names.
ISA_FLAGS = {
    "avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512F", "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX-512 BF16", "avx512_fp16": "AVX-512 FP16",
    "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16",
    "asimd": "NEON", "asimddp": "ARM dot-product", "i8mm": "ARM i8mm", "fphp": "ARM fp16", "sve": "SVE",
}
X86 = ("x86_64", "amd64", "i386", "i686")
ARM = ("aarch64", "arm64")

# ONNX Runtime's MLAS and oneDNN choose their int8 kernels from CPUID (x86) and the kernel's
# HWCAP (ARM), not from /proc/cpuinfo. The two agree on bare metal, but not always elsewhere:
# under qemu-user /proc/cpuinfo is the host's while CPUID and HWCAP are the emulated CPU's, and
# some VMs mask flags. So the features are read the runtimes' way; /proc/cpuinfo is only the
# fallback where executable memory is refused (hardened kernels).
#
# void cpuid(uint32 leaf, uint32 subleaf, uint32 out[4]): System V x86-64 calling convention.
_CPUID_CODE = bytes([
    0x53,                    # push rbx (callee-saved; cpuid clobbers it)
    0x49, 0x89, 0xD0,        # mov r8, rdx (out)
    0x89, 0xF8,              # mov eax, edi (leaf)
    0x89, 0xF1,              # mov ecx, esi (subleaf)
    0x0F, 0xA2,              # cpuid
    0x41, 0x89, 0x00,        # mov [r8], eax
    0x41, 0x89, 0x58, 0x04,  # mov [r8+4], ebx
    0x41, 0x89, 0x48, 0x08,  # mov [r8+8], ecx
    0x41, 0x89, 0x50, 0x0C,  # mov [r8+12], edx
    0x5B,                    # pop rbx
    0xC3,                    # ret
])
# (leaf, subleaf, register index eax=0 ebx=1 ecx=2 edx=3, bit) -> the name ISA_FLAGS uses
_X86_BITS = {
    (7, 0, 1, 5): "AVX2", (1, 0, 2, 12): "FMA", (7, 0, 1, 16): "AVX-512F", (7, 0, 2, 11): "AVX-512 VNNI",
    (7, 1, 0, 4): "AVX-VNNI", (7, 1, 0, 5): "AVX-512 BF16", (7, 0, 3, 23): "AVX-512 FP16",
    (7, 0, 3, 25): "AMX-INT8", (7, 0, 3, 22): "AMX-BF16",
}
# AT_HWCAP (16) and AT_HWCAP2 (26) bits of Linux on arm64 (asm/hwcap.h)
_ARM_BITS = {(16, 1): "NEON", (16, 20): "ARM dot-product", (16, 9): "ARM fp16", (16, 22): "SVE", (26, 13): "ARM i8mm"}


def _x86_cpuid() -> Dict[Tuple[int, int], Tuple[int, int, int, int]]:
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        buf.write(_CPUID_CODE)
        anchor = ctypes.c_char.from_buffer(buf)
        fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(
            ctypes.addressof(anchor))
        regs = (ctypes.c_uint32 * 4)()
        fn(0, 0, regs)
        max_leaf = regs[0]
        out = {}
        for leaf, sub in ((1, 0), (7, 0), (7, 1)):
            if leaf <= max_leaf:
                fn(leaf, sub, regs)
                out[(leaf, sub)] = tuple(regs)
        del fn, anchor
        return out
    finally:
        buf.close()


def runtime_isa() -> Optional[Tuple[List[str], str]]:
    """(feature names, where they came from) read as the runtimes read them; None when this
    machine allows neither (then :func:`cpu_facts` falls back to /proc/cpuinfo)."""
    arch = platform.machine().lower()
    try:
        if arch in ("x86_64", "amd64"):
            leaves = _x86_cpuid()
            names = [n for (leaf, sub, reg, bit), n in _X86_BITS.items()
                     if (leaves.get((leaf, sub), (0, 0, 0, 0))[reg] >> bit) & 1]
            return names, "cpuid"
        if arch in ("aarch64", "arm64"):
            libc = ctypes.CDLL(None)
            libc.getauxval.restype = ctypes.c_ulong
            libc.getauxval.argtypes = [ctypes.c_ulong]
            caps = {at: libc.getauxval(at) for at in (16, 26)}
            return [n for (at, bit), n in _ARM_BITS.items() if (caps[at] >> bit) & 1], "hwcap"
    except (OSError, ValueError, AttributeError, PermissionError):  # no executable memory, no getauxval
        return None
    return None


def cpuinfo() -> Tuple[str, set]:
    """(model name, flags) from /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            text = f.read()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, flags


def cpu_class(info: Dict[str, Any]) -> str:
    """The CPU class that decides INT8 numerics and speed: which int8 dot-product the
    runtimes' kernels use. x86 without VNNI multiplies u8 x s8 pairs into saturating int16
    (VPMADDUBSW); VNNI, AMX and ARM's dot-product instructions accumulate in int32."""
    isa, arch = set(info.get("isa", [])), str(info.get("arch", "")).lower()
    if arch in X86:
        if "AMX-INT8" in isa:
            return "x86-amx"
        if isa & {"AVX-512 VNNI", "AVX-VNNI"}:
            return "x86-vnni"
        return "x86-avx512" if "AVX-512F" in isa else "x86-avx2" if "AVX2" in isa else "x86"
    if arch in ARM:
        return "arm-i8mm" if "ARM i8mm" in isa else "arm-dot" if "ARM dot-product" in isa else "arm"
    return arch or "unknown"


def cpu_facts() -> Dict[str, Any]:
    """Model and cores from /proc/cpuinfo; the ISA as the runtimes read it (CPUID / HWCAP), else
    from /proc/cpuinfo's flags (``isa_source`` says which); the ``class``."""
    model, flags = cpuinfo()
    seen = runtime_isa()
    names = set(seen[0]) if seen else {name for flag, name in ISA_FLAGS.items() if flag in flags}
    info = {"model": model, "arch": platform.machine(), "cores": os.cpu_count(),
            "isa": [name for name in dict.fromkeys(ISA_FLAGS.values()) if name in names],
            "isa_source": seen[1] if seen else "/proc/cpuinfo"}
    info["class"] = cpu_class(info)
    return info


RUNTIMES = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",), "tensorrt": ("tensorrt", "tensorrt-cu12",
                                                                                      "tensorrt-cu13")}


def runtime_version(module: str) -> Optional[str]:
    """The installed version of a runtime without importing it (fast), else by importing it
    (JetPack's apt-installed tensorrt has no pip metadata); None when it is not there."""
    import importlib.util

    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        from importlib import metadata
        for dist in RUNTIMES.get(module, (module,)):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    except ImportError:
        pass
    try:
        return str(getattr(__import__(module), "__version__", "")) or None
    except Exception:  # a broken install reads as absent; `verify` names the import error
        return None


def _first_line(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            lines = f.read(512).decode("utf-8", "replace").replace("\x00", "").strip().splitlines()
    except OSError:
        return None
    return lines[0][:200] if lines else None


def gpu_facts() -> Optional[Dict[str, Any]]:
    """The first NVIDIA GPU nvidia-smi lists, else a Jetson's board name; None without either."""
    if shutil.which("nvidia-smi"):
        try:
            res = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,compute_cap", "--format=csv,noheader"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True, timeout=10)
            parts = [p.strip() for p in (res.stdout.strip().splitlines() or [""])[0].split(",")]
            if len(parts) == 3 and parts[0]:
                return {"name": parts[0], "driver": parts[1], "compute_capability": parts[2]}
        except (OSError, subprocess.SubprocessError):
            pass
    board = _first_line("/proc/device-tree/model")
    if board and "jetson" in board.lower():
        return {"name": board, "driver": None, "compute_capability": None}
    return None


def info() -> Dict[str, Any]:
    """This machine's facts (the ``info`` action; every verify entry carries them)."""
    try:
        import numpy
        numpy_version = numpy.__version__  # type: Optional[str]
    except ImportError:
        numpy_version = None
    cpu = cpu_facts()
    gpu = gpu_facts()
    host = socket.gethostname() or platform.node() or "unknown"
    key = f"{host} {cpu['class']}" + (f" {gpu['name']}" if gpu else "")
    return {"hostname": host, "python": platform.python_version(), "executable": sys.executable,
            "numpy": numpy_version, "runtimes": {name: runtime_version(name) for name in RUNTIMES},
            "cpu": {k: cpu[k] for k in ("model", "class", "isa", "arch", "cores", "isa_source")},
            "gpu": gpu, "l4t": _first_line("/etc/nv_tegra_release"), "device_key": key}


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------

def _default_bundle() -> str:
    """This file's folder when it sits in a bundle, else the current folder."""
    here = os.path.dirname(os.path.abspath(__file__))
    return here if os.path.isfile(os.path.join(here, MANIFEST)) else "."


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit 2, in the one-line protocol
        raise DeviceError("usage", message, f"see `{self.prog} --help`")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="device.py", description="Check, describe, verify and time an edgeresnet export bundle on "
                  "this device (Python >= 3.8; numpy and a runtime for verify, bench and eval).",
                  epilog="exit codes: 0 ok, 1 an engine failed verification, 2 usage, 3 a bundle file is wrong, "
                         "4 numpy or every runtime missing, 28 no space left")
    sub = top.add_subparsers(dest="action", metavar="{check,info}", parser_class=_Parser)
    sub.required = True
    for name, text in (("check", "SHA-256 of every file edgeresnet.json lists"),
                       ("info", "this machine's facts: Python, numpy, runtimes, CPU class, GPU")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--bundle", default=None, help="the export folder (default: this file's folder)")
        p.add_argument("--json", action="store_true", help="print JSON on stdout (check and info always do)")
    return top


def run(args: argparse.Namespace) -> int:
    if args.action == "info":
        print(json.dumps(info(), indent=1))
        return 0
    bundle = Bundle(args.bundle or _default_bundle())
    if args.action == "check":
        print(json.dumps({"ok": True, "files": bundle.check(), "bundle_sha256": bundle.sha256}))
        return 0
    raise DeviceError("usage", f"unknown action {args.action}", "see `device.py --help`")


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return run(parser().parse_args(argv))
    except DeviceError as exc:
        print(exc.line(), file=sys.stderr, flush=True)
        return exc.code
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            print(DeviceError("no-space", f"no space left on the device ({exc.filename or 'while writing'})",
                              "free some space and rerun").line(), file=sys.stderr, flush=True)
            return EXIT_NO_SPACE
        raise
    except KeyboardInterrupt:
        print("edgeresnet-device: interrupted: stopped by a signal (nothing half-written was kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
