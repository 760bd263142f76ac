"""Running a .pte through ``executorch.runtime``: numpy in, numpy out, and the thread pool.

ExecuTorch's XNNPACK delegate runs on one process-wide pthreadpool. Its size can only be set
through a private call, ``_unsafe_reset_threadpool``, and only before the first method is
loaded: measured here, resetting it after a method was loaded and then running that method
aborted the process (glibc ``__pthread_tpp_change_priority`` assertion). So the first load
of a process decides the pool; a later load asking for another size keeps the pool and says so.
The record of whether a program has loaded is the device file's (``ondevice.device.et_pool``),
which runs .pte files for `verify` in this same process: two records would let one reset the
pool after the other had loaded a program.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailable, require
from ...ondevice.device import et_pool, held_stderr, import_et_runtime
from . import FORMAT_METHOD, PRECISION_METHOD

_LOCK = threading.Lock()


def runtime():
    require("executorch", "executorch")
    return import_et_runtime().get()


def _portable():
    from executorch.extension.pybindings import portable_lib

    return portable_lib


def pool_threads() -> int:
    return int(held_stderr(_portable()._threadpool_get_thread_count))  # the first call probes the CPU


def size_pool(threads: int | None) -> str | None:
    """Size the XNNPACK pool before the first load of this process; a note when it is too late."""
    with _LOCK:
        return et_pool(threads)


def load_program(path: Path):
    found = runtime()  # BackendUnavailable, naming the extra, before anything imports executorch
    with _LOCK:
        et_pool(None)
    return found.load_program(Path(path))


def program_facts(path: Path) -> tuple[str | None, tuple[int, ...]]:
    """(precision, input shape) an edgeresnet .pte declares: None for a program without our
    constant methods (a .pte made elsewhere)."""
    program = load_program(path)
    shape = tuple(int(d) for d in program.metadata("forward").input_tensor_meta(0).sizes())
    if PRECISION_METHOD not in program.method_names or FORMAT_METHOD not in program.method_names:
        return None, shape
    int8 = program.load_method(PRECISION_METHOD).execute([])[0]
    return ("int8" if bool(int8) else "fp32"), shape


def batch_runner(path: Path):
    """A callable float32 NCHW batch -> logits over a batch-1 program (image by image). Not
    thread-safe: one program's methods share their memory arenas."""
    import torch

    if not Path(path).is_file():
        raise BackendUnavailable(f"{path} does not exist")
    program = load_program(path)
    forward = program.load_method("forward")
    chw = tuple(int(d) for d in program.metadata("forward").input_tensor_meta(0).sizes())[1:]

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[1:] != chw:
            raise ValueError(f"input shape {x.shape[1:]} != the program's {chw}")
        out = [forward.execute([torch.from_numpy(x[i:i + 1])])[0].numpy() for i in range(len(x))]
        return np.concatenate(out) if len(out) != 1 else out[0]

    return run
