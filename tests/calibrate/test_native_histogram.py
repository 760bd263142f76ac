"""The compiled histogram loops (calibrate/_histogram.c via native.py) count exactly what numpy does,
build once into the user's cache, and step aside when they cannot be built."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeresnet.calibrate import native
from edgeresnet.calibrate.observers import METHODS, HistogramObserver

needs_library = pytest.mark.skipif(native.library() is None,
                                   reason="no C compiler here: the observers run their numpy path only")


def _observe(batches, compiled: bool, monkeypatch) -> HistogramObserver:
    monkeypatch.setenv(native.ENV, "1" if compiled else "0")
    o = HistogramObserver()
    for b in batches:
        o.update(b)
    return o


def _same(a: HistogramObserver, b: HistogramObserver, thresholds: bool = True) -> None:
    assert np.array_equal(a.histogram, b.histogram)
    assert (a.count, a.zeros, a.nonfinite, a.max_abs, a.upper) == (b.count, b.zeros, b.nonfinite, b.max_abs, b.upper)
    if thresholds:  # a function of the above; the searches cost milliseconds each
        assert [a.amax(m) for m in METHODS] == [b.amax(m) for m in METHODS]


def test_a_machine_that_compiles_c_uses_the_compiled_loops(tmp_path):
    """CI's machines have gcc and libc's headers: a silent fallback to numpy there would hide a
    broken build. (A compiler without the C library's headers cannot build it, and is skipped.)"""
    cc = native.compiler()
    if cc is None:
        pytest.skip("no C compiler on PATH")
    probe = tmp_path / "probe.c"
    probe.write_text("#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\nint f(void) { return 0; }\n")
    if subprocess.run([cc, *native.FLAGS, "-o", str(tmp_path / "probe.so"), str(probe)], capture_output=True).returncode:
        pytest.skip(f"{cc} cannot build a shared library with the C library's headers here")
    assert native.library() is not None, f"{cc} builds C here, but {native.SOURCE.name} did not build"


def _awkward_batches() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    relu = np.maximum(rng.standard_normal((2, 64, 28, 28)), 0).astype(np.float32)  # half exact zeros
    signed = (rng.standard_normal(100_003) * 3).astype(np.float32)  # not a multiple of 4 or of a block
    signed[[5, 77, 1000]] = [np.nan, np.inf, -np.inf]
    signed[[6, 8]] = [-0.0, 0.0]
    edges = (np.arange(-4096, 4096, dtype=np.float32) / 512)  # every value on a bin edge
    tiny = (rng.standard_normal(999) * 1e-38).astype(np.float32)  # subnormal-sized: the ldexp path
    grown = (rng.standard_normal(5000) * 1e4).astype(np.float32)  # widens the range by many doublings
    strided = rng.standard_normal((300, 40)).astype(np.float32).T  # not contiguous
    return [relu, signed, edges, tiny, np.zeros(10, np.float32), np.full(3, np.nan, np.float32),
            np.empty(0, np.float32), grown, strided]


@needs_library
def test_awkward_batches_give_the_numpy_observer_bit_for_bit(monkeypatch):
    batches = _awkward_batches()
    _same(_observe(batches, True, monkeypatch), _observe(batches, False, monkeypatch))
    for b in batches:  # and each alone, so no batch hides behind another's range
        _same(_observe([b], True, monkeypatch), _observe([b], False, monkeypatch))


@needs_library
@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.integers(0, 700), elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_any_float32_batch_gives_the_numpy_observer(x):
    with np.errstate(over="ignore"):
        batches = [x, x[::-1] * 2]  # the doubling may overflow to Inf: both paths must count it so
    with pytest.MonkeyPatch.context() as mp:
        _same(_observe(batches, True, mp), _observe(batches, False, mp), thresholds=False)


@needs_library
def test_the_library_is_cached_under_its_source_hash_and_built_by_rename(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    native._library.cache_clear()
    try:
        lib = native.library()
        assert lib is not None
        built = native.built_path()
        assert built.parent == tmp_path / "edgeresnet" and built.is_file()
        assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temporary left behind
        stamp = built.stat().st_mtime_ns
        native._library.cache_clear()
        assert native.library() is not None and built.stat().st_mtime_ns == stamp  # loaded, not rebuilt
    finally:
        native._library.cache_clear()


def test_a_failing_compiler_leaves_numpy_in_charge(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # found on PATH, chosen first, exits 1 without writing anything
    native._library.cache_clear()
    try:
        assert native.library() is None
        assert not list((tmp_path / "edgeresnet").iterdir())  # the failed build left nothing
        o = HistogramObserver()
        o.update(np.array([0.0, 1.5, -3.0, np.nan], np.float32))
        assert (o.count, o.zeros, o.nonfinite, o.max_abs) == (3, 1, 1, 3.0)
    finally:
        native._library.cache_clear()


@needs_library
def test_a_cache_that_cannot_be_written_builds_into_a_private_temporary_folder(tmp_path, monkeypatch):
    """No writable ~/.cache (a locked-down runner, a read-only home; here the cache path runs
    through a file, which stops root too): the library is built for this process in a folder only
    it knows (mkdtemp), not under a guessable name, and the folder is gone once it is loaded."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    native._library.cache_clear()
    try:
        lib = native.library()
        assert lib is not None
        home = Path(lib._name).parent
        assert home.name.startswith("edgeresnet-") and not home.exists()  # loaded, then removed
        o = HistogramObserver()
        o.update(np.array([0.0, 1.5, -3.0, np.nan], np.float32))  # runs from the removed file
        assert (o.count, o.zeros, o.nonfinite, o.max_abs, int(o.histogram.sum())) == (3, 1, 1, 3.0, 2)
    finally:
        native._library.cache_clear()
