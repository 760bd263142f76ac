"""The training loop: SGD + momentum, one-cycle or cosine schedule, label smoothing, padded
random crops (and flips where they fit the data), channels_last, CUDA + AMP when present,
validation every epoch, resumable checkpoints."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..models.checkpoint import ModelMeta, load_checkpoint, save_checkpoint
from ..data import Preprocess, default_preprocess, load_split, loader
from ..data.preprocess import Overrides
from ..data.sources import ImageSet
from . import distributed
from ..errors import BackendUnavailable, InputError, UsageError, require
from .finetune import freeze_backbone, init_state, load_init
from ..core.limits import MAX_SIDE, check_flag
from ..core.outdir import check_writable
from ..models.registry import build_model, default_small_input, get_arch
from ..core.progress import RunClock, eta_text, progress, stderr


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    data: str
    out: Path
    epochs: int = 15
    batch_size: int = 128
    lr: float | None = None  # None: 0.2 from scratch, 0.01 when fine-tuning from --init
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # or "cosine"
    label_smoothing: float = 0.1
    pad: int = 4
    hflip: bool = True
    seed: int = 0
    input_size: int | None = None
    in_channels: int | None = None
    small_input: bool | None = None  # None: automatic (the 3x3 stem for ImageNet-style nets at <= 64 px)
    zero_init_residual: bool = False
    threads: int | None = None
    workers: int | None = None  # DataLoader workers decoding batches; None: automatic (data/loader.auto_workers)
    device: str = "auto"
    amp: bool = True
    limit: int | None = None  # use only the first N training images (quick runs, tests)
    val_limit: int | None = None
    resume: bool = False
    force: bool = False  # overwrite an existing --out that is not resumed
    init: Path | None = None  # pretrained weights to start from (fine-tuning)
    freeze_backbone: int = 0  # epochs that train only the classifier (with --init)
    preprocess: Overrides | None = None  # --mean/--std/--size/--resize/--interpolation/--preprocess over the data's own
    command: str = ""


@dataclass
class EpochStats:
    epoch: int
    loss: float
    train_top1: float
    val_top1: float | None
    images_per_s: float
    seconds: float


def _subset(data: ImageSet, limit: int | None) -> np.ndarray:
    return np.arange(len(data) if limit is None else min(limit, len(data)))


def _augment(torch, x, pad: int, hflip: bool, fill, gen):
    """Padded random crop and horizontal flip, per sample, on a normalised NCHW batch."""
    n, c, h, w = x.shape
    if pad:
        padded = fill.view(1, c, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
        padded[:, :, pad:pad + h, pad:pad + w] = x
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, c, h, w + 2 * pad)
        x = padded.gather(2, rows)
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, c, h, w)
        x = x.gather(3, cols)
    if hflip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    return x


def evaluate_top1(model, data: ImageSet, pre: Preprocess, indices: np.ndarray, device, batch: int = 500) -> float:
    torch = require("torch", "torch")
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(indices), batch):
            idx = indices[i:i + batch]
            x = torch.from_numpy(data.batch(idx, pre)).to(device).contiguous(memory_format=torch.channels_last)
            correct += int((model(x).argmax(1).cpu().numpy() == data.labels[idx]).sum())
    return correct / max(1, len(indices))


def _param_groups(model, weight_decay: float):
    """No weight decay on BN parameters and biases (a standard ResNet recipe detail)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _scheduler(torch, cfg: TrainConfig, opt, steps_per_epoch: int):
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        # OneCycleLR divides by its warm-up length (0.25 * total - 1 steps): a run of fewer than 8
        # steps (a quick --limit run) would divide by zero; it then stops before the schedule ends.
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 8), pct_start=0.25,
                                                   div_factor=10.0, final_div_factor=100.0)
    if cfg.schedule == "cosine":
        warm = steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    raise UsageError(f"unknown schedule {cfg.schedule!r}", hint="use onecycle or cosine")


def _check_config(cfg: TrainConfig) -> None:
    """Every number bounded and every path usable before the first epoch (not after it)."""
    check_flag("--epochs", cfg.epochs, least=1, most=100_000, integer=True)
    check_flag("--batch-size", cfg.batch_size, least=1, most=65_536, integer=True)
    world = distributed.world_size()
    if cfg.batch_size < world:
        raise UsageError(f"--batch-size {cfg.batch_size} is the global batch; it cannot be shared by {world} processes",
                         hint=f"pass --batch-size {world} or more (each process trains on batch / {world} images)")
    if cfg.limit is not None and cfg.limit < world:
        raise UsageError(f"--limit {cfg.limit}: {cfg.limit} training images cannot be shared by {world} processes",
                         hint=f"pass --limit {world} or more, or start fewer processes")
    check_flag("--lr", cfg.lr, above=0, most=100)
    check_flag("--freeze-backbone", cfg.freeze_backbone, least=0, most=cfg.epochs, integer=True)
    if cfg.init is not None and cfg.resume:
        raise UsageError("--init starts a new run; --resume continues one", hint="pass one of them")
    if cfg.freeze_backbone and cfg.init is None:
        raise UsageError("--freeze-backbone needs --init (a backbone worth keeping)")
    check_flag("--weight-decay", cfg.weight_decay, least=0, most=1)
    check_flag("--label-smoothing", cfg.label_smoothing, least=0, below=1)
    check_flag("--pad", cfg.pad, least=0, most=MAX_SIDE, integer=True)
    check_flag("--input-size", cfg.input_size, least=8, most=MAX_SIDE, integer=True)
    check_flag("--limit", cfg.limit, least=1, integer=True)
    check_flag("--workers", cfg.workers, least=0, most=256, integer=True)
    check_flag("--val-limit", cfg.val_limit, least=1, integer=True)
    if cfg.in_channels not in (None, 1, 3):
        raise UsageError(f"--in-channels must be 1 or 3, got {cfg.in_channels}")
    out = Path(cfg.out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory", hint="pass a checkpoint file path, e.g. --out runs/r20.pt")
    if out.exists() and not cfg.resume and not cfg.force:
        raise InputError(f"--out {out} exists", hint="pass --resume to continue its run, --force to overwrite it, "
                         "or another --out")
    check_writable(out)


def _device(torch, name: str):
    """``auto``: CUDA when present; an explicit CUDA device that is not there is exit 4, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown --device {name!r}", hint="auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise BackendUnavailable(f"--device {name}: no such CUDA device here",
                                 hint="use --device cpu, or install a CUDA build of torch on a GPU machine")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: only cpu and cuda are supported")
    return device


def train(cfg: TrainConfig) -> tuple[ModelMeta, list[EpochStats]]:
    """Train ``cfg.arch`` on ``cfg.data`` and write ``cfg.out`` after every epoch."""
    torch = require("torch", "torch")
    get_arch(cfg.arch)
    _check_config(cfg)
    if cfg.lr is None:
        cfg = replace(cfg, lr=0.01 if cfg.init is not None else 0.2)
    ddp = distributed.setup(cfg.device)
    try:
        return _train(torch, cfg, ddp)
    except RuntimeError as exc:
        lost = distributed.peer_lost(ddp, exc, cfg.out)
        if lost is None:
            raise
        raise lost from None
    finally:
        ddp.close()


@dataclass
class _Data:
    """The training split, the validation split (None when the data has no test split) and the
    image indices each run uses."""
    train: ImageSet
    val: ImageSet | None
    train_idx: np.ndarray
    val_idx: np.ndarray


@dataclass
class _Start:
    """Where the run starts: the model and its metadata, the epoch, the history so far and the
    optimizer/scheduler state (None for a new run)."""
    model: object
    meta: ModelMeta
    epoch: int = 0
    history: list = field(default_factory=list)
    state: dict | None = None
    init: object = None  # finetune.InitReport when --init loaded weights


@dataclass
class _Step:
    """What one optimisation step needs, built once per run."""
    net: object
    opt: object
    sched: object
    scaler: object
    criterion: object
    fill: object
    pre: Preprocess
    workers: int
    steps: int
    use_amp: bool


def _train(torch, cfg: TrainConfig, ddp: distributed.Dist) -> tuple[ModelMeta, list[EpochStats]]:
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // ddp.world))
    device = ddp.device or _device(torch, cfg.device)
    data = _load_data(cfg, ddp)
    torch.manual_seed(cfg.seed)  # before the model is built: --seed decides its init too
    start = _resume(cfg) if cfg.resume else _fresh(cfg, data.train, ddp)
    start.meta.train = _train_metadata(cfg, data, device, start.init)
    if data.val is not None and len(data.val.classes) != len(data.train.classes):
        raise InputError(f"{cfg.data}: train has {len(data.train.classes)} classes, test has {len(data.val.classes)}")
    start.model = start.model.to(device).to(memory_format=torch.channels_last)
    step = _optimizer(torch, cfg, ddp, start, data, device)
    return _epochs(torch, cfg, ddp, start, data, step, device)


def _load_data(cfg: TrainConfig, ddp: distributed.Dist) -> _Data:
    train_set = load_split(cfg.data, "train")
    train_set.require_labels("training")
    try:
        val_set = load_split(cfg.data, "test")
    except InputError:
        val_set = None
    train_idx = _subset(train_set, cfg.limit)
    if len(train_idx) < ddp.world:
        raise UsageError(f"{len(train_idx)} training images cannot be shared by {ddp.world} processes",
                         hint=f"train on at least {ddp.world} images (--limit), or start fewer processes")
    val_idx = _subset(val_set, cfg.val_limit) if val_set is not None else np.arange(0)
    return _Data(train_set, val_set, train_idx, val_idx)


def _resume(cfg: TrainConfig) -> _Start:
    """The run ``cfg.out`` left off: its model, metadata, epoch, history and optimizer state."""
    if not cfg.out.exists():
        raise InputError(f"--resume: {cfg.out} does not exist", hint="drop --resume to start a new run")
    ckpt = load_checkpoint(cfg.out)
    if not ckpt.train_state:
        raise InputError(f"--resume: {cfg.out} finished its run already", hint="train into a new --out")
    if ckpt.meta.arch != cfg.arch:
        raise InputError(f"--resume: {cfg.out} is a {ckpt.meta.arch} run, not {cfg.arch}",
                         hint=f"pass --arch {ckpt.meta.arch} to resume it")
    state = ckpt.train_state
    history = [EpochStats(**h) for h in ckpt.meta.metrics.get("history", [])]
    return _Start(ckpt.model, ckpt.meta, int(state["epoch"]), history, state)


def _fresh(cfg: TrainConfig, train_set: ImageSet, ddp: distributed.Dist) -> _Start:
    """A new model: the preprocessing, the stem, and the --init weights when given."""
    init_state_dict, init = (None, None)
    if cfg.init is not None:
        init_state_dict, init = init_state(cfg.init)
    pre = default_preprocess(train_set, cfg.in_channels, cfg.input_size).with_overrides(cfg.preprocess, channels=cfg.in_channels)
    if cfg.input_size is None and ddp.main:
        native = train_set.native_shape()
        stderr.print(f"training at {pre.size} px: " + (f"the data's own size ({native[1]}x{native[1]})" if native else
                     "the images differ in size, so resize 256 and crop 224") + "; --input-size to change")
    small = cfg.small_input if cfg.small_input is not None else (
        init.small_stem if init is not None and init.small_stem is not None else default_small_input(cfg.arch, pre.size))
    model = build_model(cfg.arch, num_classes=len(train_set.classes), in_channels=pre.channels,
                        small_input=small, zero_init_residual=cfg.zero_init_residual)
    if init is not None:
        load_init(model, init_state_dict, init)
        log = stderr.print if ddp.main else (lambda *a, **k: None)
        log(f"init from {cfg.init}: {init.loaded} tensors loaded" +
            (f"; fresh (shape differs): {', '.join(init.replaced)}" if init.replaced else ""))
    meta = ModelMeta(arch=cfg.arch, num_classes=len(train_set.classes), in_channels=pre.channels,
                     preprocess=pre, classes=list(train_set.classes), small_input=small)
    return _Start(model, meta, init=init)


def _train_metadata(cfg: TrainConfig, data: _Data, device, init) -> dict:
    """The checkpoint's ``train`` block: command, seed, data, init, images, device, recipe."""
    return {"command": cfg.command, "seed": cfg.seed, "data": data.train.source,
            **({"init": init.to_dict()} if not cfg.resume and cfg.init is not None else {}),
            "images": int(len(data.train_idx)), "device": device.type,
            "recipe": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
                          if k not in ("out", "command", "resume")},
                       "preprocess": cfg.preprocess.to_dict() if cfg.preprocess else None}}


def _optimizer(torch, cfg: TrainConfig, ddp: distributed.Dist, start: _Start, data: _Data, device) -> _Step:
    """SGD + Nesterov, the schedule (restored on --resume), AMP scaler, loss, workers, DDP wrap."""
    use_amp = cfg.amp and device.type == "cuda"
    opt = torch.optim.SGD(_param_groups(start.model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    steps = math.ceil(len(data.train_idx) / cfg.batch_size)
    sched = _scheduler(torch, cfg, opt, steps)
    if start.state is not None:
        opt.load_state_dict(start.state["optimizer"])
        sched.load_state_dict(start.state["scheduler"])
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    pre = start.meta.preprocess
    fill = torch.from_numpy(pre.pad_value())
    workers = loader.auto_workers(data.train, pre, ddp.world) if cfg.workers is None else cfg.workers
    return _Step(ddp.wrap(start.model), opt, sched, scaler, criterion, fill, pre, workers, steps, use_amp)


def _epochs(torch, cfg: TrainConfig, ddp: distributed.Dist, start: _Start, data: _Data, step: _Step,
            device) -> tuple[ModelMeta, list[EpochStats]]:
    """Every remaining epoch: train, validate, log, checkpoint (rank 0 validates and writes)."""
    model, meta, history = start.model, start.meta, start.history
    run_clock = RunClock((cfg.epochs - start.epoch) * step.steps, enabled=None if ddp.main else False)
    with progress("loss", "acc", "speed", "eta", enabled=None if ddp.main else False) as bar:
        for epoch in range(start.epoch, cfg.epochs):
            model.train()
            if cfg.freeze_backbone:
                freeze_backbone(model, epoch < cfg.freeze_backbone)
            seen, loss_sum, correct, seconds = _one_epoch(torch, cfg, ddp, data, step, device, epoch, bar, run_clock)
            seen, loss_sum, correct = ddp.sum(seen, loss_sum, correct)
            val = evaluate_top1(model, data.val, meta.preprocess, data.val_idx, device) \
                if len(data.val_idx) and ddp.main else None
            stats = EpochStats(epoch + 1, loss_sum / seen, correct / seen, val, seen / seconds, seconds)
            history.append(stats)
            if not ddp.main:
                ddp.barrier()  # rank 0 validates and writes the checkpoint
                continue
            _checkpoint(cfg, model, meta, history, stats, data, step, epoch)
            ddp.barrier()
    return meta, history


def _one_epoch(torch, cfg: TrainConfig, ddp: distributed.Dist, data: _Data, step: _Step, device, epoch: int,
               bar, run_clock) -> tuple[int, float, int, float]:
    """One pass over this rank's shard: images seen, loss sum, correct count, seconds."""
    rng = np.random.default_rng(cfg.seed + epoch)
    gen = torch.Generator().manual_seed(cfg.seed + epoch)
    order = rng.permutation(data.train_idx)
    task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(order), loss="", acc="", speed="", eta="")
    t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
    chunks = (order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size))
    # A last global batch too small to give every rank an image is left out.
    index_batches = [ddp.shard(c) for c in chunks if len(c) >= ddp.world]
    for b, (x, y) in enumerate(loader.batches(data.train, step.pre, index_batches, step.workers,
                                              pin=device.type == "cuda")):
        logits, loss, y = _step(torch, cfg, step, x, y, device, epoch, gen)
        seen += len(y)
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        rate = seen / (time.perf_counter() - t0)
        status = f"loss {loss_sum / seen:.3f}", f"acc {correct / seen:.3f}", f"{rate:.0f} img/s"
        run_clock.step(1, f"epoch {epoch + 1}/{cfg.epochs} batch {b + 1}/{step.steps}: " + "  ".join(status))
        run_eta = run_clock.eta_s()
        bar.update(task, advance=len(y), loss=status[0], acc=status[1], speed=status[2],
                   eta="" if run_eta is None else f"run ETA {eta_text(run_eta)}")
    return seen, loss_sum, correct, time.perf_counter() - t0


def _step(torch, cfg: TrainConfig, step: _Step, x, y, device, epoch: int, gen):
    """Augment, forward (autocast under AMP), stop on a non-finite loss, backward, step."""
    x = _augment(torch, x, cfg.pad, cfg.hflip, step.fill, gen)
    x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    y = y.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=step.use_amp):
        logits = step.net(x)
        loss = step.criterion(logits, y)
    if not torch.isfinite(loss):
        raise InputError(f"training diverged (loss {loss.item()}) at epoch {epoch + 1}",
                         hint="lower --lr or check the data")
    step.opt.zero_grad(set_to_none=True)
    step.scaler.scale(loss).backward()
    step.scaler.step(step.opt)
    step.scaler.update()
    step.sched.step()
    return logits, loss, y


def _checkpoint(cfg: TrainConfig, model, meta: ModelMeta, history: list[EpochStats], stats: EpochStats,
                data: _Data, step: _Step, epoch: int) -> None:
    """The epoch's line on stderr, then ``cfg.out`` with the metrics (and, before the last epoch,
    the optimizer state that --resume continues from)."""
    val = stats.val_top1
    stderr.print(f"epoch {epoch + 1}/{cfg.epochs}: loss {stats.loss:.4f}  train {stats.train_top1:.4f}  "
                 f"val {'-' if val is None else f'{val:.4f}'}  {stats.images_per_s:.0f} img/s  {stats.seconds:.0f}s")
    meta.metrics = {"history": [asdict(h) for h in history], "val_top1": val,
                    "val_images": int(len(data.val_idx)), "val_source": data.val.source if data.val else None}
    done = epoch + 1 == cfg.epochs
    train_state = None if done else {"epoch": epoch + 1, "optimizer": step.opt.state_dict(),
                                      "scheduler": step.sched.state_dict()}
    save_checkpoint(cfg.out, model, meta, train_state)
