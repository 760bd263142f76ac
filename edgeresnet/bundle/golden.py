"""The golden set: a small, class-balanced sample of the evaluation images that travels in the
bundle (``golden.npz``) with the FP32 model's logits, so any device can check its engines.

At export, :func:`write_golden` picks the sample (evaluation images only, never calibration
images; at most ``MAX_IMAGES`` and ``MAX_BYTES`` of pixels, at least one per class when the
budget allows), stores it as the engines' uint8 input before normalisation, and runs every
built artifact on it through its backend, recording what each scored (the manifest's
``golden.expected``): the figures a device's ``verify`` is judged against
(``ondevice/device.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backends import EngineOptions, get_backend
from ..backends.base import Artifact
from ..data import Preprocess
from ..data.sources import ImageSet
from ..errors import reraise_fatal
from ..core.outdir import atomic_write
from ..core.progress import stderr
from ..ondevice import device

MAX_IMAGES = 500
MAX_BYTES = 4 << 20  # uint8 pixels: 500 Fashion-MNIST images (0.4 MB), 26 ImageNet ones at 224
FILE = device.GOLDEN


def pick(labels: np.ndarray | None, candidates: np.ndarray, budget: int) -> np.ndarray:
    """Up to ``budget`` of ``candidates`` (positions in the evaluation split): round-robin over
    the classes in the split's order (so every class gets one before any gets two), or evenly
    spaced when unlabelled; sorted."""
    candidates = np.asarray(candidates, dtype=np.int64)
    if budget >= len(candidates):
        return np.sort(candidates)
    if labels is None:
        return np.sort(candidates[np.linspace(0, len(candidates) - 1, budget).round().astype(np.int64)])
    by_class = [candidates[labels[candidates] == c] for c in np.unique(labels[candidates])]
    depth = np.concatenate([np.arange(len(members)) for members in by_class])
    order = np.lexsort((np.concatenate([np.full(len(m), i) for i, m in enumerate(by_class)]), depth))
    return np.sort(np.concatenate(by_class)[order[:budget]])


def budget(pre: Preprocess, available: int) -> int:
    """How many images fit: MAX_IMAGES, and MAX_BYTES of uint8 pixels at the model's input size."""
    per_image = pre.channels * pre.size * pre.size
    return max(1, min(MAX_IMAGES, MAX_BYTES // per_image, available))


@dataclass
class Golden:
    x: np.ndarray  # uint8 NHWC, as Preprocess.to_uint8 leaves it
    labels: np.ndarray | None
    logits: np.ndarray  # the FP32 reference
    index: np.ndarray  # positions in the evaluation split
    pre: Preprocess

    def inputs(self, start: int, step: int = 64) -> np.ndarray:
        """Images ``start`` to ``start + step`` as the engines take them (exactly normalised)."""
        return self.pre.normalize(self.x[start:start + step])


def _logits(run, golden: Golden) -> np.ndarray:
    return np.concatenate([np.asarray(run(golden.inputs(i)), dtype=np.float32) for i in range(0, len(golden.x), 64)])


def make_golden(eval_set: ImageSet, eval_idx: np.ndarray, pre: Preprocess, reference) -> Golden:
    """The sample and its FP32 logits (``reference``: float32 NCHW -> logits)."""
    labels = np.asarray(eval_set.labels) if eval_set.labelled else None
    index = pick(labels, eval_idx, budget(pre, len(eval_idx)))
    x = np.ascontiguousarray(eval_set.uint8(index, pre), dtype=np.uint8)
    golden = Golden(x, None if labels is None else labels[index].astype(np.int64), np.zeros(0, np.float32), index, pre)
    golden.logits = _logits(reference, golden)
    return golden


def save(golden: Golden, root: Path) -> Path:
    path = Path(root) / FILE
    arrays = {"x": golden.x, "logits": golden.logits, "index": golden.index}
    if golden.labels is not None:
        arrays["labels"] = golden.labels

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would add ".npz" to the temp name
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)
    return path


def expected(golden: Golden, root: Path, rows, options: EngineOptions) -> dict[str, dict]:
    """What each built artifact scores on the golden set here, loaded through its backend as
    `predict` loads it: "<target>/<precision>" -> top1, agreement, max |logit diff|, the
    predictions' SHA-256 and the kernel path. An artifact that cannot run here is left out."""
    out = {}
    for row in rows:
        if row.status != "ok" or not row.artifact or row.target == "torch":
            continue
        artifact = Artifact(row.target, row.precision, Path(root) / row.artifact, dict(row.details))
        try:
            run = get_backend(row.target, options).load(artifact)
            m = device.golden_metrics(_logits(run, golden), golden.logits, golden.labels)
        except Exception as exc:  # an engine that ran at export but not here again: no figure, say so
            reraise_fatal(exc)
            stderr.print(f"note: golden set: {row.target} {row.precision} did not run ({type(exc).__name__}: {exc}); "
                         "verify will judge it by the default rate", style="yellow")
            continue
        out[f"{row.target}/{row.precision}"] = {k: m[k] for k in ("top1", "agreement", "max_abs_logit_diff",
                                                                   "predictions_sha256")}
        out[f"{row.target}/{row.precision}"]["kernel"] = artifact.details.get("kernel")
    return out


def write_golden(root: Path, eval_set: ImageSet, eval_idx: np.ndarray, pre: Preprocess, reference: tuple,
                 rows, options: EngineOptions, evaluation: dict) -> dict:
    """golden.npz in ``root`` and the manifest's ``golden`` object (with every artifact's figures);
    ``reference``: (float32 NCHW -> FP32 logits, its name), as ``bench.accuracy.fp32_reference`` gives."""
    run, name = reference
    golden = make_golden(eval_set, eval_idx, pre, run)
    save(golden, root)
    figures = expected(golden, root, rows, options)
    stderr.print(f"golden set: {len(golden.x)} images ({golden.x.nbytes / 1e6:.2f} MB of pixels) with {name} logits, "
                 f"scored by {len(figures)} artifacts")
    return {"path": FILE, "images": int(len(golden.x)), "source": evaluation.get("source"),
            "split": evaluation.get("split"), "labelled": golden.labels is not None, "reference": name,
            "preprocess": pre.to_dict(), "expected": figures}
