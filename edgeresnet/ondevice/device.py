#!/usr/bin/env python3
"""The device side of an edgeresnet export, in one file: check the bundle, describe the machine,
verify every engine on the bundle's golden images, time them.

    python3 device.py check     # SHA-256 of every file the manifest lists
    python3 device.py info      # this machine: Python, numpy, runtimes, CPU class, GPU
    python3 device.py verify    # golden set on every runnable engine -> verify.json
    python3 device.py bench     # batch-1 latency of every runnable engine
    python3 device.py eval      # golden-set accuracy of every runnable engine

Needs Python >= 3.8 and the standard library for ``check`` and ``info``; numpy and at least one
runtime (onnxruntime, openvino, executorch, or TensorRT through the bundle's ``trt/trt_device.py``)
for the rest. It imports nothing from edgeresnet: the package imports this file (the CPU class, the
verdict rule), so there is one implementation.

Errors are one line on stderr, ``edgeresnet-device: <kind>: <message> (<hint>)``, with an exit
code per kind (``KINDS``); the kinds are stable strings tools map to their own messages.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import functools
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
    "no-golden": EXIT_BUNDLE,
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
        rel, full = self._listed(name)
        if rel not in self._checked:
            if file_sha256(full) != self.hashes[rel]:
                raise self._changed(rel)
            self._checked.add(rel)
        return full

    def read_bytes(self, name: str) -> bytes:
        """A listed file's bytes, hashed as read (no window between the check and the use)."""
        rel, full = self._listed(name)
        with open(full, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != self.hashes[rel]:
            raise self._changed(rel)
        self._checked.add(rel)
        return data

    def _listed(self, name: str) -> Tuple[str, str]:
        rel = self.rel(name)
        if rel not in self.hashes:
            raise DeviceError("bad-manifest", f"{rel} is not listed in {MANIFEST} (no hash to check it by)",
                              "copy the export again; a bundle's files must not be added by hand")
        full = os.path.join(self.root, *rel.split("/"))
        if not os.path.lexists(full):
            raise DeviceError("missing-file", f"{rel} is missing from {self.root}", "copy the whole export directory")
        if not os.path.isfile(full):  # a FIFO would block the hash for good
            raise DeviceError("bad-file", f"{rel} in {self.root} is not a regular file", "copy the export again")
        return rel, full

    def _changed(self, rel: str) -> DeviceError:
        return DeviceError("hash-mismatch", f"{rel} in {self.root} differs from the exported file (SHA-256)",
                           "copy the export again; a bundle's files must not be edited")

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
                                                                                      "tensorrt-cu13"),
            "executorch": ("executorch",)}


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


@functools.lru_cache(maxsize=1)
def gpu_facts() -> Optional[Dict[str, Any]]:
    """The first NVIDIA GPU nvidia-smi lists, else a Jetson's board name; None without either.
    Read once per process."""
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
    return {"hostname": hostname(), "python": platform.python_version(), "executable": sys.executable,
            "numpy": numpy_version, "runtimes": {name: runtime_version(name) for name in RUNTIMES},
            "cpu": {k: cpu[k] for k in ("model", "class", "isa", "arch", "cores", "isa_source")},
            "gpu": gpu, "l4t": _first_line("/etc/nv_tegra_release"), "device_key": device_key(cpu["class"])}


def hostname() -> str:
    return socket.gethostname() or platform.node() or "unknown"


def device_key(cls: Optional[str] = None) -> str:
    """This machine's key in verify.json: "<hostname> <cpu class>" (+ " <gpu name>")."""
    gpu = gpu_facts()
    return f"{hostname()} {cls or cpu_facts()['class']}" + (f" {gpu['name']}" if gpu else "")


# ---------------------------------------------------------------------------------------------
# The golden set: golden.npz, listed and hashed in the manifest, described by its "golden" key
# ---------------------------------------------------------------------------------------------

GOLDEN = "golden.npz"
MAX_GOLDEN_IMAGES = 2000  # an export writes at most 500; more is a file this tool did not make
NO_GOLDEN_HINT = "re-export with an evaluation set (`edgeresnet export MODEL --eval DATA`, without --no-eval)"


def load_golden(bundle: Bundle) -> Dict[str, Any]:
    """golden.npz as arrays (loaded without pickle, after its hash check), with the manifest's
    description of it: ``x`` uint8 NHWC, ``logits`` float32 (N, K) FP32 reference, ``labels``
    int64 or None, ``index``; ``meta`` the manifest's ``golden`` object."""
    import io

    np = _numpy()
    meta = bundle.manifest.get("golden")
    if not isinstance(meta, dict) or GOLDEN not in bundle.hashes:
        raise DeviceError("no-golden", f"{bundle.root} has no golden set ({GOLDEN}): it was exported without "
                          "an evaluation set, or by an edgeresnet older than `verify`", NO_GOLDEN_HINT)
    data = bundle.read_bytes(GOLDEN)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            out = {k: npz[k] for k in ("x", "logits", "index")}
            out["labels"] = npz["labels"] if "labels" in npz.files else None
    except (KeyError, ValueError, OSError) as exc:
        raise DeviceError("bad-file", f"{GOLDEN} is not a golden set ({exc})", NO_GOLDEN_HINT) from None
    x, logits, labels = out["x"], out["logits"], out["labels"]
    n = len(x)
    ok = (x.dtype == np.uint8 and x.ndim == 4 and 1 <= n <= MAX_GOLDEN_IMAGES and logits.dtype == np.float32
          and logits.shape[:1] == (n,) and logits.ndim == 2 and out["index"].shape == (n,)
          and (labels is None or (labels.shape == (n,) and labels.dtype.kind in "iu")))
    if not ok:
        raise DeviceError("bad-file", f"{GOLDEN} does not hold 1 to {MAX_GOLDEN_IMAGES} uint8 NHWC images with "
                          "their FP32 logits", NO_GOLDEN_HINT)
    out["labels"] = None if labels is None else labels.astype(np.int64)
    out["meta"] = meta
    return out


def normalize(x: Any, preprocess: Dict[str, Any]) -> Any:
    """uint8 NHWC -> float32 NCHW model input: the arithmetic of the package's
    Preprocess.normalize, operation for operation (a gray image for an RGB model is repeated)."""
    np = _numpy()
    channels = int(preprocess["channels"])
    if x.shape[-1] != channels:
        if x.shape[-1] == 1 and channels == 3:
            x = np.repeat(x, 3, axis=-1)
        else:
            raise DeviceError("bad-file", f"{GOLDEN} images have {x.shape[-1]} channels, the model takes {channels}",
                              NO_GOLDEN_HINT)
    y = x.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(preprocess["mean"], dtype=np.float32)
    std = np.asarray(preprocess["std"], dtype=np.float32)
    y = (y - mean) / std
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def golden_metrics(logits: Any, reference: Any, labels: Any) -> Dict[str, Any]:
    """What one engine scored on the golden set against the FP32 reference: top-1 (None
    unlabelled), agreement of the top-1 classes, disagreement and error counts, max |logit
    difference|, and the SHA-256 of the predicted classes (int64 little-endian)."""
    np = _numpy()
    logits = np.asarray(logits, dtype=np.float32)
    if logits.shape != reference.shape:
        raise ValueError(f"the engine gives logits of shape {logits.shape}, the golden set holds {reference.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("the engine gives NaN or Inf logits on the golden images")
    pred, ref = logits.argmax(axis=1), reference.argmax(axis=1)
    n = len(pred)
    disagree = int((pred != ref).sum())
    errors = None if labels is None else int((pred != labels).sum())
    return {"top1": None if errors is None else (n - errors) / n, "agreement": (n - disagree) / n,
            "max_abs_logit_diff": float(np.abs(logits - reference).max()) if n else 0.0,
            "predictions_sha256": hashlib.sha256(pred.astype("<i8").tobytes()).hexdigest(),
            "disagreements": disagree, "errors": errors, "images": n}


# ---------------------------------------------------------------------------------------------
# Engines: each artifact of the manifest whose runtime imports here, opened as the package opens it
# ---------------------------------------------------------------------------------------------

# CPU class -> the kernel path ONNX Runtime's MLAS takes for U8S8 QLinearConv (the package's
# backends/onnxruntime.py KERNELS, whose names a test holds equal to these).
ORT_INT8_KERNELS = {"x86-amx": "u8s8-amx", "x86-vnni": "u8s8-vnni", "x86-avx512": "u8s8-7bit", "x86-avx2": "u8s8-7bit",
                    "x86": "u8s8-7bit", "arm-i8mm": "arm-i8mm", "arm-dot": "arm-dot", "arm": "arm-neon"}
ORT_GENERIC, ORT_SATURATING = "mlas-generic", "u8s8-saturating"
# CPU class -> the oneDNN convolution OpenVINO's CPU plugin is expected to pick for INT8 (the package's
# backends/openvino.py KERNELS); the runtime model's own primitive names it when it can.
OV_INT8_KERNELS = {"x86-amx": "brgconv_avx512_amx", "x86-vnni": "avx512_core_vnni", "x86-avx512": "avx512_core",
                   "x86-avx2": "jit_avx2_I8", "arm-i8mm": "acl/kleidiai int8", "arm-dot": "acl int8"}
OV_GENERIC = "reference"
OV_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}  # fp32 in real f32, never bf16 behind it
# CPU class -> the XNNPACK QS8 GEMM family ExecuTorch's delegate dispatches to (the package's
# backends/executorch KERNELS, whose names a test holds equal to these).
ET_INT8_KERNELS = {"x86-amx": "xnnpack-qs8-avx512vnni", "x86-vnni": "xnnpack-qs8-avx512vnni",
                   "x86-avx512": "xnnpack-qs8-avx512skx", "x86-avx2": "xnnpack-qs8-avx2", "x86": "xnnpack-qs8-sse",
                   "arm-i8mm": "xnnpack-qs8-neoni8mm", "arm-dot": "xnnpack-qs8-neondot", "arm": "xnnpack-qs8-neon"}
ET_GENERIC = "xnnpack-qs8-scalar"
TRT_FILE = "trt/trt_device.py"
TRT_ENGINE = "trt/model.{}.engine"  # what trt_device.py build writes for each engine of its plan


class Engine:
    """One artifact opened here: ``run(x)`` float32 NCHW -> logits, and the kernel path taken."""

    def __init__(self, run: Any, kernel: Optional[str], path: str, file: str, close: Any = None) -> None:
        self.run, self.kernel, self.path, self.file = run, kernel, path, file
        self.close = close or (lambda: None)


def ort_choice(entry: Dict[str, Any], cls: str) -> Tuple[str, Optional[str]]:
    """(file, kernel path) ONNX Runtime runs for ``entry`` on a CPU of class ``cls``: INT8 takes
    the per-CPU variant the manifest lists for the class's kernel (the 7-bit twin on x86 without
    VNNI), else the 8-bit file, which saturates there. Float artifacts: (path, None)."""
    if entry["precision"] != "int8":
        return entry["path"], None
    kernel = ORT_INT8_KERNELS.get(cls, ORT_GENERIC)
    variants = entry.get("variants") or {}
    if kernel in variants:
        return posixpath.join(posixpath.dirname(entry["path"]), posixpath.basename(variants[kernel])), kernel
    seven_bit = entry["path"].endswith(".ort-w7.onnx")
    return entry["path"], ORT_SATURATING if kernel == "u8s8-7bit" and not seven_bit else kernel


def open_ort(bundle: Bundle, entry: Dict[str, Any], cls: str, threads: Optional[int]) -> Engine:
    import onnxruntime as ort

    rel, kernel = ort_choice(entry, cls)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(bundle.path(rel), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    words = f"{cls} {kernel}" if kernel else f"{cls} mlas-{entry['precision']}"
    return Engine(lambda x: sess.run(None, {name: x})[0], kernel, words, rel)


def ov_conv_primitive(compiled: Any) -> Optional[str]:
    """The primitive most Convolution layers of the compiled runtime model run with (e.g.
    jit_avx2_I8, brgconv_avx512_amx_I8), as the package's openvino.conv_runtime reads it."""
    kinds = {}  # type: Dict[str, int]
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if rt["layerType"].astype(str) == "Convolution":
                kind = rt["primitiveType"].astype(str)
                kinds[kind] = kinds.get(kind, 0) + 1
    except (RuntimeError, KeyError):  # devices other than CPU may not expose runtime info
        return None
    return max(kinds, key=kinds.get) if kinds else None


def open_openvino(bundle: Bundle, entry: Dict[str, Any], cls: str, threads: Optional[int]) -> Engine:
    import openvino as ov

    np = _numpy()
    for rel in entry["files"]:  # the .xml and its .bin
        bundle.path(rel)
    config = {"INFERENCE_PRECISION_HINT": OV_HINT.get(entry["precision"], "f32"), "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(bundle.path(entry["path"]), "CPU", config)
    primitive = ov_conv_primitive(compiled)
    kernel = (primitive or OV_INT8_KERNELS.get(cls, OV_GENERIC)) if entry["precision"] == "int8" else None
    request = compiled.create_infer_request()
    words = f"{cls} {primitive or kernel or 'cpu-' + config['INFERENCE_PRECISION_HINT']}"
    return Engine(lambda x: np.array(request.infer({0: x})[0]), kernel, words, entry["path"])


def trt_module(bundle: Bundle) -> Any:
    """The bundle's trt/trt_device.py, imported by path (after its hash check)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgeresnet_trt_device", bundle.path(TRT_FILE))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def trt_entries(bundle: Bundle) -> List[Dict[str, Any]]:
    """The engines trt_device.py built here for its plan (trt/model.<name>.engine), as entries."""
    import tensorrt

    td = trt_module(bundle)
    try:
        _, plan = td.select_plan(td.DeviceBundle(os.path.dirname(bundle.path(TRT_FILE))).build_json(),
                                 str(tensorrt.__version__))
    except td.DeviceError as exc:
        raise DeviceError("bad-file", exc.message, exc.hint) from None
    out = []
    for name, engine in plan["engines"].items():
        rel = TRT_ENGINE.format(name)
        if os.path.isfile(os.path.join(bundle.root, *rel.split("/"))):
            out.append({"target": "trt", "precision": name, "path": rel, "files": {}, "dla_core": engine.get("dla_core")})
    return out


def open_trt(bundle: Bundle, entry: Dict[str, Any], cls: str, threads: Optional[int]) -> Engine:
    import tensorrt

    td = trt_module(bundle)
    path = os.path.join(bundle.root, *entry["path"].split("/"))  # built here: no export hash to check
    try:
        runner = td.open_runner(path, entry.get("dla_core"), trt=tensorrt)
    except td.DeviceError as exc:
        raise RuntimeError(f"{exc.message} ({exc.hint})") from None
    core = entry.get("dla_core")
    where = f"DLA core {core}" if core is not None else "GPU"
    version = ".".join(str(tensorrt.__version__).split(".")[:2])
    return Engine(runner, None, f"TensorRT {version} {where}", entry["path"], runner.close)


# ExecuTorch's XNNPACK delegate runs on one process-wide thread pool, sized only through a private
# call and only before the first program of the process loads: resetting it after a load, then
# running, aborted the process (glibc assertion). This record is the process's one account of
# it; the package's backends/executorch/runner.py goes through et_pool too.
ET_POOL = {"sized": False}


# Logged on import by every CPU-only install of ExecuTorch's dependencies, and not actionable:
# torchao's CUDA kernel libraries, which cannot load without CUDA, and torch's pytree deprecation
# of a torchao enum. Held back while executorch.runtime imports (import_et_runtime).
ET_NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


@contextlib.contextmanager
def quiet_import_logs() -> Any:
    """Imports inside run with ET_NOISY_LOGGERS' warnings held back (errors still show)."""
    import logging

    loggers = [logging.getLogger(name) for name in ET_NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def import_et_runtime() -> Any:
    """``executorch.runtime.Runtime``, imported quietly (:func:`quiet_import_logs`)."""
    with quiet_import_logs():
        from executorch.runtime import Runtime
    return Runtime


def held_stderr(fn: Any) -> Any:
    """``fn()`` with what native code writes to stderr (fd 2) held back, and shown only if it
    raises: ExecuTorch's CPU probe prints five lines about ARM registers on every x86 machine."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                return fn()
            except BaseException:
                os.dup2(saved, 2)
                held.seek(0)
                os.write(2, held.read())
                raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def et_pool(threads: Optional[int]) -> Optional[str]:
    """Size ExecuTorch's XNNPACK thread pool to ``threads`` if no program has loaded in this
    process yet, and record that one is about to (``threads`` None: leave the pool as it is).
    A note when it is too late: the pool then keeps its size."""
    from executorch.extension.pybindings import portable_lib

    first, ET_POOL["sized"] = not ET_POOL["sized"], True
    have = int(held_stderr(portable_lib._threadpool_get_thread_count))  # the first call probes the CPU
    if not threads or threads == have:
        return None
    if first:
        portable_lib._unsafe_reset_threadpool(int(threads))
        return None
    return (f"threads {threads} not applied: ExecuTorch sizes its thread pool once per process, before the first "
            f"program loads; this one has {have}")


def open_executorch(bundle: Bundle, entry: Dict[str, Any], cls: str, threads: Optional[int]) -> Engine:
    """A .pte through ``executorch.runtime`` (torch tensors in and out, so torch is imported here
    only), batch 1: a batch runs image by image."""
    import torch

    np = _numpy()
    runtime = import_et_runtime().get()
    if not runtime.backend_registry.is_available("XnnpackBackend"):
        raise RuntimeError("this ExecuTorch build has no XNNPACK delegate (reinstall executorch from PyPI)")
    # The note is not kept: scores do not depend on the pool's size, and each timing process
    # opens one engine, whose first load sizes the pool.
    et_pool(threads)
    # Loaded from the bytes hashed as read (no window between the check and the load). The Method
    # reads those bytes without holding them: measured, once the Program was collected its
    # outputs were garbage, so run() keeps the Program alive with the Method.
    program = runtime.load_program(bundle.read_bytes(entry["path"]))
    loaded = (program, program.load_method("forward"))
    chw = tuple(int(d) for d in program.metadata("forward").input_tensor_meta(0).sizes())[1:]

    def run(x: Any) -> Any:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if tuple(x.shape[1:]) != chw:
            raise ValueError(f"input shape {tuple(x.shape[1:])} != the program's {chw}")
        forward = loaded[1]
        return np.concatenate([forward.execute([torch.from_numpy(x[i:i + 1])])[0].numpy() for i in range(len(x))])

    kernel = ET_INT8_KERNELS.get(cls, ET_GENERIC) if entry["precision"] == "int8" else None
    return Engine(run, kernel, f"{cls} {kernel or 'xnnpack-' + entry['precision']}", entry["path"])


# target (the package's engine name) -> (the module it needs, how to open an artifact of it)
RUNNERS = {"ort": ("onnxruntime", open_ort), "openvino": ("openvino", open_openvino), "trt": ("tensorrt", open_trt),
           "executorch": ("executorch.runtime", open_executorch)}


def importable(module: str) -> Optional[str]:
    """None when ``module`` imports here, else why not (one line)."""
    try:
        with quiet_import_logs():
            __import__(module)
    except ImportError as exc:
        return f"{module} does not import with {sys.executable} ({str(exc).splitlines()[0] if str(exc) else 'ImportError'})"
    return None


def engine_entries(bundle: Bundle, targets: Optional[Sequence[str]], precisions: Optional[Sequence[str]]
                   ) -> List[Dict[str, Any]]:
    """Every artifact (manifest entries, then TensorRT engines built here) with ``skip`` set to
    the reason it cannot run here, in the manifest's order; --target/--precision filter it."""
    found = []
    for entry in bundle.manifest["artifacts"]:
        ok = isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("target", "precision", "path"))
        if not ok:
            raise DeviceError("bad-manifest", f"{MANIFEST}: an artifact lacks a target, precision or path",
                              "copy the export again")
        found.append(dict(entry))
    if TRT_FILE in bundle.hashes:
        why = importable("tensorrt")
        found += trt_entries(bundle) if why is None else \
            [{"target": "trt", "precision": "*", "path": "trt/", "files": {}, "skip": why}]
    known = sorted({e["target"] for e in found})
    if targets:
        unknown = [t for t in targets if t not in known and not (t == "onnxruntime" and "ort" in known)]
        if unknown:
            raise DeviceError("usage", f"--target {unknown[0]}: this bundle has no such engine",
                              f"its engines: {', '.join(known) or 'none'}")
    wanted = {"ort" if t == "onnxruntime" else t for t in targets or known}
    found = [e for e in found if e["target"] in wanted and (not precisions or e["precision"] in precisions)]
    for entry in found:
        if "skip" not in entry:
            module = RUNNERS.get(entry["target"], (None, None))[0]
            entry["skip"] = (f"no device-side runner for the engine {entry['target']}" if module is None
                             else importable(module))
    return found


# ---------------------------------------------------------------------------------------------
# The verdict: the export's own figures, with a binomial tolerance for the sample size
# ---------------------------------------------------------------------------------------------

LEVEL = 0.999  # one verify of a good engine fails by chance at most once in 1,000 runs
# An artifact the export could not run (TensorRT, built on the device) has no export figure:
# the rate assumed for it, by precision.
DEFAULT_RATE = {"int8": 0.03, "fp16": 0.01, "bf16": 0.01, "fp32": 0.005}


def binomial_quantile(n: int, q: float, level: float = LEVEL) -> int:
    """The smallest k with P(X <= k) >= level for X ~ Binomial(n, q)."""
    import math

    if q <= 0.0:
        return 0
    if q >= 1.0:
        return n
    cdf, log_q, log_r = 0.0, math.log(q), math.log1p(-q)
    for k in range(n + 1):
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_q + (n - k) * log_r)
        if cdf >= level - 1e-12:
            return k
    return n


def tolerance(n: int, precision: str, expected: Optional[Dict[str, Any]], labelled: bool) -> Dict[str, Any]:
    """How many disagreements with FP32 (and top-1 errors) an engine may show on ``n`` golden
    images: the 99.9% quantile of Binomial(n, q), q the export's own rate for this artifact
    (floored at 0.5/n, so an export rate of 0 still allows a rare flip)."""
    floor = 0.5 / n
    agreement = (expected or {}).get("agreement")
    if isinstance(agreement, (int, float)) and not isinstance(agreement, bool):
        q, source = max(1.0 - float(agreement), floor), "the export's disagreement rate for this artifact"
    else:
        q, source = max(DEFAULT_RATE.get(precision, 0.03), floor), f"no export figure: the {precision} default"
    max_dis = binomial_quantile(n, q)
    rule = (f"disagreements with FP32 <= {max_dis}, the {LEVEL:.1%} quantile of Binomial(n={n}, q={q:.4f}), "
            f"q = {source} (at least 0.5/n)")
    top1 = (expected or {}).get("top1")
    max_err = None
    if labelled and isinstance(top1, (int, float)) and not isinstance(top1, bool):
        qe = max(1.0 - float(top1), floor)
        max_err = binomial_quantile(n, qe)
        rule += f"; top-1 errors <= {max_err}, the {LEVEL:.1%} quantile of Binomial(n={n}, q={qe:.4f}), q = the export's golden error rate"
    return {"rule": rule, "max_disagreements": max_dis, "max_errors": max_err}


def verdict(metrics: Dict[str, Any], tol: Dict[str, Any]) -> Tuple[str, Optional[str]]:
    """("passed", None) or ("failed", why)."""
    why = []
    if metrics["disagreements"] > tol["max_disagreements"]:
        why.append(f"{metrics['disagreements']} of {metrics['images']} images disagree with FP32 "
                   f"(at most {tol['max_disagreements']} allowed)")
    if tol["max_errors"] is not None and metrics["errors"] is not None and metrics["errors"] > tol["max_errors"]:
        why.append(f"{metrics['errors']} top-1 errors (at most {tol['max_errors']} allowed)")
    return ("failed", "; ".join(why)) if why else ("passed", None)


# ---------------------------------------------------------------------------------------------
# Running the golden set
# ---------------------------------------------------------------------------------------------

STEP = 64  # golden images per call


def predict(engine: Engine, golden: Dict[str, Any], preprocess: Dict[str, Any]) -> Any:
    np = _numpy()
    x = golden["x"]
    parts = [np.asarray(engine.run(normalize(x[i:i + STEP], preprocess)), dtype=np.float32)
             for i in range(0, len(x), STEP)]
    return np.concatenate(parts)


def _is_fatal(exc: BaseException) -> bool:
    """What ends the whole run rather than one engine's row: a full disk, no memory left."""
    if isinstance(exc, MemoryError):
        return True
    seen = exc  # type: Optional[BaseException]
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _one_line(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, DeviceError) else f"{type(exc).__name__}: {exc}"
    return (text.strip().splitlines() or ["failed"])[0][:300]


def score_engine(bundle: Bundle, entry: Dict[str, Any], golden: Dict[str, Any], cls: str,
                 threads: Optional[int] = None) -> Dict[str, Any]:
    """One verify row: the artifact on the golden set, its figures, tolerance and verdict."""
    row = {"target": entry["target"], "precision": entry["precision"], "artifact": entry["path"], "status": "skipped",
           "reason": entry.get("skip"), "top1": None, "agreement": None, "max_abs_logit_diff": None, "kernel": None,
           "path": None, "expected": None, "tolerance": None, "latency_ms": None}
    if entry.get("skip"):
        return row
    expected = (golden["meta"].get("expected") or {}).get(f"{entry['target']}/{entry['precision']}")
    row["expected"] = expected if isinstance(expected, dict) else None
    try:
        engine = RUNNERS[entry["target"]][1](bundle, entry, cls, threads)
        try:
            metrics = golden_metrics(predict(engine, golden, bundle.manifest["preprocess"]), golden["logits"],
                                     golden["labels"])
        finally:
            engine.close()
    except DeviceError:
        raise
    except Exception as exc:  # one engine failing is its row; the others still run
        if _is_fatal(exc):
            raise
        row.update(status="failed", reason=_one_line(exc))
        return row
    tol = tolerance(metrics["images"], entry["precision"], row["expected"], golden["labels"] is not None)
    status, why = verdict(metrics, tol)
    row.update({k: metrics[k] for k in ("top1", "agreement", "max_abs_logit_diff", "predictions_sha256",
                                        "disagreements", "errors")})
    row.update(status=status, reason=why, kernel=engine.kernel, path=engine.path, file=engine.file, tolerance=tol)
    return row


# ---------------------------------------------------------------------------------------------
# Timing: each engine in its own process of this file, rounds interleaved across engines
# ---------------------------------------------------------------------------------------------
# One engine times at a time (never two thread pools at once: OpenVINO f32 went from 10.6 ms
# to 39 ms sharing a process with ONNX Runtime); the others wait on their stdin. Rounds go
# engine by engine and repeat, so a slow spell of the machine lands on every engine rather
# than on one, and the rounds' spread says how far a p50 can be trusted.

WORKER_TAG = "edgeresnet-worker "


def worker(args: argparse.Namespace) -> int:
    """The hidden `_time` action: open one engine, warm it up, then answer ``time SECONDS`` lines
    on stdin with its batch latencies in ms, until ``quit`` or end of input."""
    np = _numpy()
    bundle = Bundle(args.bundle or _default_bundle())
    entry = next((e for e in engine_entries(bundle, args.target, args.precision) if not e.get("skip")), None)
    if entry is None:
        raise DeviceError("no-runtime", f"{args.target} {args.precision} cannot run here", "see `device.py verify`")
    engine = RUNNERS[entry["target"]][1](bundle, entry, cpu_facts()["class"], args.threads)
    shape = bundle.manifest.get("input_shape") or [1, 3, 224, 224]
    x = np.zeros([args.batch] + [int(v) for v in shape[1:]], np.float32)
    if GOLDEN in bundle.hashes and isinstance(bundle.manifest.get("golden"), dict):
        images = load_golden(bundle)["x"]
        x = normalize(images[np.arange(args.batch) % len(images)], bundle.manifest["preprocess"])
    _time_runs(engine.run, x, 0.2, 5)  # warm-up
    print(WORKER_TAG + json.dumps({"ready": True, "kernel": engine.kernel, "path": engine.path}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] != "time":
            break
        _time_runs(engine.run, x, 0.05, 3)  # re-warm: the other engines ran since this one's last round
        print(WORKER_TAG + json.dumps({"samples_ms": _time_runs(engine.run, x, float(words[1]), 5)}), flush=True)
    engine.close()
    return 0


def _time_runs(run: Any, x: Any, seconds: float, least: int) -> List[float]:
    import time

    samples = []
    start = time.perf_counter_ns()
    while len(samples) < least or time.perf_counter_ns() - start < seconds * 1e9:
        t0 = time.perf_counter_ns()
        run(x)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter_ns() - start > max(10.0, 4 * seconds) * 1e9:
            break
    return samples


class Worker:
    """A `_time` process of this file for one engine."""

    def __init__(self, root: str, target: str, precision: str, batch: int, threads: Optional[int]) -> None:
        import tempfile

        self.errors = tempfile.TemporaryFile()
        cmd = [sys.executable, os.path.abspath(__file__), "_time", "--bundle", root, "--target", target,
               "--precision", precision, "--batch", str(batch)] + (["--threads", str(threads)] if threads else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
                                     universal_newlines=True)

    def reply(self) -> Dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(WORKER_TAG):
                return json.loads(line[len(WORKER_TAG):])
        self.proc.wait()
        self.errors.seek(0)
        lines = self.errors.read().decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"the timing process stopped (exit {self.proc.returncode}): "
                           f"{lines[-1] if lines else 'no message'}")

    def time(self, seconds: float) -> List[float]:
        self.proc.stdin.write(f"time {seconds}\n")
        self.proc.stdin.flush()
        return self.reply()["samples_ms"]

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.errors.close()


def time_engines(root: str, rows: List[Dict[str, Any]], seconds: float, rounds: int, batch: int = 1,
                 threads: Optional[int] = None) -> Dict[int, Dict[str, Any]]:
    """Latency of each row's artifact: one process per engine, ``rounds`` rounds of ``seconds``
    each, interleaved (engine A, B, C, then A, B, C again), so a slow spell of the machine hits
    every engine alike. Row index -> {"samples": [...], "round_p50": [...]} or {"error": str}."""
    workers, out = {}, {}  # type: Dict[int, Worker], Dict[int, Dict[str, Any]]
    try:
        for i, row in enumerate(rows):
            workers[i] = Worker(root, row["target"], row["precision"], batch, threads)
        for i, w in list(workers.items()):
            try:
                ready = w.reply()
                out[i] = {"samples": [], "round_p50": [], "kernel": ready.get("kernel"), "path": ready.get("path")}
            except (RuntimeError, ValueError) as exc:
                out[i] = {"error": _one_line(exc)}
                w.close()
                del workers[i]
        for _ in range(rounds):
            for i, w in list(workers.items()):
                try:
                    samples = w.time(seconds)
                except (RuntimeError, ValueError, OSError) as exc:
                    out[i] = {"error": _one_line(exc)}
                    w.close()
                    del workers[i]
                    continue
                out[i]["samples"] += samples
                out[i]["round_p50"].append(_percentile(samples, 50))
    finally:
        for w in workers.values():
            w.close()
    return out


def _percentile(values: Sequence[float], q: float) -> float:
    np = _numpy()
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_summary(timed: Dict[str, Any]) -> Dict[str, Any]:
    """p50 of all samples and the spread of the rounds' p50s, in % of it."""
    p50 = _percentile(timed["samples"], 50)
    rounds = timed["round_p50"]
    spread = (max(rounds) - min(rounds)) / p50 * 100 if p50 > 0 and rounds else 0.0
    return {"p50": round(p50, 4), "spread_pct": round(spread, 1), "rounds": len(rounds)}


def choose(rows: List[Dict[str, Any]]) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """The fastest engine that passed, and the flags: an INT8 artifact slower than a float
    artifact of the same engine beyond the larger of their spreads is flagged and not chosen."""
    timed = [r for r in rows if r["status"] == "passed" and r["latency_ms"]]
    flags, slow = [], set()
    for r in timed:
        if r["precision"] not in ("int8", "int8-dla"):
            continue
        for f in timed:
            if f["target"] != r["target"] or f["precision"] not in ("fp32", "fp16", "bf16"):
                continue
            a, b = r["latency_ms"], f["latency_ms"]
            margin = max(a["spread_pct"], b["spread_pct"]) / 100
            if a["p50"] > b["p50"] * (1 + margin):
                flags.append(f"{r['target']} {r['precision']} is slower than {f['target']} {f['precision']} here "
                             f"(p50 {a['p50']:.3f} vs {b['p50']:.3f} ms, spread {margin * 100:.0f}%): not chosen")
                slow.add(id(r))
    for r in rows:
        if r["status"] == "failed":
            flags.append(f"{r['target']} {r['precision']} failed verification: {r['reason']}: never chosen")
    best = min((r for r in timed if id(r) not in slow), key=lambda r: r["latency_ms"]["p50"], default=None)
    chosen = None if best is None else {"target": best["target"], "precision": best["precision"],
                                        "latency_ms": best["latency_ms"]["p50"]}
    return chosen, flags


# ---------------------------------------------------------------------------------------------
# verify.json: one entry per device, for this exact bundle (the SHA-256 of its manifest)
# ---------------------------------------------------------------------------------------------

VERIFY = "verify.json"
VERIFY_FORMAT = "edgeresnet-verify/1"
STATUSES = ("passed", "failed", "skipped")
MAX_VERIFY_BYTES = 16 << 20


def _num(v: Any, none: bool = True) -> bool:
    return (none and v is None) or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _text(v: Any, none: bool = True) -> bool:
    return (none and v is None) or isinstance(v, str)


def row_problem(row: Any) -> Optional[str]:
    """What is wrong with one engine row of a verify entry (read from an untrusted file), or None."""
    if not isinstance(row, dict):
        return "an engine row is not an object"
    if not all(_text(row.get(k), False) for k in ("target", "precision", "status")) or row["status"] not in STATUSES:
        return "an engine row lacks a target, precision or status (passed, failed, skipped)"
    name = f"the {row['target']} {row['precision']} row"
    for key in ("top1", "agreement", "max_abs_logit_diff"):
        if not _num(row.get(key)):
            return f"{name}'s {key} is not a number"
    for key in ("artifact", "reason", "kernel", "path"):
        if not _text(row.get(key)):
            return f"{name}'s {key} is not text"
    lat = row.get("latency_ms")
    if lat is not None and not (isinstance(lat, dict) and all(_num(lat.get(k), False) for k in ("p50", "spread_pct"))):
        return f"{name}'s latency_ms has no p50 and spread_pct"
    tol = row.get("tolerance")
    if tol is not None and not (isinstance(tol, dict) and _text(tol.get("rule"), False)
                                and _num(tol.get("max_disagreements"), False) and _num(tol.get("max_errors"))):
        return f"{name}'s tolerance is malformed"
    if row.get("expected") is not None and not isinstance(row["expected"], dict):
        return f"{name}'s expected is not an object"
    return None


def entry_problem(entry: Any) -> Optional[str]:
    """What is wrong with one device entry of verify.json, or None."""
    if not isinstance(entry, dict):
        return "a device entry is not an object"
    device = entry.get("device")
    if not isinstance(device, dict) or not _text(device.get("device_key"), False):
        return "a device entry has no device facts with a device_key"
    if not _text(entry.get("via"), False) or not _text(entry.get("time"), False):
        return "a device entry lacks 'via' or 'time'"
    golden = entry.get("golden")
    if not isinstance(golden, dict) or not _num(golden.get("images"), False):
        return "a device entry lacks its golden set's image count"
    engines = entry.get("engines")
    if not isinstance(engines, list):
        return "a device entry's engines are not a list"
    problem = next(filter(None, map(row_problem, engines)), None)
    if problem:
        return problem
    chosen = entry.get("chosen")
    if chosen is not None:
        if not (isinstance(chosen, dict) and _text(chosen.get("target"), False) and _text(chosen.get("precision"), False)
                and _num(chosen.get("latency_ms"))):
            return "a device entry's chosen engine is malformed"
        if not any(r["target"] == chosen["target"] and r["precision"] == chosen["precision"] and r["status"] == "passed"
                   for r in engines):
            return "a device entry chose an engine that did not pass"
    flags = entry.get("flags")
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        return "a device entry's flags are not a list of lines"
    return None


def read_verify(root: str) -> Optional[Dict[str, Any]]:
    """verify.json as written, or None when absent; raises ValueError naming what is malformed."""
    path = os.path.join(root, VERIFY)
    if not os.path.lexists(path):
        return None
    if os.path.islink(path) or not os.path.isfile(path):
        raise ValueError(f"{path} is not a regular file")
    if os.path.getsize(path) > MAX_VERIFY_BYTES:
        raise ValueError(f"{path} is larger than {MAX_VERIFY_BYTES >> 20} MB")
    with open(path, "rb") as f:
        try:
            doc = json.loads(f.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{path} is not JSON ({_one_line(exc)})") from None
    if not isinstance(doc, dict) or doc.get("format") != VERIFY_FORMAT or not _text(doc.get("bundle_sha256"), False) \
            or not isinstance(doc.get("devices"), dict):
        raise ValueError(f"{path} is not an edgeresnet verify file")
    for key, entry in doc["devices"].items():
        problem = entry_problem(entry)
        if problem:
            raise ValueError(f"{path}: {key}: {problem}")
    return doc


def merge_verify(root: str, bundle_sha256: str, entry: Dict[str, Any]) -> str:
    """Put ``entry`` into verify.json under its device key, keeping other devices' entries for
    this same bundle (entries of another bundle are dropped); written atomically."""
    problem = entry_problem(entry)
    if problem:
        raise ValueError(problem)
    try:
        old = read_verify(root)
    except ValueError:
        old = None  # a malformed file is replaced whole
    devices = old["devices"] if old and old["bundle_sha256"] == bundle_sha256 else {}
    devices[entry["device"]["device_key"]] = entry
    doc = {"format": VERIFY_FORMAT, "bundle_sha256": bundle_sha256, "devices": devices}
    path = os.path.join(root, VERIFY)
    if os.path.islink(path):
        raise DeviceError("bad-file", f"{path} is a symbolic link", "delete it and rerun")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(doc, indent=1))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---------------------------------------------------------------------------------------------
# The actions
# ---------------------------------------------------------------------------------------------

def _runnable(bundle: Bundle, targets: Optional[Sequence[str]], precisions: Optional[Sequence[str]]
              ) -> List[Dict[str, Any]]:
    _numpy()  # every action that runs engines needs numpy: say so before naming a missing runtime
    entries = engine_entries(bundle, targets, precisions)
    if not any(not e.get("skip") for e in entries):
        why = "; ".join(sorted({e["skip"] for e in entries})) or "no engine matches --target/--precision"
        raise DeviceError("no-runtime", f"no engine of {bundle.root} can run here: {why}",
                          "install a runtime its engines need: `python3 -m pip install onnxruntime`, `openvino` or "
                          "`executorch`")
    return entries


def verify(root: str, targets: Optional[Sequence[str]] = None, precisions: Optional[Sequence[str]] = None,
           seconds: float = 0.3, rounds: int = 3, via: str = "local", threads: Optional[int] = None) -> Dict[str, Any]:
    """The device's verify entry: every runnable engine on the golden set with its verdict, a short
    interleaved timing of those that passed, the fastest that passed (``chosen``) and the flags."""
    import datetime

    bundle = Bundle(root)
    bundle.check()
    golden = load_golden(bundle)
    facts = info()
    entries = _runnable(bundle, targets, precisions)
    rows = [score_engine(bundle, e, golden, facts["cpu"]["class"], threads) for e in entries]
    passed, untimed = [r for r in rows if r["status"] == "passed"], []
    if seconds > 0 and passed:
        timings = time_engines(bundle.root, passed, seconds, rounds, 1, threads)
        for i, row in enumerate(passed):
            timed = timings.get(i, {"error": "not timed"})
            if "error" in timed:  # verified, but without a time it cannot be chosen
                untimed.append(f"{row['target']} {row['precision']} could not be timed: {timed['error']}")
            else:
                row["latency_ms"] = latency_summary(timed)
    chosen, flags = choose(rows)
    flags += untimed
    return {"device": facts, "via": via, "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "golden": {"images": len(golden["x"]), "sha256": bundle.hashes[GOLDEN]},
            "engines": rows, "chosen": chosen, "flags": flags}


def eval_rows(root: str, targets: Optional[Sequence[str]] = None, precisions: Optional[Sequence[str]] = None,
              threads: Optional[int] = None) -> List[Dict[str, Any]]:
    """The `eval` action: golden-set accuracy of every runnable engine, no timing."""
    bundle = Bundle(root)
    bundle.check()
    golden = load_golden(bundle)
    cls = cpu_facts()["class"]
    return [score_engine(bundle, e, golden, cls, threads) for e in _runnable(bundle, targets, precisions)]


def bench_rows(root: str, targets: Optional[Sequence[str]] = None, precisions: Optional[Sequence[str]] = None,
               batches: Sequence[int] = (1,), seconds: float = 1.0, rounds: int = 3,
               threads: Optional[int] = None) -> List[Dict[str, Any]]:
    """The `bench` action: rows in report.json's row schema, one per engine and batch, each
    engine in its own process, rounds interleaved."""
    bundle = Bundle(root)
    bundle.check()
    entries = [e for e in _runnable(bundle, targets, precisions) if not e.get("skip")]
    rows = []
    for batch in batches:
        timed = time_engines(bundle.root, entries, seconds, rounds, batch, threads)
        for i, e in enumerate(entries):
            t = timed.get(i, {"error": "not timed"})
            row = {"target": e["target"], "precision": e["precision"], "artifact": e["path"], "batch": batch,
                   "mode": "latency", "threads": threads, "status": "ok", "reason": None, "latency_ms": None,
                   "throughput_ips": None, "kernel": None, "details": {}}
            if "error" in t:
                row.update(status="failed", reason=t["error"])
            else:
                np = _numpy()
                ms = np.asarray(t["samples"], dtype=np.float64)
                summary = latency_summary(t)
                row["latency_ms"] = {"p50": summary["p50"], "p90": _percentile(ms, 90), "p99": _percentile(ms, 99),
                                     "mean": float(ms.mean()), "min": float(ms.min()), "max": float(ms.max()),
                                     "samples": int(len(ms)), "p50_spread_pct": summary["spread_pct"]}
                row["throughput_ips"] = batch * 1000.0 / float(ms.mean())
                row["kernel"] = t.get("kernel")
                row["details"] = {"rounds": summary["rounds"], "seconds_per_round": seconds, "path": t.get("path"),
                                  "method": "each engine in its own process, rounds interleaved across engines"}
            rows.append(row)
    return rows


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


def _names(text: str) -> List[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names nothing")
    return names


def _bounded(kind: Any, low: float, high: float) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")
        return value
    return parse


ACTIONS = (("check", "SHA-256 of every file edgeresnet.json lists"),
           ("info", "this machine's facts: Python, numpy, runtimes, CPU class, GPU"),
           ("verify", "every runnable engine on the golden set, verdicts, a short timing -> verify.json"),
           ("bench", "batch latency of every runnable engine, each in its own process, rounds interleaved"),
           ("eval", "golden-set accuracy of every runnable engine (no timing)"))


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="device.py", description="Check, describe, verify and time an edgeresnet export bundle on "
                  "this device (Python >= 3.8; numpy and a runtime for verify, bench and eval).",
                  epilog="exit codes: 0 ok, 1 an engine failed, 2 usage, 3 a bundle file is wrong, "
                         "4 numpy or every runtime missing, 28 no space left")
    sub = top.add_subparsers(dest="action", metavar="{" + ",".join(a for a, _ in ACTIONS) + "}", parser_class=_Parser)
    sub.required = True
    for name, text in ACTIONS + (("_time", argparse.SUPPRESS),):
        p = sub.add_parser(name, description=text, **({} if name == "_time" else {"help": text}))
        p.add_argument("--bundle", default=None, help="the export folder (default: this file's folder)")
        p.add_argument("--json", action="store_true", help="print JSON on stdout (check and info always do)")
        if name in ("check", "info"):
            continue
        p.add_argument("--target", type=_names, default=None,
                       help="only these engines, comma-separated (ort, openvino, trt, executorch)")
        p.add_argument("--precision", type=_names, default=None, help="only these precisions, comma-separated")
        p.add_argument("--threads", type=_bounded(int, 1, 1024), default=None, help="CPU threads per engine")
        if name == "verify":
            p.add_argument("--time-seconds", type=_bounded(float, 0, 60), default=0.3,
                           help="timed seconds per engine and round (default 0.3; 0: no timing, no choice)")
            p.add_argument("--rounds", type=_bounded(int, 1, 20), default=3, help="interleaved rounds (default 3)")
            p.add_argument("--via", default="local", help=argparse.SUPPRESS)
            p.add_argument("--no-write", action="store_true", help="do not write verify.json")
        if name == "bench":
            p.add_argument("--batch", type=_names, default=["1"], help="batch sizes, comma-separated (default 1)")
            p.add_argument("--mode", default="latency", choices=["latency"], help="latency (one request at a time)")
            p.add_argument("--time-seconds", type=_bounded(float, 0.01, 600), default=1.0,
                           help="timed seconds per engine and round (default 1)")
            p.add_argument("--rounds", type=_bounded(int, 1, 20), default=3, help="interleaved rounds (default 3)")
        if name == "_time":
            p.add_argument("--batch", type=_bounded(int, 1, 4096), default=1)
    return top


def _table(rows: List[Dict[str, Any]], chosen: Optional[Dict[str, Any]] = None) -> None:
    for r in rows:
        mark = "*" if chosen and (chosen["target"], chosen["precision"]) == (r["target"], r["precision"]) else " "
        parts = [f"{mark} {r['target']:<10} {r['precision']:<6} {r['status']:<7}"]
        if r.get("agreement") is not None:
            top1 = "-" if r["top1"] is None else f"{r['top1'] * 100:.2f}%"
            parts.append(f"top-1 {top1:>7}  agreement {r['agreement'] * 100:6.2f}%  max|dlogit| "
                         f"{r['max_abs_logit_diff']:.3g}  {r.get('path') or ''}")
        lat = r.get("latency_ms") or {}
        if lat.get("p50") is not None:
            parts.append(f"p50 {lat['p50']:.3f} ms")
        if r.get("reason"):
            parts.append(f"({r['reason']})")
        print("  ".join(parts))


def _batches(values: List[str]) -> List[int]:
    parse = _bounded(int, 1, 4096)
    try:
        return [parse(v) for v in values]
    except argparse.ArgumentTypeError as exc:
        raise DeviceError("usage", f"--batch: {exc}", "e.g. --batch 1,8") from None


def run(args: argparse.Namespace) -> int:
    if args.action == "info":
        print(json.dumps(info(), indent=1))
        return 0
    root = args.bundle or _default_bundle()
    if args.action == "check":
        bundle = Bundle(root)
        print(json.dumps({"ok": True, "files": bundle.check(), "bundle_sha256": bundle.sha256}))
        return 0
    if args.action == "_time":
        return worker(args)
    if args.action == "verify":
        entry = verify(root, args.target, args.precision, args.time_seconds, args.rounds, args.via, args.threads)
        if not args.no_write:
            merge_verify(os.path.abspath(root), Bundle(root).sha256, entry)
        if args.json:
            print(json.dumps(entry, indent=1))
        else:
            _table(entry["engines"], entry["chosen"])
            for flag in entry["flags"]:
                print(f"flag: {flag}")
        return EXIT_FAILED if any(r["status"] == "failed" for r in entry["engines"]) else 0
    if args.action == "eval":
        rows = eval_rows(root, args.target, args.precision, args.threads)
    else:
        rows = bench_rows(root, args.target, args.precision, _batches(args.batch), args.time_seconds, args.rounds,
                          args.threads)
    if args.json:
        print(json.dumps({"format": FORMAT, "device": info(), "rows": rows}, indent=1))
    else:
        _table(rows)
    return EXIT_FAILED if any(r["status"] == "failed" for r in rows) else 0


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
