"""`train --init`: start from pretrained weights (a torchvision-style state_dict, an edgeresnet
checkpoint or safetensors). Every tensor whose name and shape match is loaded; the classifier
is replaced when the class count differs (and so is any other tensor whose shape differs, each
named); the weights' SHA-256 is recorded in the new checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..models.checkpoint import FORMAT, _read_raw
from ..errors import InputError, require
from ..bundle.manifest import sha256


@dataclass
class Init:
    path: str
    sha256: str
    loaded: int
    replaced: list[str] = field(default_factory=list)  # tensors kept at their fresh init (shape differs)
    small_stem: bool | None = None  # the init's stem: 3x3 (small input) or 7x7

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "loaded": self.loaded, "replaced": self.replaced}


def init_state(path: Path) -> tuple[dict, Init]:
    """The tensors of an init file, never unpickled with code execution."""
    torch = require("torch", "torch")
    path = Path(path)
    if path.exists() and not path.is_file():
        raise InputError(f"--init {path} is not a file", hint="pass a .pt, .pth or .safetensors file")
    raw, _ = _read_raw(path)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        raw = raw.get("state_dict")
    elif isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise InputError(f"--init {path} holds no state_dict of tensors")
    state = {k.removeprefix("module."): v for k, v in raw.items()}  # DataParallel/DDP checkpoints
    conv1 = state.get("conv1.weight")
    info = Init(str(path), sha256(path), 0, small_stem=None if conv1 is None else conv1.shape[-1] == 3)
    return state, info


def load_init(model, state: dict, info: Init) -> Init:
    """Copy every matching tensor into ``model``; too little in common is an error (wrong --arch)."""
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    info.replaced = sorted(k for k in own if k in state and k not in matched)
    weights = [k for k in own if k.endswith("weight")]
    if sum(k in matched for k in weights) < len(weights) // 2:
        raise InputError(f"--init {info.path} shares {len(matched)} of {len(own)} tensors with this model",
                         hint="pass the --arch the weights were trained as")
    for k, v in state.items():
        if k in matched and v.is_floating_point() and not bool(v.isfinite().all()):
            raise InputError(f"--init {info.path}: tensor {k} contains NaN or Inf")
    model.load_state_dict(matched, strict=False)
    info.loaded = len(matched)
    return info


def freeze_backbone(model, frozen: bool) -> None:
    """Train only the classifier while ``frozen`` (the first --freeze-backbone epochs)."""
    for name, p in model.named_parameters():
        p.requires_grad = not frozen or name.startswith("fc.")
