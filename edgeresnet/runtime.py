"""Torch-free loading and prediction of an export bundle: numpy, Pillow and one runtime.

    from edgeresnet.runtime import load
    model = load("exports/default")              # verifies every file against edgeresnet.json
    model.predict(["shoe.png", "bag.jpg"])       # -> [Prediction(class_name="Sneaker", ...), ...]
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .backends import EngineOptions, backends, engine_options, get_backend, install_hint, resolve
from .backends.base import Artifact
from .bundle import Bundle
from .data import Preprocess
from .data.sources import open_image
from .host.machine import MAX_THREADS
from .errors import BackendUnavailable, InputError, PortabilityWarning, UsageError


@dataclass
class Prediction:
    image: str
    class_index: int
    class_name: str
    score: float  # softmax probability of the top class
    top_k: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class BundleModel:
    """One artifact of a bundle, loaded and ready. ``predict`` is safe from several threads."""

    def __init__(self, root: Path, manifest: dict, entry: dict, threads: int | None,
                 options: EngineOptions | None = None) -> None:
        self.root, self.manifest, self.entry = root, manifest, entry
        self.target, self.precision = entry["target"], entry["precision"]
        self.chosen_by = "asked"  # load() sets how it was chosen: "verified", "asked" or "unverified"
        self.preprocess = Preprocess.from_dict(manifest["preprocess"])
        self.classes: list[str] = list(manifest["classes"])
        backend = get_backend(self.target, options)
        artifact = Artifact(self.target, self.precision, root / entry["path"], {"variants": entry.get("variants") or {}})
        self._run = backend.load(artifact, threads)
        self.kernel: str | None = artifact.details.get("kernel")  # the INT8 kernel path taken here
        self.cpu_note = cpu_mismatch(manifest, entry, self.kernel)
        if self.cpu_note:
            warnings.warn(self.cpu_note, PortabilityWarning, stacklevel=3)
        # Engines that are not thread-safe (TensorRT: one CUDA context, one stream) run one call at a time.
        self._lock = None if backend.capabilities.thread_safe else threading.Lock()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        if self._lock is None:
            return self._run(batch)
        with self._lock:
            return self._run(batch)

    def preprocess_images(self, images: Sequence) -> np.ndarray:
        return np.stack([self.preprocess(_as_image(im)) for im in images]).astype(np.float32)

    def predict(self, images: Sequence, top_k: int = 5, batch_size: int = 32,
                names: Sequence[str] | None = None) -> list[Prediction]:
        """Classify paths, PIL images or arrays: one HW / HWC array is one image, an NHW(C)
        array a batch; uint8 arrays are 0..255, float arrays 0..1."""
        for flag, value in (("top_k", top_k), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UsageError(f"{flag} must be an integer >= 1, got {value!r}")
        images = _as_list(images)
        names = list(names) if names is not None else [str(im) if isinstance(im, (str, Path)) else f"image_{i}"
                                                       for i, im in enumerate(images)]
        if len(names) != len(images):
            raise UsageError(f"{len(names)} names for {len(images)} images")
        out: list[Prediction] = []
        k = max(1, min(top_k, len(self.classes)))
        for i in range(0, len(images), batch_size):
            probs = softmax(np.asarray(self.logits(self.preprocess_images(images[i:i + batch_size])), np.float64))
            for j, p in enumerate(probs):
                order = np.argsort(-p)[:k]
                top = [{"class_index": int(c), "class_name": self.classes[c], "score": float(p[c])} for c in order]
                out.append(Prediction(names[i + j], top[0]["class_index"], top[0]["class_name"], top[0]["score"], top))
        return out


def cpu_mismatch(manifest: dict, entry: dict, kernel: str | None) -> str | None:
    """A one-line note when this CPU takes another INT8 kernel path, or is of another class,
    than the one the bundle's accuracy was measured on; None when they match."""
    from .host.machine import cpu_class

    measured = manifest.get("measured_on") or {}
    was, now = measured.get("class"), cpu_class()
    was_kernel = entry.get("kernel")
    if entry.get("precision") != "int8" or (was in (None, now) and was_kernel in (None, kernel)):
        return None
    return (f"this bundle's {entry['target']} int8 numbers were measured on {measured.get('model', '?')} ({was}, kernel "
            f"{was_kernel}); this CPU is {now} (kernel {kernel}): run `edgeresnet eval BUNDLE` here to measure its drop")


def _as_list(images) -> list:
    """What ``predict`` iterates: one array is one image (HW, HWC) or a batch (NHW, NHWC) —
    never its rows; one path or PIL image is one image."""
    if isinstance(images, np.ndarray):
        if images.ndim == 2 or (images.ndim == 3 and images.shape[2] in (1, 3, 4) and images.shape[0] > 4):
            return [images]
        if images.ndim in (3, 4):
            return list(images)
        raise InputError(f"an image array has shape {images.shape}", hint="pass HW, HWC, NHW or NHWC")
    if isinstance(images, (str, Path, Image.Image)):
        return [images]
    try:
        return list(images)
    except TypeError:
        raise InputError(f"cannot read images from a {type(images).__name__}",
                         hint="pass paths, PIL images or numpy arrays") from None


def _as_image(item) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        return _array_image(item)
    if isinstance(item, (str, Path)):
        return open_image(Path(item))
    raise InputError(f"cannot read an image from a {type(item).__name__}", hint="pass paths, PIL images or numpy arrays")


def _array_image(a: np.ndarray) -> Image.Image:
    """HW or HWC (1, 3 or 4 channels) uint8 (0..255) or float (0..1) pixels."""
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or 0 in a.shape:
        raise InputError(f"an image array has shape {a.shape}", hint="pass HW or HWC with 1, 3 or 4 channels")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise InputError("a float image array must hold values from 0 to 1", hint="or pass uint8 (0..255)")
        a = np.round(a * 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.integer) or a.min() < 0 or a.max() > 255:
            raise InputError(f"an image array of {a.dtype} must hold 0..255", hint="pass uint8 or float 0..1")
        a = a.astype(np.uint8)
    return Image.fromarray(a)


def load(path: str | Path, target: str | None = None, precision: str | None = None,
         threads: int | None = None, verified: bool = True, options: Mapping[str, Any] | None = None) -> BundleModel:
    """Load one artifact of an export bundle, checking every file against ``edgeresnet.json``.

    With neither ``target`` (any alias) nor ``precision``: the fastest artifact that passed
    `edgeresnet verify` on this device (``bundle.choice``); with one of them, the fastest passed
    artifact matching it. Before any verification here: int8 on the first engine, in the
    registry's preference order (ort, openvino, trt), that the bundle has and this machine runs,
    with a note saying the bundle is unverified here. An artifact that failed verification runs
    only when both are given. ``verified=False`` (what `eval` measures): ignore verify.json.
    ``options``: the engines' own options by their keyword (e.g. ``{"device": "GPU"}`` for
    OpenVINO), as each engine declares them (its OptionSpecs); the rest take their defaults."""
    from .bundle.choice import DEFAULT_PRECISION, Choice, choose, say_once

    if threads is not None and not (isinstance(threads, int) and 1 <= threads <= MAX_THREADS):
        raise UsageError(f"threads must be an integer from 1 to {MAX_THREADS} (4x this machine's cores), got {threads!r}")
    root = Path(path)
    target = resolve(target) if target else None
    bundle = Bundle(root)
    per_engine = engine_options(options or {})
    choice = choose(root, target, precision) if verified else Choice(((target, precision or DEFAULT_PRECISION),), "asked")
    missing: dict[str, str] = {}  # engine -> why its runtime is not here
    for want_target, want_precision in choice.order:
        model = _first_runnable(bundle, want_target, want_precision, threads, missing, strict=choice.why != "verified",
                                options=per_engine)
        if model is not None:
            say_once(choice, root)
            model.chosen_by = choice.why
            return model
    wanted = "/".join(sorted({p for _, p in choice.order}))
    known = [t for t in missing if t in _engine_names()]
    raise BackendUnavailable(f"no runtime here for {root}'s {wanted} artifacts "
                             f"({'; '.join(f'{t}: {why}' for t, why in missing.items())})",
                             hint=" or ".join(install_hint(t) for t in known) or "install the engine's runtime")


def _engine_names() -> list[str]:
    return [c.name for c in backends()]


def _first_runnable(bundle: Bundle, target: str | None, precision: str, threads: int | None,
                    missing: dict[str, str], strict: bool, options: EngineOptions | None = None) -> BundleModel | None:
    """The first artifact of ``precision`` (on ``target``, or on any engine in preference order)
    whose runtime is here; ``strict``: refuse when the bundle has none of that kind."""
    manifest, root = bundle.manifest, bundle.root
    entries = [a for a in manifest["artifacts"] if a["precision"] == precision and (target is None or a["target"] == target)]
    if not entries and strict:
        have = ", ".join(sorted({f"{a['target']} {a['precision']}" for a in manifest["artifacts"]})) or "none"
        raise InputError(f"{root} has no {precision} artifact" + (f" for {target}" if target else ""),
                         hint=f"the bundle has: {have}")
    order = _engine_names()
    entries.sort(key=lambda a: order.index(a["target"]) if a["target"] in order else len(order))
    for entry in entries:
        known = entry["target"] in order
        reason = get_backend(entry["target"], options).unavailable_reason() if known else "an engine this edgeresnet does not know"
        if reason:
            missing[entry["target"]] = reason
            continue
        bundle.artifact(entry)
        return BundleModel(root, manifest, entry, threads, options)
    return None


def expand_images(items: Iterable[str]) -> list[Path]:
    """Files, folders (recursively) and glob patterns -> image paths, in a stable order."""
    from glob import glob

    from .data.sources import IMAGE_SUFFIXES

    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            paths.append(p)
        elif any(ch in item for ch in "*?["):
            matched = sorted(Path(m) for m in glob(item, recursive=True))
            if not matched:
                raise InputError(f"no files match {item!r}")
            paths += [m for m in matched if m.is_file()]
        else:
            raise InputError(f"image {item} does not exist")
    if not paths:
        raise InputError("no images given", hint="pass image files, folders or glob patterns")
    return paths
