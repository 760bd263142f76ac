"""Activation statistics for symmetric INT8 calibration: the clipping thresholds (amax).

The scheme is TensorRT's: int8, zero point 0, ``scale = amax / 127`` (quantize.scheme). An
observer streams |x| into a fixed-size histogram, so memory stays bounded for any number of
batches (ONNX Runtime's calibrators keep whole histograms or tensors per batch and run out of
memory);
``amax`` then reads a clipping threshold off it with one of :data:`METHODS`.

The histogram covers ``[0, upper)`` where ``upper`` is the smallest power of two above the
largest |x| seen. Binning is then a multiplication by a power of two (exact in floating
point) and growing the range doubles it, merging bins in pairs; so the histogram depends only
on the data, never on how it was split into batches or in which order they came.

No torch here: this runs in ONNX Runtime's calibration loop. An update's two loops over a float32
batch run compiled where this machine could build them (native.py, _histogram.c), in numpy
otherwise: the same counts either way.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import threading

import numpy as np

from ..errors import UsageError
from ..quantize.scheme import qmax as _qmax
from . import native

METHODS = ("minmax", "percentile", "entropy", "mse")
DEFAULT_BINS = 2048

# The floor on every activation amax. An observer that saw nothing, only zeros, or whose
# percentile falls among exact zeros would otherwise give amax 0 and a zero scale, which
# QuantizeLinear divides by. 1e-6 is far below any real activation range, and far enough above
# float32's subnormals that amax / 127 and its reciprocal are ordinary float32 numbers.
MIN_AMAX = 1e-6

# Entropy: the pseudo-count given to an empty last bin that receives clipped values, where
# TensorRT's reference rejects the candidate outright (KL = inf). Rejection means an isolated
# outlier can never be clipped; a pseudo-count (MXNet's smoothing constant) makes clipping it
# cost about (clipped / total) * log(clipped / 1e-4): cheap for a few values, prohibitive for many.
_EMPTY_BIN_PSEUDOCOUNT = 1e-4
_MSE_CHUNK = 32  # candidate thresholds evaluated at once: a 32 x bins temporary stays in cache
# Inside shared_tables(), the mse search reads per-bin errors off one width-1 table (see _mse)
# for histograms of up to this many bins (2048 x 2048 float64: 32 MB), at widths where scaling it
# is exact: the smallest non-zero intermediate is about 2**-194 and the largest about 2**96, times
# width**3.
_MSE_TABLE_BINS = 2048
_UNIT_WIDTHS = (2.0**-250, 2.0**250)
_tables: dict[tuple[int, int], np.ndarray] = {}  # (qmax, nbins) -> width-1 errors, while shared
_table_users = 0
_table_lock = threading.Lock()
_SCALE_SHIFTS = 100  # |shift| below this: 2**shift is a normal float32 and binning is a multiply
_BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}  # same-width integer views


class HistogramObserver:
    """Streams |x| of one tensor, batch by batch, into ``nbins`` bins; never stores raw values.

    Exact zeros and non-finite values are counted apart from the histogram: zeros because
    they quantize exactly at any scale (ReLU outputs are mostly zeros, and a zero spike in
    bin 0 would steer entropy towards clipping), NaN/Inf so they cannot poison the range.
    """

    def __init__(self, nbins: int = DEFAULT_BINS) -> None:
        if isinstance(nbins, bool) or not isinstance(nbins, (int, np.integer)) or nbins < 2 or nbins & (nbins - 1):
            raise UsageError(f"nbins must be a power of two, got {nbins!r}", hint=f"the default is {DEFAULT_BINS}")
        self._nbins = int(nbins)
        self._log2_bins = self._nbins.bit_length() - 1
        self._hist = np.zeros(self._nbins, dtype=np.int64)  # counts of non-zero finite |x|
        self._exp: int | None = None  # upper == 2**_exp; None until a non-zero value arrives
        self._count = 0
        self._zeros = 0
        self._nonfinite = 0
        self._max_abs = 0.0

    @property
    def nbins(self) -> int:
        return self._nbins

    @property
    def count(self) -> int:
        """Finite values seen, zeros included."""
        return self._count

    @property
    def zeros(self) -> int:
        """Exact zeros seen (not in the histogram)."""
        return self._zeros

    @property
    def nonfinite(self) -> int:
        """NaN and +-Inf values seen (in neither the histogram nor ``count``)."""
        return self._nonfinite

    @property
    def max_abs(self) -> float:
        """The exact largest finite |x| seen; 0.0 before any."""
        return self._max_abs

    @property
    def upper(self) -> float:
        """The histogram's range ``[0, upper)``; 0.0 before any non-zero value."""
        return 0.0 if self._exp is None else math.ldexp(1.0, self._exp)

    @property
    def bin_width(self) -> float:
        return self.upper / self._nbins

    @property
    def histogram(self) -> np.ndarray:
        """A read-only view of the bin counts of the non-zero finite |x|."""
        view = self._hist.view()
        view.flags.writeable = False
        return view

    def update(self, x: np.ndarray) -> None:
        """Add one batch of any shape and dtype. float32 goes through the compiled loops where this
        machine could build them (native.py), anything else through numpy: the same counts."""
        x = np.asarray(x)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)  # also keeps abs(int8(-128)) from overflowing
        if x.size == 0:
            return
        lib = native.library() if x.dtype == np.float32 else None
        if lib is not None:
            x = np.ascontiguousarray(x)
            a = None
            count, zeros, nonfinite, top = native.scan(lib, x)
        else:
            a, count, zeros, nonfinite, top = _finite_abs(x)
        if not self._account(count, zeros, nonfinite, top):
            return
        # Scaling by a power of two is exact, so each value lands in the same bin whatever the
        # batching; truncation is floor for non-negative values.
        shift = self._log2_bins - self._exp
        if a is None and abs(shift) < _SCALE_SHIFTS:
            counts = native.bin_counts(lib, x, math.ldexp(1.0, shift), self._nbins)
            counts[0] -= nonfinite  # the compiled loop counts NaN/Inf in bin 0, as it does zeros
        else:
            counts = _bins(_finite_abs(x)[0] if a is None else a, shift, self._nbins)
        counts[0] -= zeros
        self._hist += counts

    def _account(self, count: int, zeros: int, nonfinite: int, top: float) -> bool:
        """Take in one batch's statistics; False when it holds no non-zero finite value to bin."""
        self._nonfinite += nonfinite
        self._count += count
        self._zeros += zeros
        if top == 0.0:
            return False
        self._max_abs = max(self._max_abs, top)
        exp = math.frexp(top)[1]  # top < 2**exp
        if self._exp is None:
            self._exp = exp
        elif exp > self._exp:
            self._grow(exp)
        return True

    def merge(self, other: "HistogramObserver") -> None:
        """Add what ``other`` saw of the same tensor (another thread's batches). Exact: the result
        is the observer that streamed both its own and ``other``'s batches."""
        if other.nbins != self._nbins:
            raise UsageError(f"cannot merge a {other.nbins}-bin histogram into a {self._nbins}-bin one")
        self._count += other.count
        self._zeros += other.zeros
        self._nonfinite += other.nonfinite
        self._max_abs = max(self._max_abs, other.max_abs)
        if other._exp is None:
            return
        if self._exp is None:
            self._exp = other._exp
        elif other._exp > self._exp:
            self._grow(other._exp)
        self._hist += _widened(other._hist, self._exp - other._exp)

    def _grow(self, exp: int) -> None:
        """Widen the range to 2**exp, merging 2**k adjacent bins: counts stay exact."""
        self._hist = _widened(self._hist, exp - self._exp)
        self._exp = exp

    def amax(self, method: str, percentile: float = 99.99, num_bits: int = 8) -> float:
        """The clipping threshold (scale = amax / (2**(num_bits-1) - 1)) chosen by ``method``.

        ``minmax``: the exact max |x|. ``percentile``: that percentile of |x| (zeros included),
        interpolated linearly within its bin. ``entropy``: TensorRT's KL-divergence search.
        ``mse``: the threshold minimizing the expected squared quantization error. Entropy and
        mse answer a bin's upper edge. Never above the max |x| seen; never below
        :data:`MIN_AMAX`, so never 0, also for an observer that saw nothing or only zeros.
        """
        if method not in METHODS:
            close = difflib.get_close_matches(str(method), METHODS, n=1)
            raise UsageError(f"unknown calibration method {method!r}" + (f"; did you mean {close[0]}?" if close else ""),
                             hint=f"methods: {', '.join(METHODS)}")
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)) \
                or not 0.0 < float(percentile) <= 100.0:
            raise UsageError(f"percentile must be in (0, 100], got {percentile!r}", hint="e.g. 99.99")
        qmax = _qmax(num_bits)
        if self._exp is None:  # nothing seen, or only zeros
            return MIN_AMAX
        n = int(np.flatnonzero(self._hist)[-1]) + 1  # bins up to the one holding max |x|
        hist, width = self._hist[:n], self.bin_width
        if method == "minmax":
            value = self._max_abs
        elif method == "percentile":
            value = _percentile(hist, width, self._zeros, self._count, float(percentile))
        elif method == "entropy":
            value = _entropy(hist, width, qmax + 1)
        else:
            value = _mse(hist, width, qmax, self._nbins)
        return float(max(min(value, self._max_abs), MIN_AMAX))


def _finite_abs(x: np.ndarray) -> tuple[np.ndarray, int, int, int, float]:
    """(the finite |x| as our own flat copy, their number, exact zeros among them, NaN/Inf values,
    the largest finite |x| or 0.0): the numpy path's statistics."""
    a = np.abs(x).ravel()
    top = float(a.max())
    nonfinite = 0
    if not math.isfinite(top):  # NaN or Inf somewhere (max propagates both): count and drop them
        finite = np.isfinite(a)
        nonfinite = a.size - int(np.count_nonzero(finite))
        a = a[finite]
        top = float(a.max()) if a.size else 0.0
    # |x| has no -0.0, so a value is zero exactly when its bits are: numpy counts non-zero
    # integers about 3x faster than non-zero floats.
    zeros = a.size - int(np.count_nonzero(a.view(_BITS[a.dtype])))
    return a, a.size, zeros, nonfinite, top


def _bins(a: np.ndarray, shift: int, nbins: int) -> np.ndarray:
    """Counts of ``trunc(a * 2**shift)`` over ``nbins`` bins; ``a`` (finite, non-negative, our own
    copy) may be overwritten."""
    if abs(shift) < _SCALE_SHIFTS:  # 2**shift is an ordinary float32: a multiply, 6x faster than ldexp
        # Multiplied in a's own type and truncated on the way out: astype's result in one pass.
        index = np.multiply(a, a.dtype.type(math.ldexp(1.0, shift)), out=np.empty(a.size, np.intp),
                            casting="unsafe")
    else:  # subnormal-sized activations: 2**shift itself would overflow float32
        index = np.ldexp(a, shift, out=a).astype(np.intp)
    return np.bincount(index, minlength=nbins)


def _widened(hist: np.ndarray, k: int) -> np.ndarray:
    """``hist`` over a range 2**k times as wide: each 2**k adjacent bins merged into one, at the start."""
    if k == 0:
        return hist.copy()
    out = np.zeros_like(hist)
    if k >= hist.size.bit_length() - 1:
        out[0] = hist.sum()
    else:
        merged = hist.reshape(-1, 1 << k).sum(axis=1)
        out[: merged.size] = merged
    return out


def _percentile(hist: np.ndarray, width: float, zeros: int, count: int, percentile: float) -> float:
    rank = percentile / 100.0 * count - zeros  # rank among the non-zero values
    if rank <= 0:
        return 0.0
    cum = np.cumsum(hist)
    j = min(int(np.searchsorted(cum, rank)), hist.size - 1)  # first bin with cum >= rank
    below = float(cum[j - 1]) if j else 0.0
    return (j + (rank - below) / float(hist[j])) * width


def _entropy(hist: np.ndarray, width: float, levels: int) -> float:
    """TensorRT's entropy calibration (GTC 2017, "8-bit Inference with TensorRT").

    For each candidate i >= ``levels`` bins: P is the first i bins with everything beyond
    added to bin i-1; Q quantizes the in-range bins [0, i) into ``levels`` groups and spreads
    each group's total evenly over its non-empty bins. (Q is built from the in-range bins,
    not from P: quantizing P itself makes Q == P at i == levels, so KL would always pick the
    smallest threshold.) The threshold is the upper edge of bin i-1 for the i minimizing
    KL(P || Q), the largest such i on ties, as NVIDIA's reference does.

    All candidates at once, from prefix sums: with G_k, Z_k the total and non-empty count of
    group k, sum_j P_j log Q_j = sum_k G_k log(G_k / Z_k) + clipped * log Q_{i-1}.
    """
    n = hist.size
    if n <= levels:  # the quantizer is at least as fine as the histogram: nothing to trade
        return n * width
    h = hist.astype(np.float64)
    total = h.sum()
    i = np.arange(levels, n + 1)
    cum = np.concatenate(([0.0], np.cumsum(h)))
    nonempty = np.concatenate(([0], np.cumsum(h > 0)))
    hlogh = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
    cum_hlogh = np.concatenate(([0.0], np.cumsum(hlogh)))
    # Group k of candidate i holds bins j with j * levels // i == k: j in [ceil(k i / L), ceil((k+1) i / L)).
    k = np.arange(levels + 1)
    bounds = -((-k[None, :] * i[:, None]) // levels)
    G = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]
    Z = nonempty[bounds[:, 1:]] - nonempty[bounds[:, :-1]]
    clipped = total - cum[i]
    last = h[i - 1]
    empty_last = (last == 0) & (clipped > 0)
    p_last = last + clipped
    with np.errstate(divide="ignore", invalid="ignore"):
        p_log_p = cum_hlogh[i - 1] + np.where(p_last > 0, p_last * np.log(p_last), 0.0)
        p_log_q = np.where(G > 0, G * (np.log(G) - np.log(np.maximum(Z, 1))), 0.0).sum(axis=1)
        q_last = np.where(empty_last, _EMPTY_BIN_PSEUDOCOUNT, np.where(last > 0, G[:, -1] / Z[:, -1], 1.0))
        p_log_q += clipped * np.log(q_last)
        q_total = cum[i] + _EMPTY_BIN_PSEUDOCOUNT * empty_last
        kl = (p_log_p - p_log_q) / total - np.log(total) + np.log(q_total)
    kl[q_total <= 0] = np.inf  # everything clipped: Q is empty
    best = kl.size - 1 - int(np.argmin(kl[::-1]))
    return float(i[best]) * width


def _mse(hist: np.ndarray, width: float, qmax: int, nbins: int) -> float:
    """The bin edge T minimizing E[(|x| - Q_T(|x|))^2], values uniform within each bin.

    Q_T rounds to multiples of s = T / qmax and clips at T. With E(x) = integral_0^x err^2,
    E = s^3 (n/12 + r^3/3) for x <= T (n = round(x/s), r = x/s - n) plus (x - T)^3 / 3 beyond,
    and a bin [a, b) holding c values contributes c (E(b) - E(a)) / (b - a). Exact zeros add
    no error at any T, so they are left out. Every bin edge is a candidate.

    The width is a power of two, so every intermediate at width w is w, w**2 or w**3 times its
    value at width 1, exactly, as long as it stays a normal float64 (guarded by _UNIT_WIDTHS):
    the errors are w**3 times the width-1 errors, bit for bit, with the same argmin. The width-1
    per-bin errors are the same for every tensor, so inside shared_tables() they are computed
    once; a tensor then costs only its dot products, in the same 32-row calls as the direct search.
    """
    n = hist.size
    h = hist.astype(np.float64)
    table = _unit_errors(qmax, nbins) if _UNIT_WIDTHS[0] <= width <= _UNIT_WIDTHS[1] else None
    if table is not None:

        def rows(start: int, stop: int) -> np.ndarray:
            return np.ascontiguousarray(table[start:stop, :n])
    else:
        edges = np.arange(n + 1) * width

        def rows(start: int, stop: int) -> np.ndarray:
            return _per_bin_errors(edges, edges[start + 1:stop + 1, None], qmax)
    err = np.empty(n)
    for start in range(0, n, _MSE_CHUNK):
        stop = min(start + _MSE_CHUNK, n)
        err[start:stop] = rows(start, stop) @ h
    return (int(np.argmin(err)) + 1) * width


def _per_bin_errors(edges: np.ndarray, t: np.ndarray, qmax: int) -> np.ndarray:
    """The error each bin between ``edges`` contributes per value it holds (columns), for each
    candidate threshold in the column ``t`` (rows)."""
    step = t / qmax
    u = np.minimum(edges, t) / step
    rounded = np.rint(u)
    u -= rounded
    cubed = u * u * u
    beyond = np.maximum(edges - t, 0.0)
    beyond_cubed = beyond * beyond * beyond
    # Differences of each term apart (the n/12 term in exact integers): the antiderivative
    # itself grows along the range and its differences would lose digits to cancellation.
    per_bin = step * step * step * (np.diff(rounded, axis=1) / 12.0 + np.diff(cubed, axis=1) / 3.0)
    per_bin += np.diff(beyond_cubed, axis=1) / 3.0
    return per_bin


@contextlib.contextmanager
def shared_tables():
    """Within the block, every observer's mse search reads one width-1 error table (built on first
    use: 32 MB and about one tensor's direct search for 2048 bins) instead of recomputing it per
    tensor; it is freed when the last block ends. The thresholds are the same, bit for bit."""
    global _table_users
    with _table_lock:
        _table_users += 1
    try:
        yield
    finally:
        with _table_lock:
            _table_users -= 1
            if not _table_users:
                _tables.clear()


def _unit_errors(qmax: int, nbins: int) -> np.ndarray | None:
    """_per_bin_errors at width 1 for all ``nbins`` candidates over ``nbins`` bins (read-only);
    None outside shared_tables() or for histograms over _MSE_TABLE_BINS bins."""
    with _table_lock:  # the threshold search runs tensors in threads: build the table once, not once each
        if not _table_users or nbins > _MSE_TABLE_BINS:
            return None
        if (qmax, nbins) not in _tables:
            edges = np.arange(nbins + 1, dtype=np.float64)
            table = np.empty((nbins, nbins))
            for start in range(0, nbins, _MSE_CHUNK):
                stop = start + _MSE_CHUNK
                table[start:stop] = _per_bin_errors(edges, edges[start + 1:stop + 1, None], qmax)
            table.flags.writeable = False
            _tables[qmax, nbins] = table
        return _tables[qmax, nbins]
