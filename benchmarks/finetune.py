"""Fine-tuning from pretrained-like weights against training from random init.

    python benchmarks/finetune.py [--arch resnet18] [--size 224] [--per-class 50]
        [--pretrain-epochs 3] [--epochs 12] [--device auto] [--export]
        [--work DIR] [--reuse] [--out benchmarks/RESULTS-finetune.md]

No hub downloads exist here, so the "pretrained" weights are made here, on a disjoint task:

* **source task**: Fashion-MNIST classes 0-5 (T-shirt/top, Trouser, Pullover, Dress, Coat,
  Sandal), all 36,000 train images, ``edgeresnet train`` at ``--size`` px;
* **target task**: classes 6-9 (Shirt, Sneaker, Bag, Ankle boot), only ``--per-class`` train
  images of each (the small folder an edge user has), scored on all 4,000 test images of
  those classes. No target image and no target class is seen in pre-training.

Then, on the same target data and the same number of epochs, each run is one
``edgeresnet train`` command as a user types it:

* ``random``: from random init (the from-scratch recipe, lr 0.2);
* ``init``: ``--init source.pt`` (the fine-tuning recipe, lr 0.01; the 6-class head is
  replaced by a fresh 4-class one);
* ``init+freeze``: ``--init source.pt --freeze-backbone 2``.

With ``--export``, the fine-tuned checkpoint goes through ``edgeresnet export --target ort``
(calibration on the target's train images, evaluation on its test images), so the INT8 drop
of a fine-tuned model is recorded too. Results and the machine they ran on go to ``--out``.
``--reuse`` exports a run trained earlier into the same ``--work`` (trained on a GPU machine,
exported and timed on the CPU the INT8 engine is meant for).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgeresnet.data import load_split
from edgeresnet.data.sources import FASHION_MNIST_CLASSES
from edgeresnet.backends.installed import describe

SOURCE, TARGET = list(range(0, 6)), list(range(6, 10))


def task_npz(path: Path, classes: list[int], per_class: int | None) -> dict:
    """An npz of ``classes`` (relabelled 0..k-1): the first ``per_class`` train images of each
    (all of them when None) and every test image of those classes."""
    train, test = load_split("fashion-mnist", "train"), load_split("fashion-mnist", "test")
    keep = []
    for c in classes:
        idx = np.flatnonzero(train.labels == c)
        keep.append(idx if per_class is None else idx[:per_class])
    tr = np.sort(np.concatenate(keep))
    te = np.flatnonzero(np.isin(test.labels, classes))
    relabel = np.full(10, -1)
    relabel[classes] = np.arange(len(classes))
    np.savez(path, x_train=train.images[tr], y_train=relabel[train.labels[tr]],
             x_test=test.images[te], y_test=relabel[test.labels[te]],
             class_names=np.array([FASHION_MNIST_CLASSES[c] for c in classes]))
    return {"train": int(len(tr)), "test": int(len(te)), "per_class": per_class, "classes": [FASHION_MNIST_CLASSES[c] for c in classes]}


def edgeresnet(*args: str, log: Path) -> float:
    """Run one CLI command as a user would; its output goes to ``log``; returns wall seconds."""
    cmd = [sys.executable, "-m", "edgeresnet", *args]
    print("$ edgeresnet " + " ".join(args), flush=True)
    start = time.perf_counter()
    with log.open("w") as fh:
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"edgeresnet {' '.join(args)} failed (exit {res.returncode}); see {log}:\n"
                         + "\n".join(log.read_text().splitlines()[-15:]))
    return seconds


def history(checkpoint: Path) -> tuple[list[float], dict]:
    from edgeresnet.models.checkpoint import load_checkpoint

    meta = load_checkpoint(checkpoint).meta
    return [h["val_top1"] for h in meta.metrics["history"]], meta.train


def gpu_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None


def machine_line() -> str:
    cpu = describe()["cpu"]
    return f"{cpu['model']} ({cpu['cores']} cores; {cpu.get('class')}; {', '.join(cpu['isa'])})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--pretrain-epochs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--export", action="store_true", help="also export the fine-tuned model to ORT INT8")
    ap.add_argument("--reuse", action="store_true",
                    help="skip the training when --work holds a finished run (finetune.json): export only")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeresnet-finetune"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/RESULTS-finetune.md"))
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)

    saved = work / "finetune.json"
    if args.reuse and saved.exists():  # the training ran already (e.g. on a GPU machine): export only
        done = json.loads(saved.read_text())
        source, target, results, trained_on = done["source"], done["target"], done["runs"], done["trained_on"]
        pre_s, source_val = done["pretrain_seconds"], done["source_val"]
        trained_in = Path(done["work"])
        for key in ("arch", "size", "per_class", "pretrain_epochs", "epochs"):  # the recorded run's, not the defaults
            setattr(args, key, done["args"][key])
        if not (work / "target.npz").exists():  # the export calibrates on it (made the same way again)
            task_npz(work / "target.npz", TARGET, target["per_class"])
    else:
        source = task_npz(work / "source.npz", SOURCE, None)
        target = task_npz(work / "target.npz", TARGET, args.per_class)
        common = ["--arch", args.arch, "--input-size", str(args.size), "--device", args.device, "--force"]
        pre_s = edgeresnet("train", *common, "--data", f"npz:{work / 'source.npz'}", "--epochs",
                           str(args.pretrain_epochs), "--batch-size", "128", "--out", str(work / "source.pt"),
                           log=work / "source.log")
        source_val, _ = history(work / "source.pt")
        runs = {"random": [], "init": ["--init", str(work / "source.pt")],
                "init+freeze": ["--init", str(work / "source.pt"), "--freeze-backbone", "2"]}
        results = {}
        for name, extra in runs.items():
            ckpt = work / f"{name.replace('+', '-')}.pt"
            argv = ["train", *common, "--data", f"npz:{work / 'target.npz'}", "--epochs", str(args.epochs),
                    "--batch-size", str(args.batch_size), *extra, "--out", str(ckpt)]
            seconds = edgeresnet(*argv, log=work / f"{ckpt.stem}.log")
            val, train_meta = history(ckpt)
            results[name] = {"val": val, "seconds": seconds, "lr": train_meta["recipe"]["lr"],
                             "init": train_meta.get("init"), "command": "edgeresnet " + " ".join(argv)}
        gpu = gpu_name() if args.device != "cpu" else None
        trained_on = machine_line() + (f", GPU {gpu}" if gpu else ", no GPU")
        trained_in = work

    def write(exported: dict | None) -> None:
        lines = [
            "# Fine-tuning: pretrained-like init against random init",
            "",
            f"Recorded {started:%Y-%m-%d} by `python benchmarks/finetune.py --arch {args.arch} --size {args.size} "
            f"--per-class {args.per_class} --pretrain-epochs {args.pretrain_epochs} --epochs {args.epochs}"
            f"`, on {trained_on}.",
            "",
            f"Source task (pre-training): Fashion-MNIST classes {', '.join(source['classes'])}; {source['train']:,} train "
            f"images, {args.pretrain_epochs} epochs at {args.size} px ({pre_s:.0f} s); its own test top-1 "
            f"{source_val[-1]:.2%}.",
            f"Target task: {', '.join(target['classes'])}; {target['train']} train images ({args.per_class} per class), "
            f"scored on all {target['test']:,} of their test images. No target image or class is seen in pre-training.",
            "",
            "Test top-1 on the target task after each epoch:",
            "",
            "| epoch | " + " | ".join(results) + " |",
            "|---|" + "---|" * len(results),
        ]
        for e in range(args.epochs):
            lines.append(f"| {e + 1} | " + " | ".join(f"{r['val'][e]:.2%}" for r in results.values()) + " |")
        lines += ["", "| run | peak lr | final top-1 | best top-1 | wall s | command |", "|---|---|---|---|---|---|"]
        for name, r in results.items():
            lines.append(f"| {name} | {r['lr']:g} | {r['val'][-1]:.2%} | {max(r['val']):.2%} | {r['seconds']:.0f} | "
                         f"`{r['command'].replace(str(trained_in) + '/', '')}` |")
        init = results["init"]["init"] or {}
        lines += ["", f"`--init` loaded {init.get('loaded')} tensors; replaced (class count differs): "
                  f"{', '.join(init.get('replaced', [])) or 'none'}."]
        if exported:
            drop = None if None in (exported["fp32"], exported["int8"]) else (exported["fp32"] - exported["int8"]) * 100
            lines += ["", f"Export of the `init` checkpoint: `{exported['command'].replace(str(work) + '/', '')}`: "
                      f"ORT FP32 top-1 {exported['fp32']:.2%}, INT8 {exported['int8']:.2%}"
                      + ("" if drop is None else f" (drop {drop:+.2f} pp)") + f"; {exported['calibration_text']}. "
                      f"Exported on {exported['machine']}."]
        args.out.write_text("\n".join(lines) + "\n")
        saved.write_text(json.dumps({"source": source, "target": target, "runs": results, "trained_on": trained_on,
                                     "pretrain_seconds": pre_s, "source_val": source_val, "export": exported,
                                     "work": str(trained_in), "args": {k: getattr(args, k) for k in
                                     ("arch", "size", "per_class", "pretrain_epochs", "epochs")}}, indent=1))
        print("\n".join(lines))

    write(None)  # the training result stands even if the export below fails or is cut short
    if args.export:
        out_dir = work / "export"
        argv = ["export", str(work / "init.pt"), "--calib", f"npz:{work / 'target.npz'}", "--target", "ort",
                "--out", str(out_dir), "--force"]  # --calib: the checkpoint names the training machine's path
        seconds = edgeresnet(*argv, log=work / "export.log")
        report = json.loads((out_dir / "report.json").read_text())
        rows = {r["precision"]: r for r in report["results"] if r["target"] == "ort" and r["status"] == "ok"}
        cal = report.get("calibration") or {}
        write({"command": "edgeresnet " + " ".join(argv), "seconds": seconds, "machine": machine_line(),
               "calibration_text": f"calibrated on {cal.get('images')} images of {cal.get('source')} ({cal.get('method')})",
               "fp32": rows.get("fp32", {}).get("top1"), "int8": rows.get("int8", {}).get("top1")})


if __name__ == "__main__":
    main()
