"""`edgeresnet train`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from .common import (
    InterpOpt,
    MeanOpt,
    PreFileOpt,
    ResizeOpt,
    SizeOpt,
    StdOpt,
    command,
    command_line,
    out,
    preprocess_overrides,
    threads_option,
)
from ..models.registry import SMALL_INPUT_MAX


@command
def train(
    arch: Annotated[str, typer.Option(help="Architecture, e.g. resnet20, resnet18, preact_resnet56 (see `edgeresnet models`).")],
    data: Annotated[str, typer.Option(help="Data spec: fashion-mnist[:DIR], default, cifar10:DIR, npz:FILE or an ImageFolder directory.")],
    out_path: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.pt or .safetensors); rewritten after every epoch.")] = Path("runs/model.pt"),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 15,
    batch_size: Annotated[int, typer.Option(help="Images per SGD step.")] = 128,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: 0.2 from scratch, 0.01 with --init).", show_default=False)] = None,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay on conv/linear weights.")] = 5e-4,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule: onecycle or cosine (with 1 epoch warm-up).")] = "onecycle",
    label_smoothing: Annotated[float, typer.Option(help="Label smoothing of the cross-entropy.")] = 0.1,
    hflip: Annotated[bool, typer.Option(help="Random horizontal flips (turn off for digits or text).")] = True,
    pad: Annotated[int, typer.Option(help="Padding of the random crop, in pixels (0 turns it off).")] = 4,
    seed: Annotated[int, typer.Option(help="Seed for init, shuffling and augmentation.")] = 0,
    input_size: Annotated[int | None, typer.Option(help="Input side in pixels (default: the data's own size, 224 for folders).")] = None,
    in_channels: Annotated[int | None, typer.Option(help="Input channels, 1 or 3 (default: the data's).")] = None,
    small_input: Annotated[bool | None, typer.Option("--small-input/--no-small-input", help=f"3x3 stem without max-pool for ImageNet-style nets; default: automatic, on at <= {SMALL_INPUT_MAX} px. --no-small-input keeps the 7x7 stem (e.g. to train at 64 px and fine-tune at 224).", show_default=False)] = None,
    zero_init_residual: Annotated[bool, typer.Option(help="Zero-init each block's last BN.")] = False,
    threads: Annotated[int | None, threads_option("CPU threads (default: all cores).")] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes that decode batches while the model trains (default: automatic; none for in-memory arrays already at the training size, else one per spare core, up to 4). 0 decodes in the training process.", show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    amp: Annotated[bool, typer.Option(help="Mixed precision on CUDA.")] = True,
    limit: Annotated[int | None, typer.Option(help="Train on the first N images only (quick runs).")] = None,
    val_limit: Annotated[int | None, typer.Option(help="Validate on the first N test images only.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the unfinished run saved at --out.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --out (without it, an existing checkpoint is refused).")] = False,
    init: Annotated[Path | None, typer.Option(help="Fine-tune from these weights: a torchvision-style state_dict, an edgeresnet checkpoint or .safetensors. Matching tensors load; the classifier is replaced when the class count differs; the stem follows the weights'.")] = None,
    freeze_backbone: Annotated[int, typer.Option(help="With --init: train only the classifier for the first N epochs.")] = 0,
    mean: MeanOpt = None,
    std: StdOpt = None,
    size: SizeOpt = None,
    resize: ResizeOpt = None,
    interpolation: InterpOpt = None,
    preprocess_file: PreFileOpt = None,
) -> None:
    """Train a ResNet on real data and save a checkpoint that carries its own metadata.

    Example: edgeresnet train --arch resnet20 --data fashion-mnist --epochs 15 --out runs/r20.pt

    Several GPUs (or CPU processes): torchrun --nproc_per_node 2 -m edgeresnet train ... (DDP; --batch-size is the global batch)
    """
    from ..training.loop import TrainConfig
    from ..training.loop import train as run

    cfg = TrainConfig(arch=arch, data=data, out=out_path, epochs=epochs, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, schedule=schedule, label_smoothing=label_smoothing,
                      hflip=hflip, pad=pad, seed=seed, input_size=input_size, in_channels=in_channels,
                      small_input=small_input, zero_init_residual=zero_init_residual, threads=threads,
                      workers=workers, device=device, amp=amp, limit=limit, val_limit=val_limit, resume=resume, force=force,
                      init=init, freeze_backbone=freeze_backbone,
                      preprocess=preprocess_overrides(mean, std, size, resize, interpolation, preprocess_file),
                      command=command_line())
    meta, history = run(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return
    last = history[-1]
    val = "-" if last.val_top1 is None else f"{last.val_top1:.4f}"
    out.print(f"saved {out_path}: {meta.arch}, {len(history)} epochs, val top-1 {val}")
