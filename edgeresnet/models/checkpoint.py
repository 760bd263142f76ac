"""Checkpoints: weights plus everything needed to rebuild and feed the model.

Loading never executes code from the file: ``.safetensors`` holds tensors only, and ``.pt``
files go through ``torch.load(weights_only=True)``, which refuses pickles that import
anything beyond tensors and plain containers. A plain torchvision-style state_dict loads
too, given ``arch``.
"""

from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..data.preprocess import Preprocess, Source
from ..data.sources import user_path
from ..errors import InputError, require
from ..core.limits import MAX_CLASSES, check_count
from .registry import build_model, get_arch
from ..core.outdir import atomic_write

FORMAT = "edgeresnet-checkpoint/1"
IMAGENET_PREPROCESS = Preprocess(channels=3, size=224, resize=256, mean=(0.485, 0.456, 0.406),
                                 std=(0.229, 0.224, 0.225))


@dataclass
class ModelMeta:
    """What travels with the weights."""

    arch: str
    num_classes: int
    in_channels: int
    preprocess: Preprocess
    classes: list[str]
    small_input: bool = False
    shortcut: str = "B"
    train: dict[str, Any] = field(default_factory=dict)  # command, seed, recipe, data
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = __version__

    @property
    def input_size(self) -> int:
        return self.preprocess.size

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "arch": self.arch, "num_classes": self.num_classes,
                "in_channels": self.in_channels, "input_size": self.input_size,
                "preprocess": self.preprocess.to_dict(), "classes": self.classes,
                "small_input": self.small_input, "shortcut": self.shortcut, "train": self.train,
                "metrics": self.metrics, "edgeresnet_version": self.version}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelMeta":
        """From a checkpoint's metadata; missing, mistyped or out-of-bounds fields are InputErrors,
        checked before any model is built (num_classes = 1e9 once asked for 256 GB)."""
        try:
            meta = cls._from_dict(d)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise InputError(f"the checkpoint's metadata is malformed ({type(exc).__name__}: {exc})",
                             hint="re-save it with edgeresnet, or load the plain state_dict with --arch") from None
        check_count("the checkpoint's num_classes", meta.num_classes, MAX_CLASSES)
        if meta.in_channels not in (1, 3):
            raise InputError(f"the checkpoint's in_channels is {meta.in_channels}; 1 or 3 are supported")
        if len(meta.classes) != meta.num_classes or not all(isinstance(c, str) for c in meta.classes):
            raise InputError(f"the checkpoint names {len(meta.classes)} classes but has {meta.num_classes} outputs",
                             hint="its class names must be one string per output")
        get_arch(meta.arch)
        return meta

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> "ModelMeta":
        return cls(arch=str(d["arch"]), num_classes=int(d["num_classes"]), in_channels=int(d["in_channels"]),
                   preprocess=Preprocess.from_dict(d["preprocess"], Source("metadata", "the checkpoint's metadata")),
                   classes=list(d["classes"]),
                   small_input=bool(d.get("small_input", False)), shortcut=d.get("shortcut", "B"),
                   train=dict(d.get("train", {})), metrics=dict(d.get("metrics", {})),
                   version=d.get("edgeresnet_version", "unknown"))

    def build(self):
        return build_model(self.arch, num_classes=self.num_classes, in_channels=self.in_channels,
                           small_input=self.small_input, shortcut=self.shortcut)


def save_checkpoint(path: Path, model, meta: ModelMeta, train_state: dict | None = None) -> None:
    """Save weights + metadata; ``train_state`` (optimizer, schedule, epoch) makes it resumable."""
    torch = require("torch", "torch")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta_json = json.dumps(meta.to_dict())
    if str(path).endswith(".safetensors"):
        st = require("safetensors.torch", "torch")
        atomic_write(path, lambda p: st.save_file(state, str(p), metadata={"edgeresnet": meta_json}))
        return
    blob = {"format": FORMAT, "meta_json": meta_json, "state_dict": state}
    if train_state is not None:
        blob["train_state"] = train_state
    atomic_write(path, lambda p: torch.save(blob, p))


@dataclass
class Checkpoint:
    model: Any
    meta: ModelMeta
    train_state: dict | None
    path: Path


def _read_raw(path: Path) -> tuple[dict, dict | None]:
    """-> (state_dict or blob, safetensors metadata)."""
    torch = require("torch", "torch")
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist", hint="pass a .pt/.pth/.safetensors file or `default`")
    if path.suffix == ".safetensors":
        st = require("safetensors", "torch")
        try:
            with st.safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise InputError(f"{path} is not a valid safetensors file: {exc}") from None
    try:
        with warnings.catch_warnings():  # torch's "Detected pickle protocol 4" note would precede our one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True), None
    # Garbage bytes make the weights-only unpickler raise IndexError, KeyError or TypeError as well
    # (about 1 in 12 random 2 KB files raised IndexError): all mean "not a checkpoint".
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError,
            KeyError, TypeError) as exc:
        raise _unreadable(path, str(exc)) from None


def _unreadable(path: Path, why: str) -> InputError:
    """Why a .pt file did not load, from its bytes (read, never unpickled): a pickle that calls
    something (named), or what the file is instead of a checkpoint."""
    from .pickle_scan import describe, pickle_calls

    unsafe = [c for c in pickle_calls(path) if not c.startswith(SAFE_GLOBALS)]
    if unsafe or "Unsupported global" in why or "GLOBAL" in why:  # torch's own word, when the scan missed it
        what = f" (it calls {unsafe[0]})" if unsafe else ""
        return InputError(f"refused to load {path}: it would run code when unpickled{what}",
                          hint="only weights-only checkpoints are loaded; re-save with torch.save(model.state_dict())")
    return InputError(f"{path} is not a readable PyTorch checkpoint: {describe(path)}",
                      hint="pass a file saved with torch.save(model.state_dict()), an edgeresnet checkpoint or .safetensors")


SAFE_GLOBALS = ("torch.", "collections.OrderedDict")  # what torch.save writes for tensors and state_dicts


def _meta_for_plain(state: dict, arch: str | None, path: Path) -> ModelMeta:
    if arch is None:
        raise InputError(f"{path} is a plain state_dict without metadata", hint="pass --arch (e.g. --arch resnet50)")
    spec = get_arch(arch)
    try:
        fc, conv1 = state["fc.weight"], state["conv1.weight"]
    except KeyError as exc:
        raise InputError(f"{path} has no {exc.args[0]!r} tensor: not a ResNet state_dict") from None
    torch = require("torch", "torch")
    if not (isinstance(fc, torch.Tensor) and isinstance(conv1, torch.Tensor) and fc.ndim == 2 and conv1.ndim == 4):
        raise InputError(f"{path}: fc.weight and conv1.weight are not 2-D and 4-D tensors: not a ResNet state_dict")
    num_classes = check_count(f"{path.name}: fc.weight's rows (classes)", int(fc.shape[0]), MAX_CLASSES)
    in_channels = int(conv1.shape[1])
    if in_channels not in (1, 3):
        raise InputError(f"{path}: conv1 takes {in_channels} channels; 1 or 3 are supported")
    small = spec.family == "imagenet" and conv1.shape[-1] == 3
    pre = IMAGENET_PREPROCESS if in_channels == 3 else Preprocess(
        channels=in_channels, size=224, resize=256, mean=(0.5,) * in_channels, std=(0.5,) * in_channels)
    return ModelMeta(arch=arch, num_classes=num_classes, in_channels=in_channels, preprocess=pre,
                     classes=[str(i) for i in range(num_classes)], small_input=small,
                     train={"source": f"plain state_dict {path.name}"})


def load_checkpoint(path: str | Path, arch: str | None = None) -> Checkpoint:
    """Rebuild the model from an edgeresnet checkpoint, ``default``, or a plain state_dict."""
    if str(path) == "default":
        path = default_model_path()
    path = user_path(str(path))
    if path.exists() and not path.is_file():
        raise InputError(f"{path} is {'a directory' if path.is_dir() else 'not a regular file'}, not a checkpoint",
                         hint="pass a .pt, .pth or .safetensors file")
    if path.suffix.lower() == ".onnx":
        raise InputError(f"{path} is an ONNX model, not a PyTorch checkpoint",
                         hint="`edgeresnet export MODEL.onnx` quantizes it; `eval` and `bench` take the export directory")
    raw, st_meta = _read_raw(path)
    train_state = None
    if st_meta is not None and "edgeresnet" in st_meta:
        meta, state = ModelMeta.from_dict(_meta_json(st_meta["edgeresnet"], path)), raw
    elif isinstance(raw, dict) and raw.get("format") == FORMAT:
        meta, state = ModelMeta.from_dict(_meta_json(raw.get("meta_json"), path)), raw.get("state_dict")
        train_state = raw.get("train_state")
    elif isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        meta, state = _meta_for_plain(raw["state_dict"], arch, path), raw["state_dict"]
    elif isinstance(raw, dict):
        meta, state = _meta_for_plain(raw, arch, path), raw
    else:
        raise InputError(f"{path} holds a {type(raw).__name__}, not a state_dict")
    torch = require("torch", "torch")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: its state_dict holds values that are not tensors", hint="not a checkpoint of weights")
    if arch is not None and arch != meta.arch:
        raise InputError(f"{path} is a {meta.arch}, not a {arch}", hint=f"drop --arch or pass --arch {meta.arch}")
    model = meta.build()
    missing, unexpected = _compare_keys(model.state_dict(), state)
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise InputError(f"{path} does not match {meta.arch}: {detail}", hint="check --arch")
    for k, v in model.state_dict().items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise InputError(f"{path}: {k} has shape {tuple(state[k].shape)}, {meta.arch} expects {tuple(v.shape)}")
    for k, v in state.items():
        if v.is_floating_point() and not bool(v.isfinite().all()):
            raise InputError(f"{path}: tensor {k} contains NaN or Inf", hint="the checkpoint is corrupt or training diverged")
    model.load_state_dict(state)
    model.eval()
    return Checkpoint(model, meta, train_state, path)


def _meta_json(text, path: Path) -> dict:
    """The metadata JSON of a checkpoint, or one InputError (not a string, not JSON, nested
    deeper than Python's recursion limit)."""
    try:
        meta = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"{path}: its edgeresnet metadata is not valid JSON ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: its edgeresnet metadata is not a JSON object")
    return meta


def _compare_keys(expected: dict, got: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(got)), sorted(set(got) - set(expected))


def default_model_path() -> Path:
    path = Path(__file__).resolve().parent.parent / "assets" / "default.pt"
    if not path.exists():
        raise InputError("the shipped default model is missing from this install", hint="reinstall edgeresnet")
    return path
