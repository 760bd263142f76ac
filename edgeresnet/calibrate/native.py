"""The compiled loops of the histogram observer (``_histogram.c``), built on first use.

The first calibration on a machine compiles ``_histogram.c`` with its C compiler (``$CC``, else
``cc``, ``gcc`` or ``clang``) into the user's cache, named by the source's hash and the machine's
architecture; later runs load it from there. The wheel stays pure Python. Where there is no
compiler, the build fails, or ``EDGERESNET_NATIVE_HISTOGRAM=0`` is set, :func:`library` is None
and the observers run their numpy path, which gives the same histograms bit for bit (tested).
ctypes releases the GIL during the calls, so the calibration lanes update side by side.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("_histogram.c")
ENV = "EDGERESNET_NATIVE_HISTOGRAM"  # "0": use numpy even where a compiler is at hand
# No -ffast-math or -march: NaN/Inf keep IEEE 754's rules and the library runs on any CPU of its
# architecture (the source uses 16-byte vectors, which x86-64 and AArch64 have at their baseline).
FLAGS = ("-O3", "-shared", "-fPIC", "-std=c11")
_lock = threading.Lock()


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeresnet"


def built_path() -> Path:
    """Where this source's library for this machine is (or will be) cached."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    return cache_dir() / f"histogram-{digest}-{platform.system().lower()}-{platform.machine()}.so"


def compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _temporary_beside(target: Path) -> tuple[Path, str] | None:
    """(where the library goes, a fresh temporary file beside it): the cache, or where the cache
    cannot be written (a read-only home) a private folder for this process, never a predictable
    path under /tmp where another user could plant a library. None if neither can be written."""
    for folder in (lambda: target.parent, lambda: Path(tempfile.mkdtemp(prefix="edgeresnet-"))):
        try:
            where = folder()
            where.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=where)
        except OSError:
            continue
        os.close(fd)
        return where / target.name, tmp
    return None


def _build(target: Path) -> Path | None:
    """Compile to a temporary name, then rename: a concurrent run or an interrupted compile never
    leaves a half-written library under the final name. The library built, or None."""
    cc = compiler()
    spot = _temporary_beside(target) if cc is not None and os.name == "posix" else None
    if spot is None:
        return None
    target, tmp = spot
    try:
        done = subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, timeout=120)
        if done.returncode == 0:
            os.replace(tmp, target)
            return target
        return None
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _open(path: Path) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:  # a cached file this machine cannot load: numpy still works
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.er_scan.argtypes = [p, i64, p, p]
    lib.er_scan.restype = None
    lib.er_bin.argtypes = [p, i64, ctypes.c_float, i64, p]
    lib.er_bin.restype = ctypes.c_int
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded library (built now if this machine has none cached yet), or None: no compiler,
    the build failed, or turned off by the environment."""
    if os.environ.get(ENV, "1") == "0":
        return None
    with _lock:  # two calibration lanes starting at once build it once
        return _library()


@functools.lru_cache(maxsize=1)
def _library() -> ctypes.CDLL | None:  # once a process: the update calls this for every tensor
    try:
        target = built_path()
    except OSError:  # the source is missing from a trimmed install
        return None
    built = target if target.is_file() else _build(target)
    lib = _open(built) if built is not None else None
    if built is not None and built != target:  # a private build: loaded, so its folder can go
        shutil.rmtree(built.parent, ignore_errors=True)
    return lib


def scan(lib: ctypes.CDLL, x: np.ndarray) -> tuple[int, int, int, float]:
    """(finite values, exact zeros among them, NaN/Inf values, largest finite |x|) of a
    C-contiguous float32 array."""
    out = np.zeros(3, np.int64)
    top = np.zeros(1, np.uint32)
    lib.er_scan(x.ctypes.data, x.size, out.ctypes.data, top.ctypes.data)
    return int(out[0]), int(out[1]), int(out[2]), float(top.view(np.float32)[0])


def bin_counts(lib: ctypes.CDLL, x: np.ndarray, scale: float, nbins: int) -> np.ndarray:
    """Counts of ``trunc(|x| * scale)`` (float32 arithmetic) over the ``nbins`` bins, NaN and Inf
    included in bin 0 as the zeros are; ``scale`` must map the largest finite |x| below ``nbins``."""
    counts = np.zeros(nbins, np.int64)
    status = lib.er_bin(x.ctypes.data, x.size, ctypes.c_float(scale), nbins, counts.ctypes.data)
    if status == -1:
        raise ValueError(f"scale {scale} puts |x| outside {nbins} bins")
    if status:
        raise MemoryError("the histogram's sub-counts could not be allocated")
    return counts


def status() -> str:
    """One line for `doctor`: whether calibration's histogram updates run compiled, without building."""
    if os.environ.get(ENV, "1") == "0":
        return f"numpy ({ENV}=0)"
    try:
        built = built_path()
    except OSError:
        return f"numpy ({SOURCE.name} is not in this install)"
    if built.is_file():
        return f"compiled ({built})"
    cc = compiler()
    return f"compiled on the first calibration ({cc})" if cc else \
        "numpy (no C compiler: install gcc or clang for faster calibration, same tables)"
