"""Data-parallel training on PyTorch's own engine: under ``torchrun --nproc_per_node N -m
edgeresnet train ...`` every process trains on its share of each global batch (DDP averages the
gradients: NCCL on GPUs, gloo on CPU); only rank 0 validates, logs and writes checkpoints.
Without torchrun (no WORLD_SIZE) this is a single process and nothing changes."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: object = None  # the device this rank trains on, when distributed

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, indices):
        """This rank's images of one global batch (every rank gets len // world or one more)."""
        return indices[self.rank::self.world]

    def sum(self, *values: float) -> list[float]:
        if self.world == 1:
            return list(values)
        import torch

        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            import torch

            torch.distributed.barrier()

    def wrap(self, model):
        if self.world == 1:
            return model
        import torch

        ids = [self.device.index] if getattr(self.device, "type", "cpu") == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def close(self) -> None:
        if self.world > 1:
            import torch

            torch.distributed.destroy_process_group()


def peer_lost(ddp: Dist, exc: RuntimeError, out) -> "EdgeResNetError | None":
    """A collective that failed because another process of the run died (killed, out of memory):
    one line for this rank, saying the run stopped and what is left; None for any other error."""
    from ..errors import PeerLost

    text = str(exc)
    if ddp.world == 1 or not any(s in text for s in _PEER_GONE):
        return None
    return PeerLost(f"rank {ddp.rank} of {ddp.world}: another training process stopped, so this run stops too",
                    hint=f"the last checkpoint at {out} (written after each epoch) is intact; rerun with --resume")


# What gloo and NCCL say when a peer's connection drops (a crash or `kill -9` of that rank).
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker", "Broken pipe",
              "NCCL communicator was aborted", "Socket Timeout", "timed out")


def world_size() -> int:
    """How many processes torchrun started (1 without torchrun), known before any work."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def setup(device_name: str) -> Dist:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR)."""
    world = world_size()
    if world <= 1:
        return Dist()
    import torch

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Dist(torch.distributed.get_rank(), world, torch.device("cuda", local) if cuda else torch.device("cpu"))
