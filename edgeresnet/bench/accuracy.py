"""Accuracy on real images for any engine: top-1, top-5, per-class accuracy, agreement.

Engines are plain callables (float32 NCHW batch -> logits), so the torch model, an ONNX
Runtime session and an OpenVINO compiled model are all scored by the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import Preprocess
from ..data.sources import ImageSet
from ..errors import InputError
from ..core.progress import progress

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class Accuracy:
    top1: float | None  # None: unlabelled images (agreement only)
    top5: float | None
    images: int
    per_class: dict[str, float]
    predictions: np.ndarray  # top-1 class per image, for agreement between engines

    def agreement(self, other: "Accuracy") -> float:
        """Share of images where both engines give the same top-1 class."""
        return float((self.predictions == other.predictions).mean()) if self.images else float("nan")

    def to_dict(self) -> dict:
        return {"top1": self.top1, "top5": self.top5, "images": self.images, "per_class": self.per_class}


def score(logits: np.ndarray, labels: np.ndarray | None, classes: list[str]) -> Accuracy:
    """Accuracy figures from a logits matrix and its labels; without labels only the
    predictions (for agreement between engines), top-1 and top-5 None."""
    if labels is None:
        return Accuracy(None, None, len(logits), {}, logits.argmax(axis=1))
    k = min(5, logits.shape[1])
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    pred = logits.argmax(axis=1)
    per_class = {}
    for i, name in enumerate(classes):
        mask = labels == i
        if mask.any():
            per_class[name] = float((pred[mask] == i).mean())
    n = len(labels)
    return Accuracy(top1=float((pred == labels).mean()) if n else float("nan"),
                    top5=float((topk == labels[:, None]).any(axis=1).mean()) if n else float("nan"),
                    images=n, per_class=per_class, predictions=pred)


def collect_logits(predict: Predict, data: ImageSet, pre: Preprocess, indices: np.ndarray,
                   batch_size: int = 256, label: str = "evaluate") -> np.ndarray:
    """Run ``predict`` over ``indices`` in batches, with a progress bar."""
    chunks = []
    with progress() as bar:
        task = bar.add_task(label, total=len(indices))
        for i in range(0, len(indices), batch_size):
            idx = indices[i:i + batch_size]
            logits = np.asarray(predict(data.batch(idx, pre)), dtype=np.float32)
            if not np.isfinite(logits).all():  # a score over NaN/Inf logits would be a number, and wrong
                raise InputError(f"the model gives NaN or Inf logits on {data.source}",
                                 hint="its weights or its preprocessing (a std of 0?) are broken")
            chunks.append(logits)
            bar.update(task, advance=len(idx))
    return np.concatenate(chunks) if chunks else np.zeros((0, len(data.classes)), np.float32)


def evaluate(predict: Predict, data: ImageSet, pre: Preprocess, indices: np.ndarray | None = None,
             batch_size: int = 256, label: str = "evaluate") -> Accuracy:
    indices = np.arange(len(data)) if indices is None else indices
    logits = collect_logits(predict, data, pre, indices, batch_size, label)
    return score(logits, data.labels[indices] if data.labelled else None, data.classes)


def torch_predictor(model) -> Predict:
    """Wrap a torch module as a numpy predictor (CPU, inference mode)."""
    import torch

    model.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return predict


def fp32_reference(model, fp32_path: Path) -> tuple[object, str]:
    """The FP32 reference: the BN-folded torch model, else (an ONNX source) the FP32 ONNX file
    under ONNX Runtime."""
    if model is not None:
        return torch_predictor(model), "torch fp32"
    from ..onnxfile.reference import user_run, user_session

    sess = user_session(fp32_path)
    name = sess.get_inputs()[0].name
    return (lambda x: user_run(sess, fp32_path, {name: x})[0]), "onnx fp32"
