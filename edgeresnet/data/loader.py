"""Training batches decoded in ``torch.utils.data.DataLoader`` workers.

The training loop decides every batch's indices (shuffle, DDP shard) in the main process, so
what a batch holds does not depend on how many workers decode it. Workers only turn indices
into normalised arrays: a folder's images are decoded and resized there while the model steps
on the previous batch. Memory is bounded by ``workers * prefetch`` batches, never the dataset.
"""

from __future__ import annotations

import os

import numpy as np

from .preprocess import Preprocess
from .sources import ArraySet, ImageSet

PREFETCH = 2  # batches each worker decodes ahead
MAX_AUTO_WORKERS = 4


def auto_workers(data: ImageSet, pre: Preprocess, processes: int = 1) -> int:
    """Workers for ``--workers auto``: none for arrays already at the training size (nothing to
    decode, and sending batches between processes would cost more than it saves); otherwise one
    per spare core of this process's share, up to four."""
    if isinstance(data, ArraySet) and data.at_size(pre):
        return 0
    cores = max(1, (os.cpu_count() or 1) // max(1, processes))
    return min(MAX_AUTO_WORKERS, max(1, cores - 1)) if cores > 1 else 0


class _Batches:
    """A map-style dataset whose items are whole batches (the DataLoader runs with batch_size=None)."""

    def __init__(self, data: ImageSet, pre: Preprocess, batches: list[np.ndarray]):
        self.data, self.pre, self.batches = data, pre, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        import torch

        idx = self.batches[i]
        return torch.from_numpy(self.data.batch(idx, self.pre)), torch.from_numpy(self.data.labels[idx])


def batches(data: ImageSet, pre: Preprocess, index_batches: list[np.ndarray], workers: int, pin: bool = False):
    """An iterable of (images, labels) tensors, one per entry of ``index_batches``, in order."""
    import torch

    dataset = _Batches(data, pre, index_batches)
    if workers == 0:
        return (dataset[i] for i in range(len(dataset)))
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False,
                                       num_workers=workers, prefetch_factor=PREFETCH, pin_memory=pin,
                                       generator=torch.Generator())  # not a draw from the training's global RNG
