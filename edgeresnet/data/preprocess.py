"""The preprocessing spec: any image (gray, RGB, RGBA, palette, any size) -> the model's input.

numpy + Pillow only, so the torch-free runtime on the device computes exactly what training
and export computed. The spec travels with every checkpoint and export.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ..errors import InputError
from ..limits import MAX_SIDE, check_count

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """Convert to ``channels``, resize the shorter side to ``resize``, center-crop ``size``,
    scale to 0..1, then subtract ``mean`` and divide by ``std`` per channel."""

    channels: int
    size: int
    resize: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise InputError(f"preprocessing supports 1 or 3 channels, not {self.channels}")
        check_count("the preprocessing input size", self.size, MAX_SIDE)
        if self.resize is not None:
            check_count("the preprocessing resize", self.resize, MAX_SIDE)
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise InputError("preprocessing mean/std need one value per channel")
        if not all(np.isfinite(v) for v in self.mean) or not all(np.isfinite(v) and v > 0 for v in self.std):
            raise InputError(f"preprocessing needs finite means and positive finite stds, got mean {self.mean} "
                             f"std {self.std}", hint="a std of 0 divides every pixel by zero")
        if self.interpolation not in _RESAMPLE:
            raise InputError(f"unknown interpolation {self.interpolation!r}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        """From a checkpoint's or manifest's JSON; anything missing or mistyped is an InputError."""
        try:
            return cls._from_dict(d)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"the preprocessing spec is malformed ({type(exc).__name__}: {exc})",
                             hint="re-export the model; its metadata must not be edited by hand") from None

    @classmethod
    def _from_dict(cls, d: dict) -> "Preprocess":
        return cls(channels=int(d["channels"]), size=int(d["size"]),
                   resize=None if d.get("resize") is None else int(d["resize"]),
                   mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]),
                   interpolation=d.get("interpolation", "bilinear"))

    def with_overrides(self, overrides: dict | None) -> "Preprocess":
        """This spec with some fields replaced (``--mean/--std/--size/--resize/--interpolation``
        or a ``--preprocess`` JSON file); the result is checked like any spec."""
        if not overrides:
            return self
        unknown = set(overrides) - set(self.to_dict())
        if unknown:
            raise InputError(f"unknown preprocessing fields {sorted(unknown)}",
                             hint=f"use {', '.join(self.to_dict())}")
        return Preprocess.from_dict({**self.to_dict(), **overrides})

    def pil_mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """Geometry and colour only: an HWC uint8 array of ``size`` x ``size``."""
        image = to_mode(image, self.pil_mode())
        w, h = image.size
        resample = _RESAMPLE[self.interpolation]
        if self.resize is not None:
            if min(w, h) != self.resize:
                scale = self.resize / min(w, h)
                w, h = max(self.size, round(w * scale)), max(self.size, round(h * scale))
                image = image.resize((w, h), resample)
        elif (w, h) != (self.size, self.size):
            image = image.resize((self.size, self.size), resample)
            w, h = self.size, self.size
        if (w, h) != (self.size, self.size):
            left, top = int(round((w - self.size) / 2.0)), int(round((h - self.size) / 2.0))
            image = image.crop((left, top, left + self.size, top + self.size))
        arr = np.asarray(image, dtype=np.uint8)
        return arr[:, :, None] if arr.ndim == 2 else arr

    def normalize(self, batch_hwc: np.ndarray) -> np.ndarray:
        """uint8 NHWC (channels 1 or ``channels``) -> float32 NCHW model input."""
        if batch_hwc.shape[-1] != self.channels:
            if batch_hwc.shape[-1] == 1 and self.channels == 3:
                batch_hwc = np.repeat(batch_hwc, 3, axis=-1)  # same as Pillow's L -> RGB
            else:
                raise InputError(f"images have {batch_hwc.shape[-1]} channels, the model takes {self.channels}")
        x = batch_hwc.astype(np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        x = (x - mean) / std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One image -> float32 CHW."""
        return self.normalize(self.to_uint8(image)[None])[0]

    def pad_value(self) -> np.ndarray:
        """What a black pixel becomes after normalisation (the fill for padded crops)."""
        return -np.asarray(self.mean, dtype=np.float32) / np.asarray(self.std, dtype=np.float32)


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Pillow conversion with the awkward modes handled: palette with transparency goes
    through RGBA, alpha is dropped, 16-bit and float gray is rescaled instead of clipped."""
    if image.mode == mode:
        return image
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    return image.convert(mode)
