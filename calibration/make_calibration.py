"""Rebuild the shipped image sets from Debian's dataset-fashion-mnist package.

    python calibration/make_calibration.py [/usr/share/datasets/fashion-mnist]

calib-*: 1,000 images drawn from the *train* split, 100 per class, seed 0 (their train
indices in calib-indices.txt). t10k-*: the full 10,000-image test split, copied byte for byte.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from edgeresnet.data.readers import read_idx, write_idx

PER_CLASS = 100
SEED = 0


def main(src: Path, dst: Path) -> None:
    images = read_idx(src / "train-images-idx3-ubyte.gz")
    labels = read_idx(src / "train-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(SEED)
    picked = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), PER_CLASS, replace=False)
                                     for c in range(int(labels.max()) + 1)]))
    write_idx(dst / "calib-images-idx3-ubyte.gz", images[picked])
    write_idx(dst / "calib-labels-idx1-ubyte.gz", labels[picked])
    (dst / "calib-indices.txt").write_text("\n".join(map(str, picked)) + "\n")
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(src / name, dst / name)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"), Path(__file__).parent)
