"""File-format readers: IDX (MNIST family), CIFAR python batches, npz. Nothing here runs code
from a file: npz is read with allow_pickle=False and CIFAR's pickles with an unpickler that
accepts numpy arrays and nothing else."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np

from ..errors import InputError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file, gzip-compressed or not."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InputError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise InputError(f"{path} is truncated or corrupt: {len(raw)} bytes, header says {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write uint8 arrays as gzip IDX (the format Fashion-MNIST ships in)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(header + array.tobytes())


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves the globals a pickled numpy array needs; anything else is refused."""

    def find_class(self, module: str, name: str):
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            core = getattr(np, "_core", None) or np.core
            return core.multiarray._reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):  # how Python 3 pickles bytes at protocol 2
            import codecs
            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def read_cifar_batch(path: Path) -> dict:
    """One CIFAR-10 python batch: keys decoded to str, 'data' as (N, 32, 32, 3) uint8."""
    try:
        with path.open("rb") as f:
            obj = _ArrayOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise InputError(f"cannot read CIFAR batch {path}: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path} is not a CIFAR batch (no dict inside)")
    out = {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" in out:
        try:
            data = np.asarray(out["data"], dtype=np.uint8)
            out["data"] = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: its 'data' is not N x 3072 uint8 pixels ({exc})") from None
    return out


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {path} as npz: {exc}") from None
