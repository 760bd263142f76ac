"""Data specs -> image sets.

One string names data on every command:

* ``fashion-mnist`` (IDX gzip from ``$EDGERESNET_DATA/fashion-mnist`` or Debian's
  ``/usr/share/datasets/fashion-mnist``), ``fashion-mnist:DIR``
* ``default``: the images shipped in ``calibration/`` (1,000 calibration images drawn from
  the Fashion-MNIST train split; the full 10,000-image test split)
* ``cifar10:DIR`` (the python batches format)
* ``npz:FILE`` (``x_train``/``y_train``/``x_test``/``y_test``, or ``images``/``labels``;
  optional ``class_names``)
* a directory in ImageFolder layout (one subfolder per class; ``train/``, ``test/`` or
  ``val/`` subfolders, when present, are the splits)
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..core.limits import MAX_CLASSES, check_count
from .preprocess import Preprocess, to_mode
from .readers import read_cifar_batch, read_idx, read_npz

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLIT_ALIASES = {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}


class ImageSet:
    """A split. ``batch`` turns indices into model input with a preprocessing spec. An
    unlabelled set (a flat folder, a glob, an npz of images only) has ``labelled`` False,
    no classes and zero labels: fit for calibration, not for training or scoring."""

    source: str
    classes: list[str]
    labels: np.ndarray
    labelled = True

    def require_labels(self, role: str) -> None:
        if not self.labelled:
            raise InputError(f"{role} needs labelled data, and {self.source} has none",
                             hint="pass an ImageFolder (one subfolder per class), a labelled npz or a dataset spec")

    def __len__(self) -> int:
        return len(self.labels)

    def uint8(self, indices: np.ndarray, pre: Preprocess) -> np.ndarray:
        raise NotImplementedError

    def batch(self, indices: np.ndarray, pre: Preprocess) -> np.ndarray:
        return pre.normalize(self.uint8(indices, pre))

    def native_shape(self) -> tuple[int, int] | None:
        """(channels, side) when every image has the same square shape, else None."""
        return None


@dataclass
class ArraySet(ImageSet):
    """Images held in memory as uint8 NHWC."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str
    origin: str = ""  # the file(s) actually read: two splits with one origin are the same images
    labelled: bool = True

    def at_size(self, pre: Preprocess) -> bool:
        """Whether the images are already what ``pre`` makes of them (no resize, no decode)."""
        _, h, w, c = self.images.shape
        return h == w == pre.size and (c == pre.channels or (c == 1 and pre.channels == 3))

    def uint8(self, indices: np.ndarray, pre: Preprocess) -> np.ndarray:
        chunk = self.images[indices]
        c = chunk.shape[3]
        if self.at_size(pre):
            return chunk
        mode = "L" if c == 1 else "RGB"
        return np.stack([pre.to_uint8(Image.fromarray(img[:, :, 0] if c == 1 else img, mode)) for img in chunk])

    def native_shape(self) -> tuple[int, int] | None:
        _, h, w, c = self.images.shape
        return (c, h) if h == w else None


@dataclass
class FileSet(ImageSet):
    """Image files decoded on demand with Pillow."""

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    source: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable files left out
    origin: str = ""
    labelled: bool = True

    def uint8(self, indices: np.ndarray, pre: Preprocess) -> np.ndarray:
        return np.stack([pre.to_uint8(open_image(self.paths[i])) for i in indices])

    def native_shape(self, probe: int = 64) -> tuple[int, int] | None:
        """(channels, side) when a sample of up to ``probe`` images, spread over the folder,
        shares one square size (headers only, nothing decoded): a folder of 32x32 PNGs then
        trains at 32, not at 224 (which took ResNet-20 to 10 GB)."""
        pick = np.unique(np.linspace(0, len(self.paths) - 1, min(probe, len(self.paths))).astype(int))
        shapes = set()
        for i in pick:
            try:
                with Image.open(self.paths[i]) as im:
                    shapes.add((1 if im.mode in ("L", "I;16", "I", "1") else 3, im.size))
            except (OSError, ValueError, Image.DecompressionBombError):
                return None
        if len(shapes) != 1:
            return None
        (channels, (w, h)), = shapes
        return (channels, w) if w == h else None


def open_image(path: Path) -> Image.Image:
    """Decode one image fully (so truncated files fail here, naming the path). Images over
    Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) are refused, not warned about."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im if im.mode in ("L", "RGB") else to_mode(im, "RGBA" if "A" in im.getbands() else "RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"refused image {path}: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exc:
        raise InputError(f"cannot decode image {path}: {exc}") from None


def readable_images(paths: list[Path], strict: bool) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split ``paths`` into decodable images and (path, reason) for the rest; ``strict`` makes
    the first unreadable one fatal."""
    good, bad = [], []
    for p in paths:
        try:
            open_image(p)
            good.append(p)
        except InputError as exc:
            if strict:
                raise InputError(exc.message, hint="fix or remove the file, or drop --strict to skip it") from None
            bad.append((p, exc.message))
    return good, bad


def user_path(text: str) -> Path:
    """``~`` expanded where it names a home directory; ``~nosuchuser`` stays literal."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)


def _nhwc(images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        return images[:, :, :, None]
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[3] not in (1, 3):
        return images.transpose(0, 2, 3, 1)
    if images.ndim == 4 and images.shape[3] in (1, 3):
        return images
    raise InputError(f"image array has shape {images.shape}; expected N,H,W or N,H,W,C with 1 or 3 channels")


def _labels(values, spec: str, names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Integer labels in [0, classes) and the class names: checked before a class list is
    built from ``labels.max()`` (one label of 1e10 once asked for ten billion names)."""
    if values is None:
        raise InputError(f"{spec}: the data has no labels", hint="every image needs an integer class label")
    arr = np.asarray(values).reshape(-1)
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        raise InputError(f"{spec}: labels must be integers, found {arr.dtype}",
                         hint="store class indices 0..N-1 (and class names in class_names)")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise InputError(f"{spec}: a label is {int(arr.min())}; labels are class indices from 0",
                         hint="store class indices 0..N-1 (an unlabelled image has no place in labelled data)")
    top = int(arr.max()) + 1 if arr.size else 0
    if names is not None:
        if len(names) > MAX_CLASSES:
            raise InputError(f"{spec}: {len(names):,} class names; the limit is {MAX_CLASSES:,}")
        if top > len(names):
            raise InputError(f"{spec}: a label is {top - 1} but there are {len(names)} class names")
        return arr, names
    check_count(f"{spec}: the number of classes (largest label + 1)", top, MAX_CLASSES, least=0)
    return arr, [str(i) for i in range(top)]


def repo_calibration_dir() -> Path:
    """The shipped images: inside the package in a wheel, or the repo's calibration/ folder."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_calibration", here.parent / "calibration"):
        if (candidate / "t10k-images-idx3-ubyte.gz").exists():
            return candidate
    raise InputError("the shipped calibration/ images are missing from this install",
                     hint="reinstall edgeresnet, or pass --data fashion-mnist:DIR")


def _fashion_mnist_dir(explicit: str | None) -> Path:
    if explicit:
        candidates = [user_path(explicit)]
    else:
        candidates = [Path(os.environ["EDGERESNET_DATA"]) / "fashion-mnist"] if os.environ.get("EDGERESNET_DATA") else []
        candidates.append(DEBIAN_FASHION_MNIST)
    for c in candidates:
        if (c / "train-images-idx3-ubyte.gz").exists() or (c / "t10k-images-idx3-ubyte.gz").exists():
            return c
    raise InputError(f"Fashion-MNIST not found (looked in {', '.join(map(str, candidates))})",
                     hint="`apt-get install dataset-fashion-mnist`, or set EDGERESNET_DATA, or use `--data default`")


def _idx_split(directory: Path, prefix: str, split_name: str, spec: str) -> ArraySet:
    img, lab = directory / f"{prefix}-images-idx3-ubyte.gz", directory / f"{prefix}-labels-idx1-ubyte.gz"
    if not img.exists() or not lab.exists():
        raise InputError(f"{spec}: no {split_name} split in {directory} (missing {img.name} or {lab.name})")
    images, labels = read_idx(img), read_idx(lab)
    if len(images) != len(labels):
        raise InputError(f"{spec}: {img.name} has {len(images)} images but {lab.name} has {len(labels)} labels")
    return ArraySet(_nhwc(images), labels.astype(np.int64), list(FASHION_MNIST_CLASSES),
                    f"{spec} [{split_name}] {directory}", str(img.resolve()))


def _load_fashion_mnist(arg: str | None, split: str, spec: str) -> ImageSet:
    directory = _fashion_mnist_dir(arg)
    if split not in ("train", "test"):
        raise InputError(f"{spec} has the splits train and test, not {split!r}")
    return _idx_split(directory, "train" if split == "train" else "t10k", split, spec)


def _load_default(split: str, spec: str) -> ImageSet:
    directory = repo_calibration_dir()
    if split not in ("train", "test"):
        raise InputError(f"{spec} has the splits train (calibration subset) and test, not {split!r}")
    return _idx_split(directory, "calib" if split == "train" else "t10k", split, spec)


def _load_cifar10(arg: str | None, split: str, spec: str) -> ImageSet:
    if not arg:
        raise InputError("cifar10 needs a directory", hint="use cifar10:DIR (the folder with data_batch_1 ...)")
    directory = user_path(arg)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if split not in ("train", "test"):
        raise InputError(f"{spec} has the splits train and test, not {split!r}")
    present = [directory / n for n in names if (directory / n).exists()]
    if not present:
        raise InputError(f"{spec}: no {', '.join(names)} in {directory}")
    batches = [read_cifar_batch(p) for p in present]
    for b, p in zip(batches, present):
        if "data" not in b:
            raise InputError(f"{spec}: {p.name} has no 'data' array", hint="pass the CIFAR-10 python batches")
    images = np.concatenate([b["data"] for b in batches])
    labels = np.concatenate([_labels(b.get("labels", b.get("fine_labels")), f"{spec} ({p.name})")[0]
                             for b, p in zip(batches, present)])
    names = None
    if (directory / "batches.meta").exists():
        meta = read_cifar_batch(directory / "batches.meta")
        if "label_names" in meta:
            names = [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
    labels, classes = _labels(labels, spec, names)
    if names is None:
        classes = [f"class_{c}" for c in classes]
    return ArraySet(images, labels, classes, f"{spec} [{split}] {directory}",
                    ",".join(str(p.resolve()) for p in present))


def _load_npz(arg: str | None, split: str, spec: str) -> ImageSet:
    if not arg:
        raise InputError("npz needs a file", hint="use npz:FILE")
    path = user_path(arg)
    if not path.is_file():
        raise InputError(f"{spec}: no such file {path}")
    z = read_npz(path)
    key = "train" if split == "train" else "test"
    if f"x_{key}" in z and f"y_{key}" in z:
        images, labels = z[f"x_{key}"], z[f"y_{key}"]
    elif "images" in z and "labels" in z:
        images, labels = z["images"], z["labels"]
    elif f"x_{key}" in z or "images" in z:  # images only: unlabelled, for calibration
        images = z[f"x_{key}"] if f"x_{key}" in z else z["images"]
        if images.dtype != np.uint8:
            raise InputError(f"{spec}: images must be uint8 (0..255), found {images.dtype}")
        origin = f"{path.resolve()}:{'x_' + key if f'x_{key}' in z else 'images'}"
        return ArraySet(_nhwc(images), np.zeros(len(images), np.int64), [], f"{spec} [{split}, unlabelled]", origin,
                        labelled=False)
    else:
        raise InputError(f"{spec}: expected arrays x_{key}/y_{key} or images/labels, found {sorted(z)}")
    if images.dtype != np.uint8:
        raise InputError(f"{spec}: images must be uint8 (0..255), found {images.dtype}")
    labels, classes = _labels(labels, spec, [str(c) for c in z["class_names"]] if "class_names" in z else None)
    if len(images) != len(labels):
        raise InputError(f"{spec}: {len(images)} images but {len(labels)} labels")
    origin = f"{path.resolve()}:{'x_' + key if f'x_{key}' in z else 'images'}"
    return ArraySet(_nhwc(images), labels, classes, f"{spec} [{split}]", origin)


def _load_folder(path: Path, split: str, spec: str, strict: bool = False) -> ImageSet:
    root = path
    for name in SPLIT_ALIASES.get(split, (split,)):
        if (path / name).is_dir():
            root = path / name
            break
    else:
        if any((path / s).is_dir() for s in ("train", "test", "val")):
            raise InputError(f"{spec}: no {split!r} split folder in {path}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        flat = sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if flat:  # no class subfolders: unlabelled images, for calibration
            return _unlabelled(flat, f"{spec} [unlabelled] {root}", str(root.resolve()), strict)
        raise InputError(f"{spec}: {root} has no class subfolders and no images",
                         hint="ImageFolder layout: DIR/<class>/<image>; a flat folder of images calibrates")
    paths, labels = [], []
    for i, cls in enumerate(classes):
        for f in sorted((root / cls).rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                paths.append(f)
                labels.append(i)
    if not paths:
        raise InputError(f"{spec}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    good, bad = readable_images(paths, strict)
    if not good:
        raise InputError(f"{spec}: none of the {len(paths)} images under {root} can be decoded (first: {bad[0][1]})")
    keep = {p: lab for p, lab in zip(paths, labels)}
    return FileSet(good, np.asarray([keep[p] for p in good], dtype=np.int64), classes, f"{spec} [{split}] {root}", bad,
                   str(root.resolve()))


def _unlabelled(paths: list[Path], source: str, origin: str, strict: bool) -> "FileSet":
    good, bad = readable_images(paths, strict)
    if not good:
        raise InputError(f"{source}: none of the {len(paths)} images can be decoded (first: {bad[0][1]})")
    return FileSet(good, np.zeros(len(good), np.int64), [], source, bad, origin, labelled=False)


def load_split(spec: str, split: str = "train", strict: bool = False) -> ImageSet:
    """Resolve a data spec and return one of its splits (``train``, ``test`` or ``val``).
    Unreadable image files in a folder are left out and listed in ``skipped``; ``strict``
    makes them fatal."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "fashion-mnist":
        return _load_fashion_mnist(arg or None, split, spec)
    if kind == "default":
        return _load_default(split, spec)
    if kind == "cifar10":
        return _load_cifar10(arg or None, split, spec)
    if kind == "npz":
        return _load_npz(arg or None, split, spec)
    path = user_path(spec)
    if path.is_dir():
        return _load_folder(path, split, spec, strict)
    if any(ch in spec for ch in "*?["):  # a glob of image files: unlabelled, the same for every split
        from glob import glob

        matched = sorted(Path(m) for m in glob(str(path), recursive=True) if Path(m).suffix.lower() in IMAGE_SUFFIXES)
        if not matched:
            raise InputError(f"no image files match {spec!r}")
        return _unlabelled(matched, f"{spec} [unlabelled]", ",".join(str(p.resolve()) for p in matched[:3]), strict)
    if path.exists():
        raise InputError(f"data spec {spec!r} is a file, not a directory", hint="for arrays use npz:FILE")
    raise InputError(f"unknown data spec {spec!r}",
                     hint="use fashion-mnist[:DIR], default, cifar10:DIR, npz:FILE or an ImageFolder directory")


def default_preprocess(data: ImageSet, channels: int | None = None, size: int | None = None) -> Preprocess:
    """A spec fitted to the data: native size and channels unless given, mean/std measured
    on (up to) 5,000 training images."""
    native = data.native_shape()
    if channels is None:
        channels = native[0] if native else 3
    if size is None:
        size = native[1] if native else 224
    resize = size if native and native[1] == size else round(size * 256 / 224)
    probe = Preprocess(channels=channels, size=size, resize=resize, mean=(0.0,) * channels, std=(1.0,) * channels)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(data), size=min(len(data), 5000), replace=False))
    x = np.concatenate([data.batch(idx[i:i + 500], probe) for i in range(0, len(idx), 500)])
    mean = tuple(round(float(v), 4) for v in x.mean(axis=(0, 2, 3)))
    std = tuple(round(max(float(v), 1e-3), 4) for v in x.std(axis=(0, 2, 3)))
    return Preprocess(channels=channels, size=size, resize=resize, mean=mean, std=std)
