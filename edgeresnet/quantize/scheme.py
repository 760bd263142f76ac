"""The quantization scheme's math, in one place: symmetric grids, per-channel weight scales,
quantize and dequantize as ONNX's QuantizeLinear / DequantizeLinear compute them.

Activations get ``scale = amax / QMAX`` from a calibration threshold (calibrate/ measures the
thresholds); weights get their exact per-channel range. Everything that rounds to the int8
grid (the QDQ emitter, the calibration table's scales, the tuner's method choice) uses these.
Biases that a runtime adds in int32 (``Profile.quantize_bias``) sit on the product of the
input's and each weight channel's scale.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, UsageError

# The scale of an all-zero weight channel (ONNX Runtime's choice for a zero range). Its
# weights quantize to 0 at any scale, but an int32 bias is quantized with
# activation_scale * weight_scale: a tiny weight scale would saturate that channel's bias.
ZERO_CHANNEL_SCALE = 1.0


def qmax(num_bits: int, most: int = 16) -> int:
    """The largest level of a symmetric ``num_bits`` grid: 2**(num_bits-1) - 1 (127 at 8 bits)."""
    if isinstance(num_bits, bool) or not isinstance(num_bits, (int, np.integer)) or not 2 <= num_bits <= most:
        raise UsageError(f"num_bits must be an integer from 2 to {most}, got {num_bits!r}", hint="use 8 for INT8")
    return (1 << (int(num_bits) - 1)) - 1


QMAX = qmax(8)  # symmetric int8: [-127, 127], -128 unused (TensorRT's rule)


def weight_scales(w: np.ndarray, axis: int = 0, num_bits: int = 8) -> np.ndarray:
    """Per-output-channel symmetric scales: max |w| over every axis but ``axis``, over qmax (127 at 8 bits).

    Weights are static, so their exact range is used (no clipping). An all-zero channel gets
    :data:`ZERO_CHANNEL_SCALE`. Non-finite weights are an error: no scale can represent them.
    """
    top = qmax(num_bits, most=8)
    w = np.asarray(w)
    if w.ndim == 0 or not -w.ndim <= axis < w.ndim:
        raise UsageError(f"axis {axis} is out of range for a weight of shape {w.shape}",
                         hint="pass the output-channel axis (0 for Conv)")
    if not np.all(np.isfinite(w)):
        raise InputError("the weights contain NaN or Inf", hint="the checkpoint is broken: retrain or re-export it")
    others = tuple(d for d in range(w.ndim) if d != axis % w.ndim)
    amax = np.max(np.abs(w), axis=others, initial=0.0).astype(np.float64)
    scales = (amax / top).astype(np.float32)
    # A range so small that its scale is no normal float32 (0 included) is treated as zero.
    return np.where(scales >= np.finfo(np.float32).tiny, scales, np.float32(ZERO_CHANNEL_SCALE))


def _checked_scale(scale) -> np.ndarray:
    s = np.asarray(scale, dtype=np.float32)
    if not np.all(np.isfinite(s) & (s > 0)):
        raise InputError("quantization scales must be positive and finite",
                         hint="recalibrate: the calibration table holds a zero, negative or non-finite scale")
    return s


def quantize_symmetric(x: np.ndarray, scale, num_bits: int = 8) -> np.ndarray:
    """``clip(round(x / scale), -qmax, qmax)`` as int8, the way QuantizeLinear computes it.

    float32 arithmetic, rounding half to even; the range is symmetric ([-127, 127] at 8 bits,
    -128 unused, as TensorRT requires). ``scale`` is a scalar or broadcasts against ``x``.
    NaN maps to 0.
    """
    top = qmax(num_bits, most=8)
    v = np.rint(np.asarray(x, dtype=np.float32) / _checked_scale(scale))
    return np.where(np.isnan(v), 0, np.clip(v, -top, top)).astype(np.int8)


def dequantize(q: np.ndarray, scale) -> np.ndarray:
    """``q * scale`` in float32, the inverse of :func:`quantize_symmetric` up to rounding."""
    return np.asarray(q, dtype=np.float32) * _checked_scale(scale)


def quantize_bias(b: np.ndarray, input_scale: float, channel_scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 biases and their per-channel scales ``input_scale * channel_scales``: the grid of a
    QLinearConv's int32 accumulator, so the bias adds to it exactly. Rounded half to even in
    float64, clipped to int32; the scales are returned in float32, as DequantizeLinear stores them."""
    scales = float(input_scale) * np.asarray(channel_scales).astype(np.float64)
    q = np.clip(np.round(np.asarray(b).astype(np.float64) / scales), -2**31, 2**31 - 1).astype(np.int32)
    return q, scales.astype(np.float32)
