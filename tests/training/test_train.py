import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeresnet.models.checkpoint import load_checkpoint
from edgeresnet.training.loop import TrainConfig, _augment, train


@pytest.mark.slow
def test_short_training_lowers_the_loss_on_real_images(tmp_path):
    cfg = TrainConfig(arch="resnet20", data="fashion-mnist" if _debian() else "default", out=tmp_path / "r.pt",
                      epochs=3, limit=1536, val_limit=500, threads=2, lr=0.1, seed=1)
    meta, history = train(cfg)
    assert history[-1].loss < history[0].loss, history
    assert history[-1].train_top1 > history[0].train_top1, history
    assert history[-1].val_top1 > 0.3, history  # chance is 0.1
    ckpt = load_checkpoint(cfg.out)
    assert ckpt.train_state is None  # finished runs carry no optimizer state
    assert ckpt.meta.train["seed"] == 1 and len(ckpt.meta.metrics["history"]) == 3
    assert ckpt.meta.preprocess.size == 28 and ckpt.meta.in_channels == 1


@pytest.mark.slow
def test_small_input_stem_is_automatic_and_can_be_refused(tmp_path):
    """At <= 64 px an ImageNet-style net gets the 3x3 stem unless --no-small-input keeps the 7x7
    one (train small, fine-tune at 224: the stem must be the one the big input needs)."""
    for flag, small in ((None, True), (False, False)):
        cfg = TrainConfig(arch="resnet18", data="default", out=tmp_path / f"{flag}.pt", epochs=1, limit=64,
                          val_limit=32, threads=2, input_size=32, in_channels=3, small_input=flag)
        meta, _ = train(cfg)
        model = load_checkpoint(cfg.out).model
        assert meta.small_input is small and (model.conv1.kernel_size == (3, 3)) is small


def test_augmentation_crops_and_flips_per_sample():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    y = _augment(torch, x, pad=0, hflip=True, fill=torch.zeros(1), gen=gen)
    assert all(torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(2)) for i in range(2))
    z = _augment(torch, x, pad=2, hflip=False, fill=torch.full((1,), -1.0), gen=gen)
    assert z.shape == x.shape
    values = set(z.unique().tolist())
    assert values <= set(x.unique().tolist()) | {-1.0}


@pytest.mark.slow
def test_interrupted_training_resumes(tmp_path):
    out = tmp_path / "r.pt"
    data = "fashion-mnist" if _debian() else "default"
    args = [sys.executable, "-m", "edgeresnet", "train", "--arch", "resnet20", "--data", data, "--epochs", "3",
            "--limit", "768", "--val-limit", "200", "--threads", "2", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not out.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    ckpt = load_checkpoint(out)
    assert ckpt.train_state is not None and 1 <= ckpt.train_state["epoch"] < 3
    res = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    final = load_checkpoint(out)
    assert final.train_state is None
    assert [h["epoch"] for h in final.meta.metrics["history"]] == [1, 2, 3]
    assert not [p for p in tmp_path.iterdir() if p.name != "r.pt"]  # no temp files left behind


def _debian() -> bool:
    from ..conftest import DEBIAN
    return DEBIAN.exists()


def test_run_clock_prints_lines_with_an_overall_eta_when_not_a_terminal(capsys):
    from edgeresnet.core.progress import RunClock

    now = [0.0]
    clock = RunClock(total=100, every_s=30, enabled=True, clock=lambda: now[0])
    lines = []
    for i in range(100):
        now[0] += 1.0  # one batch a second: 100 s for the run
        line = clock.step(1, f"batch {i + 1}")
        if line:
            lines.append(line)
    assert len(lines) == 4  # at 30, 60 and 90 s, and the last batch
    assert lines[0] == "batch 30  30% of the run, ETA 1m10s" and lines[-1].startswith("batch 100  100%")
    assert RunClock(total=10, enabled=False).step(10) is None  # a terminal has the bars instead


def test_a_folder_of_32px_images_trains_at_32px(tmp_path, calib_set):
    from PIL import Image

    from edgeresnet.models.checkpoint import load_checkpoint

    for c in range(3):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in np.flatnonzero(calib_set.labels == c)[:8]:
            Image.fromarray(calib_set.images[i, :, :, 0]).resize((32, 32)).convert("RGB").save(
                tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    meta, history = train(TrainConfig(arch="resnet20", data=str(tmp_path / "imgs"), out=tmp_path / "r.pt", epochs=1,
                                      batch_size=8, threads=1))
    assert (meta.preprocess.size, meta.preprocess.channels) == (32, 3) and len(history) == 1
    assert load_checkpoint(tmp_path / "r.pt").meta.preprocess.size == 32


def test_init_fine_tunes_from_a_torchvision_style_state_dict(tmp_path, calib_set):
    import hashlib

    from edgeresnet import build_model
    from edgeresnet.errors import InputError

    pretrained = build_model("resnet18", num_classes=1000, in_channels=3)
    torch.save(pretrained.state_dict(), tmp_path / "r18.pth")
    meta, _ = train(TrainConfig(arch="resnet18", data="default", out=tmp_path / "ft.pt", epochs=1, limit=64,
                                val_limit=32, batch_size=32, input_size=32, in_channels=3, threads=1,
                                init=tmp_path / "r18.pth", freeze_backbone=1))
    init = meta.train["init"]
    assert init["sha256"] == hashlib.sha256((tmp_path / "r18.pth").read_bytes()).hexdigest()
    assert init["replaced"] == ["fc.bias", "fc.weight"] and init["loaded"] == len(pretrained.state_dict()) - 2
    assert meta.train["recipe"]["lr"] == 0.01 and not meta.small_input  # fine-tuning LR; the weights' 7x7 stem
    tuned = load_checkpoint(tmp_path / "ft.pt").model.state_dict()
    assert torch.equal(tuned["layer3.0.conv1.weight"], pretrained.state_dict()["layer3.0.conv1.weight"])  # frozen
    assert tuned["fc.weight"].shape == (10, 512)
    with pytest.raises(InputError, match="pass the --arch the weights were trained as"):
        train(TrainConfig(arch="resnet20", data="default", out=tmp_path / "x.pt", epochs=1, limit=32,
                          init=tmp_path / "r18.pth"))


def _losses(path) -> list[float]:
    return [h["loss"] for h in load_checkpoint(path).meta.metrics["history"]]


@pytest.mark.slow
def test_torchrun_trains_like_one_process_and_resumes(tmp_path):
    """DDP on gloo with 2 CPU processes: the same global batch gives the same losses as one
    process (within BN's per-rank statistics), and an interrupted run resumes under torchrun."""
    common = ["train", "--arch", "resnet20", "--data", "default", "--limit", "512", "--val-limit", "300",
              "--batch-size", "64", "--lr", "0.02", "--device", "cpu", "--threads", "1"]
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "edgeresnet"]
    res = subprocess.run(ddp + common + ["--epochs", "2", "--out", str(tmp_path / "ddp.pt")], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("saved ") == 1  # rank 0 speaks for the run
    one = subprocess.run([sys.executable, "-m", "edgeresnet"] + common + ["--epochs", "2", "--out", str(tmp_path / "one.pt")],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    assert np.allclose(_losses(tmp_path / "ddp.pt"), _losses(tmp_path / "one.pt"), atol=0.1)

    out = tmp_path / "r.pt"
    proc = subprocess.Popen(ddp + common + ["--epochs", "3", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not out.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert 1 <= load_checkpoint(out).train_state["epoch"] < 3
    res = subprocess.run(ddp + common + ["--epochs", "3", "--out", str(out), "--resume"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    final = load_checkpoint(out)
    assert final.train_state is None and [h["epoch"] for h in final.meta.metrics["history"]] == [1, 2, 3]


def _png_folder(root, calib_set, classes: int = 3, per_class: int = 8, side: int = 32):
    from PIL import Image

    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in np.flatnonzero(calib_set.labels == c)[:per_class]:
            Image.fromarray(calib_set.images[i, :, :, 0]).resize((side, side)).convert("RGB").save(
                root / f"c{c}" / f"{i}.png")
    return root


def test_dataloader_workers_decode_the_same_batches_as_the_training_process(tmp_path, calib_set):
    """Workers only decode: the batches, and so the training, are the same with and without them."""
    from edgeresnet.data import default_preprocess, load_split, loader

    folder = _png_folder(tmp_path / "imgs", calib_set)
    data = load_split(str(folder), "train")
    pre = default_preprocess(data)
    order = [np.array([5, 0, 17]), np.array([3, 9]), np.array([23])]
    inline = list(loader.batches(data, pre, order, workers=0))
    parallel = list(loader.batches(data, pre, order, workers=2))
    assert len(inline) == len(parallel) == 3
    for (x0, y0), (x1, y1), idx in zip(inline, parallel, order):
        assert x0.shape == (len(idx), 3, 32, 32) and torch.equal(x0, x1) and torch.equal(y0, y1)
        assert y0.tolist() == data.labels[idx].tolist()
    assert loader.auto_workers(data, pre) == min(loader.MAX_AUTO_WORKERS, max(0, (__import__("os").cpu_count() or 1) - 1))
    losses = []
    for workers in (0, 1):
        _, history = train(TrainConfig(arch="resnet20", data=str(folder), out=tmp_path / f"w{workers}.pt", epochs=1,
                                       batch_size=8, threads=1, workers=workers))
        losses.append(history[0].loss)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def _children(pid: int) -> set[int]:
    from pathlib import Path

    kids = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids |= {int(k) for k in (task / "children").read_text().split()}
        except OSError:
            pass
    return kids


@pytest.mark.slow
def test_sigterm_stops_training_within_a_batch_and_leaves_no_workers(tmp_path, calib_set):
    """The issue's case: ResNet-20 on a folder at 224 px, where one batch takes seconds. A `kill`
    in the middle of an epoch ends the run within about one batch, with exit 143, no decoding
    worker left behind and the last epoch's checkpoint intact."""
    folder = _png_folder(tmp_path / "imgs", calib_set, per_class=16)
    out = tmp_path / "r.pt"
    args = [sys.executable, "-m", "edgeresnet", "train", "--arch", "resnet20", "--data", str(folder),
            "--input-size", "224", "--epochs", "20", "--batch-size", "16", "--workers", "1", "--threads", "2",
            "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not out.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    time.sleep(1.0)  # into the next epoch's batches
    workers = _children(proc.pid)
    assert workers, "training on a folder decodes in a DataLoader worker"
    start = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    took = time.time() - start
    print(f"SIGTERM acted in {took:.1f} s")
    assert proc.returncode == 143, err.decode()[-2000:]
    assert "Traceback" not in err.decode()
    assert took < 15, f"SIGTERM took {took:.1f} s to act"
    time.sleep(0.5)
    assert not [w for w in workers if Path(f"/proc/{w}").exists() and "zombie" not in Path(f"/proc/{w}/status").read_text()]
    ckpt = load_checkpoint(out)
    assert ckpt.train_state is not None and ckpt.train_state["epoch"] >= 1
    assert not [p for p in tmp_path.iterdir() if p.name not in ("r.pt", "imgs")]


@pytest.mark.slow
def test_a_folder_of_1400_small_images_trains_at_native_size_in_bounded_memory(tmp_path, calib_set):
    """The issue's run: 1,400 PNGs of 32x32 given to `train --arch resnet20` took 10 GB at 224 px.
    At the data's own size, with batches decoded by workers, the peak of the largest process
    (trainer or worker) stays near what torch itself needs."""
    folder = _png_folder(tmp_path / "imgs", calib_set, classes=10, per_class=140)
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "edgeresnet", "train", "--arch", "resnet20",
                          "--data", str(folder), "--epochs", "1", "--threads", "2", "--out", str(tmp_path / "r.pt")],
                         capture_output=True, text=True, timeout=600)
    code, peak_kb = map(int, res.stdout.split()[-2:])
    assert code == 0, res.stderr[-2000:]
    assert "training at 32 px: the data's own size (32x32)" in res.stderr
    assert peak_kb < 1_500_000, f"peak RSS {peak_kb / 1e6:.2f} GB"
    assert load_checkpoint(tmp_path / "r.pt").meta.preprocess.size == 32


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "edgeresnet", "train",
            "--arch", "resnet20", "--data", "default", "--device", "cpu", "--threads", "1", *args]


@pytest.mark.slow
def test_torchrun_with_a_world_that_does_not_divide_the_work(tmp_path):
    """Global batch 3 on 2 processes (shards of 2 and 1) and 7 images (a last batch of 1, too
    small to share, is left out) trains; a global batch of 1 is a usage error on every rank."""
    res = subprocess.run(_torchrun("--limit", "7", "--val-limit", "20", "--batch-size", "3", "--epochs", "1",
                                   "--out", str(tmp_path / "odd.pt")), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert load_checkpoint(tmp_path / "odd.pt").meta.train["images"] == 7
    res = subprocess.run(_torchrun("--batch-size", "1", "--epochs", "1", "--out", str(tmp_path / "one.pt")),
                         capture_output=True, text=True, timeout=300)
    assert res.stderr.count("--batch-size 1 is the global batch; it cannot be shared by 2 processes") == 2
    assert "internal error" not in res.stderr and not (tmp_path / "one.pt").exists()


@pytest.mark.slow
def test_a_killed_torchrun_rank_stops_the_others_with_one_line_and_the_checkpoint_intact(tmp_path):
    """`kill -9` of rank 1 mid-run: rank 0 stops within seconds with one line (not an internal
    error from gloo), and the checkpoint of the last finished epoch loads and resumes."""
    out = tmp_path / "r.pt"
    proc = subprocess.Popen(_torchrun("--limit", "512", "--val-limit", "100", "--batch-size", "64", "--epochs", "30",
                                      "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not out.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    ranks = {}
    for pid in _children(proc.pid):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        ranks.update({int(e.split(b"=")[1]): pid for e in env if e.startswith(b"RANK=")})
    start = time.time()
    os.kill(ranks[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert time.time() - start < 30
    assert "internal error" not in err, err[-3000:]
    assert "rank 0 of 2: another training process stopped" in err or "SIGTERM" in err  # torchrun may stop rank 0 first
    assert not any(Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()
                   for pid in ranks.values())
    ckpt = load_checkpoint(out)
    assert 1 <= ckpt.train_state["epoch"] < 30
