"""The preprocessing spec: any image (gray, RGB, RGBA, palette, any size) -> the model's input.

numpy + Pillow only, so the torch-free runtime on the device computes exactly what training
and export computed. The spec travels with every checkpoint and export.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from ..errors import EdgeResNetError, InputError, UsageError
from ..core.limits import MAX_SIDE
from . import schema

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}

# The one schema of a spec, whether it comes from flags, a --preprocess file or a model's metadata.
FIELDS: dict[str, schema.FieldType] = {
    "channels": schema.OneOf((1, 3)), "size": schema.Integer(1, MAX_SIDE),
    "resize": schema.Integer(1, MAX_SIDE, nullable=True), "mean": schema.Numbers(),
    "std": schema.Numbers(positive=True), "interpolation": schema.OneOf(tuple(_RESAMPLE))}
REQUIRED = ("channels", "size", "mean", "std")
_EXAMPLE = {"channels": 3, "size": 224, "resize": 256, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "interpolation": "bilinear"}
REEXPORT = "re-export the model; its metadata must not be edited by hand"


@dataclass(frozen=True)
class Source:
    """Where preprocessing values came from, which decides how a wrong one is reported: a flag
    is a usage error (exit 2); the user's --preprocess file, a model's metadata or a spec built
    from the data are bad input (exit 3), each with the fix that fits it."""

    kind: Literal["flags", "file", "metadata", "spec"]
    name: str = ""  # the file, or what carries the metadata

    def show(self, value: Any) -> str:
        if self.kind == "flags":
            items = value if isinstance(value, (list, tuple)) else [value]
            return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in items)
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."

    def error(self, name: str | None, problem: str, hint: str | None = None) -> EdgeResNetError:
        """``name`` (a field, or None for the whole spec) ``problem``, as this source's error."""
        if self.kind == "flags":
            return UsageError(f"--{name} {problem}", hint=hint or _flag_fix(name))
        if self.kind == "file":
            fix = f'fix it in {self.name}, e.g. "{name}": {json.dumps(_EXAMPLE[name])}' if name in _EXAMPLE else \
                f"a JSON object with any of {', '.join(FIELDS)}"
            where = f'{self.name}: "{name}"' if name else self.name
            return InputError(f"{where} {problem}", hint=hint or fix)
        if self.kind == "metadata":
            spec = f"the preprocessing spec's {name}" if name else "the preprocessing spec"
            return InputError(f"{self.name}: {spec} {problem}", hint=REEXPORT)
        return InputError(f"the preprocessing {name or 'spec'} {problem}",
                          hint=hint or "pass --size/--mean/--std (or --input-size) within these bounds")

    def wrong(self, name: str, value: Any) -> EdgeResNetError:
        kind = FIELDS[name]
        return self.error(name, f"must be {kind.expected(self.kind == 'flags')}, got {self.show(value)}")


def _flag_fix(name: str) -> str:
    example = _EXAMPLE[name]
    if isinstance(example, list):
        return f"one value per channel, e.g. --{name} 0.5 for a gray model, {','.join(map(str, example))} for RGB"
    return f"e.g. --{name} {example}, or leave it out to keep the model's own"


FLAGS = Source("flags")
METADATA = Source("metadata", "the model's metadata")


def read_fields(spec: Any, source: Source) -> dict[str, Any]:
    """Each field of ``spec`` through its type; an unknown or mistyped one is ``source``'s error."""
    if not isinstance(spec, Mapping):
        raise source.error(None, "is not a JSON object")
    unknown = [k for k in spec if k not in FIELDS]
    if unknown:
        raise source.error(str(unknown[0]), "is not a preprocessing field", hint=f"the fields are {', '.join(FIELDS)}")
    values = {}
    for name, value in spec.items():
        try:
            values[name] = FIELDS[name].convert(value)
        except ValueError:
            raise source.wrong(name, value) from None
    return values


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("s" if n != 1 else "")


def _per_channel(values: dict[str, Any], sources: Mapping[str, Source], default: Source) -> None:
    """One mean and one std per channel; a mismatch blames the field that was given (a --mean of
    three values for a gray model), else the "channels" that changed under them."""
    n = values["channels"]
    for name in ("mean", "std"):
        k = len(values[name])
        if k == n:
            continue
        if name in sources or "channels" not in sources:
            source = sources.get(name, default)
            example = f", e.g. --{name} {','.join(['0.5'] * n)}" if source.kind == "flags" else ""
            raise source.error(name, f"has {_count(k, 'value')}; the model takes {_count(n, 'channel')}",
                               hint=f"give one value per channel{example}")
        raise sources["channels"].error("channels", f"is {n} but {name} has {_count(k, 'value')}",
                                        hint="give mean and std with one value per channel too")


@dataclass(frozen=True)
class Overrides:
    """Fields to replace in a spec, each already of its type, and where each came from (a flag or
    the user's --preprocess file): the check that needs the model (one mean per channel) comes
    later and must still blame the right one."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.values.items()}


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
        """A spec built in code (from the data, a zoo name, an ONNX input) meets the same schema."""
        values = read_fields(asdict(self), Source("spec"))
        _per_channel(values, {}, Source("spec"))
        for name, value in values.items():  # canonical types: a numpy int from a shape becomes an int
            object.__setattr__(self, name, value)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, source: Source = METADATA) -> "Preprocess":
        """From a checkpoint's, manifest's or ONNX model's metadata (or any ``source``): every
        field through its type; anything missing, unknown or mistyped is ``source``'s error."""
        values = read_fields(d, source)
        missing = [name for name in REQUIRED if name not in values]
        if missing:
            raise source.error(missing[0], "is missing")
        _per_channel({"resize": None, "interpolation": "bilinear", **values}, {}, source)
        return cls(**values)

    def with_overrides(self, overrides: Overrides | None, channels: int | None = None) -> "Preprocess":
        """This spec with some fields replaced (``--mean/--std/--size/--resize/--interpolation``
        or a ``--preprocess`` JSON file) for a model of ``channels`` inputs (None: the spec's
        own, or a file's "channels"). A mismatch is the error of the source that gave it."""
        overrides = overrides or Overrides()
        values = {**self.to_dict(), **overrides.values}
        if channels is not None and values["channels"] != channels:
            source = overrides.sources.get("channels", METADATA)
            raise source.error("channels", f"is {values['channels']}; the model takes {_count(channels, 'channel')}",
                               hint=f'drop "channels" or set it to {channels}' if source.kind == "file" else None)
        if not overrides:
            return self
        _per_channel(values, overrides.sources, METADATA)
        return Preprocess(**values)

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
