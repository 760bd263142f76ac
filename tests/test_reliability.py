"""Hostile files, bad input, interruptions, nothing lost; and a soak of the runtime API."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from edgeresnet import build_model
from edgeresnet.data.sources import open_image
from edgeresnet.errors import InputError

from .conftest import run_cli

MARKER = Path("/tmp/edgeresnet-matrix-pwned")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory, calib_set):
    d = tmp_path_factory.mktemp("bad")
    (d / "random.pt").write_bytes(os.urandom(2048))
    torch.save({"state_dict": _Exploit()}, d / "evil.pt")
    nan = build_model("resnet20", num_classes=10, in_channels=1).state_dict()
    nan["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(nan, d / "nan.pth")
    torch.save(build_model("resnet20", num_classes=7, in_channels=1).state_dict(), d / "seven.pth")
    (d / "empty" / "cls").mkdir(parents=True)
    (d / "noimg" / "cls").mkdir(parents=True)
    (d / "noimg" / "cls" / "a.png").write_text("not a png")
    (d / "noimg" / "cls" / "b.jpg").write_bytes(os.urandom(300))
    np.savez(d / "twoch.npz", images=np.zeros((8, 28, 28, 2), np.uint8), labels=np.arange(8) % 2)
    for c in range(10):  # a flat ImageFolder: no train/test split inside
        (d / "flat" / f"c{c}").mkdir(parents=True)
        i = int(np.flatnonzero(calib_set.labels == c)[0])
        Image.fromarray(calib_set.images[i, :, :, 0]).save(d / "flat" / f"c{c}" / "0.png")
    return d


@pytest.fixture(scope="module")
def bundle(ort_ov_bundle):
    trunc = ort_ov_bundle.parent / "trunc.onnx"
    trunc.write_bytes((ort_ov_bundle / "model.int8.ort.onnx").read_bytes()[:5000])
    return ort_ov_bundle


MATRIX = [  # (command line, exit code, words in stderr)
    ("train --arch resnet20 --data /no/such/dir --epochs 1 --out {tmp}/t.pt", 3, "unknown data spec"),
    ("train --arch resnet99 --data default --out {tmp}/t.pt", 3, "unknown architecture"),
    ("train --arch resnet20 --data default --in-channels 2 --out {tmp}/t.pt", 3, "1 or 3 channels"),
    ("train --arch resnet20 --data npz:{files}/twoch.npz --epochs 1 --out {tmp}/t.pt", 3, "channels"),
    ("train --arch resnet20 --data {files}/empty --out {tmp}/t.pt", 3, "no images"),
    ("eval {files}/random.pt --data default --arch resnet20", 3, "not a readable PyTorch checkpoint"),
    ("eval {files}/evil.pt --data default --arch resnet20", 3, "would run code"),
    ("eval {files}/nan.pth --data default --arch resnet20", 3, "NaN"),
    ("eval {files}/seven.pth --data default --arch resnet20", 3, "7 classes"),
    ("export /no/such.pt --out {tmp}/x", 3, "does not exist"),
    ("export {files}/random.pt --arch resnet20 --out {tmp}/x", 3, "not a readable"),
    ("export {files}/evil.pt --arch resnet20 --out {tmp}/x", 3, "would run code"),
    ("export default --target tpu --out {tmp}/x", 2, "unknown target"),
    ("export default --calib {files}/empty --out {tmp}/x", 3, "no images"),
    ("export default --calib {files}/noimg --out {tmp}/x", 3, "can be decoded"),
    ("export {files}/seven.pth --arch resnet20 --calib default --out {tmp}/x", 3, "7 classes"),
    ("export default --calib default --eval default --out {tmp}/x --calib-method kl", 2, "calib-method"),
    ("bench {bundle}/../trunc.onnx", 3, "not a valid ONNX"),
    ("bench {files}/random.pt", 3, "cannot benchmark"),
    ("predict {files} {files}/random.pt", 3, "edgeresnet.json"),
    ("predict {bundle} {files}/noimg --strict", 3, "cannot decode"),
    ("export default --calib {files}/flat --eval {files}/flat --out {tmp}/x", 3, "same images"),
    ("build {files}", 3, "build.json does not exist"),
    ("demo --out {files}", 3, "no earlier demo"),
    # --threads is bounded to 1..4x the cores before any work (3000 once started ~2,900 threads)
    ("predict {bundle} {files}/noimg --threads 100000", 2, "--threads 100000 is out of range"),
    ("eval default --data default --threads -1", 2, "--threads -1 is out of range"),
    ("export default --out {tmp}/x --threads 0", 2, "--threads 0 is out of range"),
    ("bench {bundle} --threads 3000", 2, "--threads 3000 is out of range"),
    ("train --arch resnet20 --data default --out {tmp}/t.pt --threads 3000", 2, "--threads 3000 is out of range"),
]


@pytest.mark.parametrize("threads", [0, -1, 10_000, 2.5, "4"])
def test_runtime_api_bounds_threads(bundle, threads):
    from edgeresnet.errors import UsageError
    from edgeresnet.runtime import load

    with pytest.raises(UsageError, match="threads must be an integer from 1 to"):
        load(bundle, threads=threads)


@pytest.mark.parametrize("line,code,words", MATRIX)
def test_bad_input_matrix(line, code, words, files, bundle, tmp_path):
    MARKER.unlink(missing_ok=True)
    args = line.format(files=files, bundle=bundle, tmp=tmp_path).split()
    res = run_cli(*args)
    assert res.returncode == code, (res.returncode, res.stderr)
    assert words in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3
    assert not MARKER.exists()
    assert not list(tmp_path.iterdir())  # nothing written, not even a temp folder


def test_failed_export_leaves_the_existing_one_untouched(bundle, files):
    before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    res = run_cli("export", str(files / "evil.pt"), "--arch", "resnet20", "--out", str(bundle), "--force")
    assert res.returncode == 3
    assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()} == before
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".exp.")]


def test_unreadable_images_are_skipped_with_a_count(bundle, files, test_set, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(test_set.images[i, :, :, 0]).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes((folder / "0.png").read_bytes()[:60])
    res = run_cli("predict", str(bundle), str(folder), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert len(data["predictions"]) == 3 and [s["image"] for s in data["skipped"]] == [str(folder / "broken.png")]
    assert "skipped 1 unreadable image" in res.stderr


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    Image.new("L", (200, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 pixels is 4x over: a "bomb" here
    with pytest.raises(InputError, match="refused image"):
        open_image(tmp_path / "big.png")


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)).save(buf, "PNG")
    return buf.getvalue()


@settings(max_examples=120, deadline=None)
@given(st.one_of(st.binary(max_size=600),
                 st.tuples(st.integers(0, len(_png_bytes()) - 1), st.integers(0, 255)),
                 st.integers(1, len(_png_bytes()) - 1)))
def test_image_loader_never_crashes_on_hostile_bytes(tmp_path_factory, case):
    data = _png_bytes()
    if isinstance(case, bytes):
        data = case
    elif isinstance(case, tuple):  # one corrupted byte
        data = data[:case[0]] + bytes([case[1]]) + data[case[0] + 1:]
    else:  # truncated
        data = data[:case]
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(data)
    try:
        im = open_image(path)
        assert im.mode in ("L", "RGB", "RGBA")
    except InputError as exc:
        assert str(path) in exc.message


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_interrupted_export_leaves_nothing_half_written_and_reruns(tmp_path, sig):
    out = tmp_path / "exp"
    args = [sys.executable, "-m", "edgeresnet", "export", "default", "--target", "ort", "--calib", "default",
            "--eval", "default", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    # Wait until the export is midway: its staging folder holds the FP32 ONNX.
    while time.time() < deadline and not list(tmp_path.glob(".exp.tmp-*/model.fp32.onnx")):
        time.sleep(0.05)
    assert proc.poll() is None, "the export finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not out.exists()  # never a half-written export at the target
    if sig != signal.SIGKILL:  # a catchable signal also removes the staging folder
        assert not list(tmp_path.glob(".exp.*"))
    res = run_cli("export", "default", "--target", "ort", "--calib", "default", "--no-eval", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert (out / "edgeresnet.json").exists()


@pytest.mark.slow
def test_soak_10000_predictions_from_4_threads(bundle, test_set):
    """Identical results to a single-threaded run and no memory growth beyond 10%."""
    import resource

    from edgeresnet.runtime import load

    model = load(bundle, target="ort", threads=1)
    images = [test_set.images[i] for i in range(500)]
    reference = [p.class_index for p in model.predict(images)]
    ref_scores = [p.score for p in model.predict(images)]

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    model.predict(images * 2)  # warm-up: allocator and runtime arenas reach their working size
    start = rss_mb()
    errors, mismatches = [], []

    def worker(offset: int) -> None:
        try:
            for round_ in range(5):  # 5 rounds x 500 images = 2,500 per thread, 10,000 in all
                order = np.roll(np.arange(500), offset * 97 + round_ * 13)
                preds = model.predict([images[i] for i in order], batch_size=25)
                for i, p in zip(order, preds):
                    if p.class_index != reference[i] or abs(p.score - ref_scores[i]) > 1e-6:
                        mismatches.append(int(i))
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not mismatches
    assert rss_mb() <= start * 1.10
