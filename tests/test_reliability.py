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
from edgeresnet.bench.timing import peak_rss_mb
from edgeresnet.data.sources import open_image
from edgeresnet.errors import InputError

from .conftest import FailingEngine, make_bundle, run_cli

MARKER = Path("/tmp/edgeresnet-matrix-pwned")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _hostile_files(d: Path) -> None:
    """Issue 15's tiny files that once exhausted memory, hung, or crashed with exit 1."""
    from edgeresnet.models.checkpoint import FORMAT, load_checkpoint

    img = np.zeros((4, 28, 28), np.uint8)
    np.savez(d / "biglabel.npz", images=img, labels=np.array([0, 1, 2, 10**10]))
    np.savez(d / "neglabel.npz", images=img, labels=np.array([0, 1, 2, -1]))
    np.savez(d / "strlabel.npz", images=img, labels=np.array(["a", "b", "c", "d"]))
    np.savez(d / "fivech.npz", images=np.zeros((4, 28, 28, 5), np.uint8), labels=np.arange(4))
    (d / "cifar").mkdir()
    import pickle

    (d / "cifar" / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    ckpt = load_checkpoint("default")
    sd = ckpt.model.state_dict()
    meta = ckpt.meta.to_dict()
    for name, change in (("bigclasses", {"num_classes": 10**9}), ("threenames", {"classes": ["a", "b", "c"]}),
                         ("badmeta", {"preprocess": {"channels": 1, "size": 100000, "mean": [0], "std": [1]}})):
        torch.save({"format": FORMAT, "meta_json": json.dumps({**meta, **change}), "state_dict": sd}, d / f"{name}.pt")
    torch.save({"format": FORMAT, "meta_json": "[" * 100_000 + "]" * 100_000, "state_dict": sd}, d / "nested.pt")
    stride0 = dict(sd)
    stride0["fc.weight"] = torch.zeros(1, 64).expand(10**9, 64)  # 1e9 rows in 256 bytes
    torch.save(stride0, d / "stride0.pth")
    torch.save({"conv1.weight": "x", "fc.weight": 3}, d / "nontensor.pth")
    (d / "text.pt").write_text("this is not a checkpoint\n")
    (d / "evil4.pth").write_bytes(pickle.dumps({"w": _Exploit()}, protocol=4))  # a plain pickle, not torch's zip
    from onnx import TensorProto, helper, save

    graph = helper.make_graph([helper.make_node("Foo", ["x"], ["y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
         str(d / "customop.onnx"))
    (d / "folder.pt").mkdir()
    os.mkfifo(d / "fifo.pt")
    _hostile_onnx(d, ckpt)


def tiny_classifier(path: Path, *, opset: int = 17, op: tuple[str, str] | None = None, dtype: int = 1,
                    side: int = 8, external: int | None = None) -> None:
    """A valid 3 x side x side -> 10 classifier, with one defect: an opset, an op
    ``(domain, name)`` before it, an input ``dtype`` (TensorProto), an ``external`` data length."""
    from onnx import TensorProto, helper, numpy_helper, save

    x = "x" if dtype == TensorProto.FLOAT else "raw"
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    if op:
        nodes[:0] = [helper.make_node(op[1], ["x"], ["x2"], domain=op[0])]
        nodes[1].input[0] = "x2"
    if x != "x":
        nodes[:0] = [helper.make_node("Cast", [x], ["x"], to=TensorProto.FLOAT)]
    inits = [numpy_helper.from_array(np.ones((10, 3), np.float32), "w"), numpy_helper.from_array(np.zeros(10, np.float32), "b")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(x, dtype, [1, 3, side, side])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                              + ([helper.make_opsetid(op[0], 1)] if op and op[0] else []), ir_version=8)
    if external is not None:
        w = model.graph.initializer[0]
        w.ClearField("raw_data")
        w.ClearField("float_data")
        w.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(external))):
            entry = w.external_data.add()
            entry.key, entry.value = key, value
        (path.parent / "w.bin").write_bytes(bytes(100))
    save(model, str(path))


def _hostile_onnx(d: Path, ckpt) -> None:
    """Issue 23: ONNX files that crashed `export`/`bench` with "internal error" or were read wrong."""
    import onnx

    from edgeresnet.export.torch_onnx import export_onnx

    export_onnx(ckpt.model, ckpt.meta, d / "own.onnx")  # one of ours: 10 outputs, our metadata
    for name, key, value in (("threenames", "classes", json.dumps(["a", "b", "c"])), ("classes12", "classes", "12"),
                             ("nestedmeta", "preprocess", "[" * 50_000 + "]" * 50_000)):
        model = onnx.load(str(d / "own.onnx"))
        next(p for p in model.metadata_props if p.key == f"edgeresnet.{key}").value = value
        onnx.save(model, str(d / f"{name}.onnx"))
    tiny_classifier(d / "evil.onnx", op=("com.evil", "Evil"))
    tiny_classifier(d / "extdata.onnx", external=4 * 10**12)  # 4 TB claimed over a 100-byte file
    tiny_classifier(d / "uint8.onnx", dtype=onnx.TensorProto.UINT8)
    tiny_classifier(d / "opset1.onnx", opset=1)
    tiny_classifier(d / "opset99.onnx", opset=99)
    tiny_classifier(d / "bigside.onnx", side=100_000)
    tiny_classifier(d / "mistyped.onnx")  # onnx.checker passes it; ONNX Runtime cannot type it
    model = onnx.load(str(d / "mistyped.onnx"))
    model.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(np.zeros(10, np.int32), "b"))
    onnx.save(model, str(d / "mistyped.onnx"))
    tiny_classifier(d / "batch1.onnx")  # a dynamic batch that its Reshape to [1, 3] cannot run
    model = onnx.load(str(d / "batch1.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    model.graph.node[1].CopyFrom(onnx.helper.make_node("Reshape", ["p", "s"], ["f"]))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 3], np.int64), "s"))
    onnx.save(model, str(d / "batch1.onnx"))


def _edit_onnx_preprocess(bundle: Path) -> None:
    """The FP32 ONNX model's edgeresnet.preprocess metadata with a string for a number."""
    import onnx

    from edgeresnet.export.torch_onnx import set_metadata

    model = onnx.load(str(bundle / "model.fp32.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    props["edgeresnet.preprocess"] = json.dumps({**json.loads(props["edgeresnet.preprocess"]), "mean": "0.2"})
    set_metadata(model, props)
    onnx.save(model, str(bundle / "model.fp32.onnx"))


def _preprocess_files(d: Path) -> None:
    """--preprocess files with one mistyped field each (issue 23)."""
    for name, spec in (("sizebool", {"size": True}), ("sizefloat", {"size": 28.5}), ("meanstr", {"mean": "0.2"}),
                       ("mean3", {"mean": [0.1, 0.2, 0.3]}), ("channels3", {"channels": 3})):
        (d / f"pre-{name}.json").write_text(json.dumps(spec))


@pytest.fixture(scope="module")
def hostile_bundles(ort_ov_bundle, trt_bundle, tmp_path_factory):
    """Copies of the shared bundle, each with one hand-made defect in a file commands read."""
    import shutil

    root = tmp_path_factory.mktemp("hostile")

    def copy(name, edit):
        dst = root / name
        shutil.copytree(ort_ov_bundle, dst)
        edit(dst)
        return dst

    def manifest(change):
        def edit(dst):
            m = json.loads((dst / "edgeresnet.json").read_text())
            change(m)
            (dst / "edgeresnet.json").write_text(json.dumps(m))
        return edit

    copy("bigsize", manifest(lambda m: m["preprocess"].update(size=100000)))
    copy("nolist", manifest(lambda m: m.update(artifacts="all of them")))
    copy("nostd", manifest(lambda m: m["preprocess"].update(std=[0.0])))
    copy("fifo", lambda d: ((d / "model.int8.ort.onnx").unlink(), os.mkfifo(d / "model.int8.ort.onnx"),
                            (d / "model.int8.ort-w7.onnx").unlink(), os.mkfifo(d / "model.int8.ort-w7.onnx")))
    copy("badreport", lambda d: (d / "report.json").write_text(json.dumps({"model": {}, "results": ["x", 3]})))
    copy("nested", lambda d: (d / "edgeresnet.json").write_text("[" * 100_000 + "]" * 100_000))
    copy("onnxpre", _edit_onnx_preprocess)
    copy("noshape", lambda d: _edit_json(d / "report.json", lambda r: r["model"].pop("input_shape")))
    copy("variant", manifest(lambda m: [a.update(variants={"u8s8-7bit": "calibration.json"})
                                        for a in m["artifacts"] if a.get("variants")]))
    _trt_bundles(root, trt_bundle)
    return root


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _trt_bundles(root: Path, trt_bundle: Path) -> None:
    """Issue 23: copies of a TensorRT bundle whose build.json was edited, as is ("changed since
    export") and with the manifest's hash edited to match (then every field and every file it
    names is checked), and with links where build reads or writes."""
    import hashlib
    import shutil

    def copy(name, edit, sign=False):
        dst = root / name
        shutil.copytree(trt_bundle, dst, symlinks=True)
        edit(dst / "trt")
        if sign:
            digest = hashlib.sha256((dst / "trt" / "build.json").read_bytes()).hexdigest()
            _edit_json(dst / "edgeresnet.json", lambda m: m["files"].update({"trt/build.json": digest}))

    def names(**change):
        return lambda trt: _edit_json(trt / "build.json", lambda b: b.update(change))

    passwd = names(int8_onnx="/etc/passwd", fp32_onnx="../../../../etc/shadow")
    copy("trt-passwd", passwd)
    copy("trt-passwd-signed", passwd, sign=True)
    copy("trt-shadow-signed", names(fp32_onnx="../../../../etc/shadow"), sign=True)
    copy("trt-unlisted-signed", lambda trt: (shutil.copy(trt / "model.int8.trt.qdq.onnx", trt / "other.onnx"),
                                             names(int8_onnx="other.onnx")(trt)), sign=True)
    plan5 = lambda trt: (trt / "build.json").write_text(json.dumps({"plan": 5, "engines": "x"}))  # noqa: E731
    copy("trt-plan5", plan5)
    copy("trt-plan5-signed", plan5, sign=True)
    copy("trt-jsonlink", lambda trt: ((trt / "build.json").unlink(), (trt / "build.json").symlink_to("/etc/passwd")))
    copy("trt-enginelink", lambda trt: (trt / "model.int8.engine").symlink_to(root / "outside.engine"))
    copy("trt-badbench", lambda trt: (trt.parent / "bench.json").write_text(json.dumps(
        {"results": [{"target": "ort", "precision": "int8", "latency_ms": {"p50": "fast"}}]})))
    copy("trt-noreport", lambda trt: (trt.parent / "report.json").unlink())


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
    _hostile_files(d)
    _preprocess_files(d)
    for c in range(10):  # a flat ImageFolder: no train/test split inside
        (d / "flat" / f"c{c}").mkdir(parents=True)
        i = int(np.flatnonzero(calib_set.labels == c)[0])
        Image.fromarray(calib_set.images[i, :, :, 0]).save(d / "flat" / f"c{c}" / "0.png")
    return d


@pytest.fixture(scope="module")
def toy_bundle(tmp_path_factory):
    """A tiny bundle whose manifest `write_manifest` wrote (no export needed to read a manifest)."""
    return make_bundle(tmp_path_factory.mktemp("toy"), {"model.fp32.onnx": b"not read here"})


@pytest.fixture(scope="module")
def bundle(ort_ov_bundle):
    trunc = ort_ov_bundle.parent / "trunc.onnx"
    trunc.write_bytes((ort_ov_bundle / "model.int8.ort.onnx").read_bytes()[:5000])
    return ort_ov_bundle


MATRIX = [  # (command line, exit code, words in stderr)
    ("train --arch resnet20 --data /no/such/dir --epochs 1 --out {tmp}/t.pt", 3, "unknown data spec"),
    ("train --arch resnet99 --data default --out {tmp}/t.pt", 3, "unknown architecture"),
    ("train --arch resnet20 --data default --in-channels 2 --out {tmp}/t.pt", 2, "--in-channels must be 1 or 3"),
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
    ("export {files}/seven.pth --arch resnet20 --calib default --eval default --out {tmp}/x", 3, "7 classes"),
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
    # issue 15: tiny files that exhausted memory or hung, each bounded before allocation
    ("eval default --data npz:{files}/biglabel.npz", 3, "the limit is 0 to 100,000"),
    ("eval {files}/bigclasses.pt --data default", 3, "num_classes is 1000000000"),
    ("eval {files}/stride0.pth --arch resnet20 --data default", 3, "the limit is 1 to 100,000"),
    ("predict {hostile}/bigsize {files}/noimg", 3, "size must be an integer from 1 to 4,096, got 100000"),
    ("predict {hostile}/fifo {files}/noimg --target ort", 3, "not a regular file"),
    ("eval {files}/fifo.pt --data default", 3, "not a regular file"),
    # issue 15: crashes that were "internal error" (exit 1)
    ("eval {files}/threenames.pt --data default", 3, "names 3 classes but has 10 outputs"),
    ("eval {files}/text.pt --data default", 3, "not a readable PyTorch checkpoint: a text file"),
    ("eval {files}/nontensor.pth --arch resnet20 --data default", 3, "not a ResNet state_dict"),
    ("eval {files}/badmeta.pt --data default", 3, "size must be an integer from 1 to 4,096, got 100000"),
    ("eval {files}/nested.pt --data default", 3, "not valid JSON"),
    ("export {files}/folder.pt --out {tmp}/x", 3, "is a directory"),
    ("eval {files}/customop.onnx --data default", 3, "is an ONNX model, not a PyTorch checkpoint"),
    ("predict {hostile}/nolist {files}/noimg", 3, "'artifacts' is not a list"),
    ("predict {hostile}/nested {files}/noimg", 3, "nested too deeply"),
    ("predict {hostile}/nostd {files}/noimg", 3, "std must be a list of positive and finite numbers"),
    ("bench {hostile}/badreport", 3, "report.json is malformed"),
    ("bench {files}/customop.onnx --min-seconds 0.1", 3, "is op Foo from domain com.example"),
    ("eval default --data npz:{files}/strlabel.npz", 3, "labels must be integers"),
    ("eval default --data npz:{files}/neglabel.npz", 3, "labels are class indices from 0"),
    ("eval default --data npz:{files}/fivech.npz", 3, "1 or 3 channels"),
    ("eval default --data cifar10:{files}/cifar", 3, "has no labels"),
    ("train --arch resnet20 --data default --out {files}/seven.pth", 3, "exists"),
    ("export default --force --out {files}/flat", 3, "not an edgeresnet export"),
    # issue 15: flags that were accepted and run to the end, or crashed
    ("export default --out {tmp}/x --input-size 0", 2, "--input-size must be"),
    ("export default --out {tmp}/x --max-drop nan", 2, "--max-drop must be from 0 to 100"),
    ("export default --out {tmp}/x --calib-size 1000000000000", 2, "--calib-size must be"),
    ("train --arch resnet20 --data default --out {tmp}/t.pt --batch-size 0", 2, "--batch-size must be"),
    ("train --arch resnet20 --data default --out {tmp}/t.pt --pad -3", 2, "--pad must be"),
    ("train --arch resnet20 --data default --out {tmp}/t.pt --label-smoothing 2", 2, "--label-smoothing must be"),
    ("train --arch resnet20 --data default --out {tmp}/t.pt --lr nan", 2, "--lr must be"),
    ("train --arch resnet20 --data default --out {files}", 2, "is a directory"),
    ("train --arch resnet20 --data default --out {tmp}/t.pt --device cuda:7", 4, "no such CUDA device"),
    ("eval default --data default --limit 0 --json", 2, "--limit must be"),
    ("bench {bundle} --min-seconds nan", 2, "--min-seconds must be"),
    ("bench {bundle} --requests -1", 2, "--requests must be"),
    ("predict {bundle} {files}/noimg --top-k -2", 2, "--top-k must be"),
    # issue 23: lost work, wrong results accepted, messages (the lead's group)
    ("export default --float-layers * --out {tmp}/x --target ort", 2, "nothing would run in INT8"),
    ("train --arch resnet20 --data default --init {files}/evil4.pth --out {tmp}/t.pt", 3, "would run code when unpickled (it calls posix.system)"),
    ("eval {files}/evil4.pth --data default --arch resnet20", 3, "would run code"),
    ("eval default --data npz:{files}/neglabel.npz", 3, "hint: store class indices"),
    # issue 23: the preprocessing spec has one typed schema; a flag is usage (2), a file bad input (3)
    *[(f"{cmd} {flags}", code, words) for cmd in ("eval default --data default --limit 50", "export default --out {tmp}/x")
      for flags, code, words in (
          ("--preprocess {files}/pre-sizebool.json", 3, '"size" must be an integer from 1 to 4,096, got true'),
          ("--preprocess {files}/pre-sizefloat.json", 3, '"size" must be an integer from 1 to 4,096, got 28.5'),
          ("--preprocess {files}/pre-meanstr.json", 3, '"mean" must be a list of finite numbers, got "0.2"'),
          ("--preprocess {files}/pre-mean3.json", 3, '"mean" has 3 values; the model takes 1 channel'),
          ("--preprocess {files}/pre-channels3.json", 3, '"channels" is 3; the model takes 1 channel'),
          ("--std 0", 2, "--std must be positive and finite, got 0"),
          ("--std -0.5", 2, "--std must be positive and finite, got -0.5"),
          ("--std inf", 2, "--std must be positive and finite, got inf"),
          ("--mean nan", 2, "--mean must be finite, got nan"),
          ("--size 0", 2, "--size must be an integer from 1 to 4,096, got 0"),
          ("--size 100000", 2, "--size must be an integer from 1 to 4,096, got 100000"),
          ("--interpolation lanczos", 2, "--interpolation must be one of bilinear, bicubic, nearest, got lanczos"),
          ("--mean 0.1,0.2,0.3", 2, "--mean has 3 values; the model takes 1 channel"),
      )],
    ("train --arch resnet20 --data default --out {tmp}/t.pt --mean 0.1,0.2,0.3", 2, "--mean has 3 values; the model takes 1 channel"),
    ("train --arch resnet20 --data default --out {tmp}/t.pt --std nan", 2, "--std must be positive and finite, got nan"),
    ("train --arch resnet20 --data default --out {tmp}/t.pt --preprocess {files}/pre-sizebool.json", 3, '"size" must be an integer'),
    ("export {hostile}/onnxpre/model.fp32.onnx --out {tmp}/x", 3, "edgeresnet.preprocess: the preprocessing spec's mean must be"),
    # issue 23: ONNX files given by the user, each refused before a runtime opens it (or, where
    # ONNX Runtime still refuses it, as the file's fault), with a hint
    ("export {files}/threenames.onnx --out {tmp}/x", 3, "threenames.onnx names 3 classes but has 10 outputs"),
    ("export {files}/classes12.onnx --out {tmp}/x", 3, "edgeresnet.classes must be a JSON list of strings"),
    ("export {files}/evil.onnx --out {tmp}/x", 3, "is op Evil from domain com.evil"),
    ("export {files}/customop.onnx --out {tmp}/x", 3, "is op Foo from domain com.example"),
    ("bench {files}/evil.onnx", 3, "is op Evil from domain com.evil"),
    ("export {files}/extdata.onnx --out {tmp}/x", 3, "claims 4,000,000,000,000 bytes at offset 0 of w.bin, a 100-byte"),
    ("bench {files}/extdata.onnx", 3, "claims 4,000,000,000,000 bytes"),
    ("export {files}/uint8.onnx --out {tmp}/x", 3, "is uint8; edgeresnet takes a float32 NCHW input"),
    ("bench {files}/uint8.onnx", 3, "is uint8; edgeresnet takes a float32 NCHW input"),
    ("export {files}/opset1.onnx --out {tmp}/x", 3, "uses ONNX opset 1; edgeresnet reads opsets 7 to"),
    ("export {files}/opset99.onnx --out {tmp}/x", 3, "uses ONNX opset 99; edgeresnet reads opsets 7 to"),
    ("bench {files}/opset99.onnx", 3, "uses ONNX opset 99"),
    ("export {files}/nestedmeta.onnx --out {tmp}/x", 3, "edgeresnet.preprocess is JSON nested 50000 deep"),
    ("export {files}/bigside.onnx --out {tmp}/x", 3, "its input side is 100000: the limit is 1 to 4,096"),
    ("bench {files}/bigside.onnx", 3, "its input side is 100000"),
    ("export {files}/mistyped.onnx --out {tmp}/x", 3, "ONNX Runtime cannot load"),
    ("export {files}/batch1.onnx --calib default --out {tmp}/x", 3, "batch1.onnx fails on a batch of shape ["),
    # issue 23: Integrity. Every bundle file a command opens goes through one manifest-verified
    # reader (bundle.Bundle): hashed files are checked first, and a path one names stays inside.
    ("build {hostile}/trt-passwd --dry-run --json", 3, "trt/build.json in"),  # ... changed since export
    ("build {hostile}/trt-passwd", 3, "changed since export"),
    ("build {hostile}/trt-passwd-signed --dry-run --json", 3, "int8_onnx names a file outside the bundle"),
    ("build {hostile}/trt-shadow-signed", 3, "fp32_onnx names a file outside the bundle"),
    ("build {hostile}/trt-unlisted-signed --dry-run", 3, "names trt/other.onnx, a file"),
    ("build {hostile}/trt-plan5 --dry-run --json", 3, "changed since export"),
    ("build {hostile}/trt-plan5-signed --dry-run --json", 3, "trt/build.json: 'batch_range' is not a list"),
    ("build {hostile}/trt-jsonlink --dry-run", 3, "trt/build.json in"),  # ... is a link to a file outside
    ("build {hostile}/trt-enginelink", 3, "model.int8.engine in"),  # ... is a symbolic link
    ("build {hostile}/trt-passwd --dry-run --trt-version -1", 2, "--trt-version '-1' is not a TensorRT version"),
    ("build {files} --dry-run --trt-version 10.x", 2, "--trt-version '10.x' is not a TensorRT version"),
    ("build {hostile}/trt-badbench", 3, "latency 'p50' is not a number"),
    ("build {hostile}/trt-noreport", 3, "report.json does not exist"),
    ("bench {hostile}/noshape", 3, "'model.input_shape' is not 4 sizes"),
    ("predict {hostile}/variant {files}/noimg --target ort", 3, "names the variant calibration.json"),
]


@pytest.mark.parametrize("threads", [0, -1, 10_000, 2.5, "4"])
def test_runtime_api_bounds_threads(bundle, threads):
    from edgeresnet.errors import UsageError
    from edgeresnet.runtime import load

    with pytest.raises(UsageError, match="threads must be an integer from 1 to"):
        load(bundle, threads=threads)


def _threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return threading.active_count()


def run_inprocess(*args: str):
    """The CLI in this process (typer's runner): exit code and stderr as a user sees them,
    without a new interpreter per case (the matrix stays in the fast tier)."""
    from typer.testing import CliRunner

    from edgeresnet.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("line,code,words", MATRIX)
def test_bad_input_matrix(line, code, words, files, bundle, hostile_bundles, tmp_path):
    MARKER.unlink(missing_ok=True)
    before = {p: p.stat().st_mtime_ns for p in files.rglob("*") if p.is_file()}
    args = line.format(files=files, bundle=bundle, tmp=tmp_path, hostile=hostile_bundles).split()
    peak_before = peak_rss_mb()
    res = run_inprocess(*args)
    assert res.exit_code == code, (res.exit_code, res.stderr, res.exception)
    assert peak_rss_mb() - peak_before < 2048  # no case allocates more than 2 GB on its way to the error
    assert _threads() <= 4 * (os.cpu_count() or 1) + 32  # nor starts more threads than 4x the cores (+ pools)
    assert words in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3
    assert res.stderr.strip().splitlines()[-1].startswith("hint: ")  # the README promises a hint with every error
    assert not MARKER.exists()
    assert not list(tmp_path.iterdir())  # nothing written, not even a temp folder
    assert {p: p.stat().st_mtime_ns for p in files.rglob("*") if p.is_file()} == before  # nothing of theirs touched


@pytest.mark.parametrize("line,hint", [
    ("eval default --data default --size 100000", "e.g. --size 224"),
    ("eval default --data default --std 0", "--std 0.5"),
    ("eval default --data default --mean 0.1,0.2,0.3", "e.g. --mean 0.5"),
    ("eval default --data default --preprocess {files}/pre-meanstr.json", 'fix it in {files}/pre-meanstr.json, e.g. "mean": ['),
    ("eval {files}/badmeta.pt --data default", "re-export the model"),
    ("export {hostile}/onnxpre/model.fp32.onnx --out {files}/x", "re-export the model"),
])
def test_preprocessing_errors_hint_at_their_source(line, hint, files, hostile_bundles):
    """The fix fits where the value came from: a flag, the user's own file, or a model's metadata."""
    res = run_inprocess(*line.format(files=files, hostile=hostile_bundles).split())
    hints = [ln for ln in res.stderr.splitlines() if ln.startswith("hint: ")]
    assert len(hints) == 1 and hint.format(files=files) in hints[0], res.stderr
    assert ("re-export" in hints[0]) == ("re-export" in hint)
    assert not (files / "x").exists()


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
    assert not list(tmp_path.glob(".exp.*"))  # the rerun removed what a SIGKILL left behind


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


def _engine_ctx(tmp_path):
    from edgeresnet.export.engines import EngineContext

    fp32 = tmp_path / "model.fp32.onnx"
    fp32.write_bytes(b"x")
    return EngineContext(work=tmp_path, fp32_path=fp32, fp32_proto=None, table=None, threads=1,
                         measure=lambda row, run, art=None: None, qdq_paths={"trt": tmp_path / "q.onnx"})


def test_an_interrupt_or_a_full_disk_inside_an_engine_ends_the_run(tmp_path, monkeypatch):
    """OpenVINO turns Ctrl-C into its own RuntimeError, and a full disk is an OSError: neither
    may become a 'failed' row of an export that then publishes and exits 0."""
    import errno

    from edgeresnet import errors
    from edgeresnet.export.engines import engine_rows

    rows = engine_rows(FailingEngine(RuntimeError("compiler crashed")), _engine_ctx(tmp_path), int8=True)
    assert [r.status for r in rows] == ["ok", "failed"]
    with pytest.raises(errors.OutOfSpace, match="no space left"):
        engine_rows(FailingEngine(OSError(errno.ENOSPC, "No space left on device", "x.onnx")), _engine_ctx(tmp_path), True)
    monkeypatch.setitem(errors.SIGNALLED, "signum", signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        engine_rows(FailingEngine(RuntimeError("Exception from src/core: KeyboardInterrupt")), _engine_ctx(tmp_path), True)


def test_out_is_checked_again_when_published_and_leftovers_are_cleaned(tmp_path):
    from edgeresnet.errors import InputError
    from edgeresnet.core.outdir import staged_dir

    out = tmp_path / "exp"
    dead = tmp_path / ".exp.tmp-999999-abc"  # a SIGKILLed run's staging folder (pid 999999 is gone)
    dead.mkdir()
    with pytest.raises(InputError, match="exists and is not empty"):
        with staged_dir(out, force=False) as work:
            assert not dead.exists()
            (work / "report.json").write_text("{}")
            out.mkdir()  # another export finished meanwhile
            (out / "edgeresnet.json").write_text("theirs")
    assert (out / "edgeresnet.json").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]  # no temp folder left


def test_read_only_or_forbidden_output_is_one_input_error():
    import errno

    from edgeresnet.cli.common import _known_os_error

    for code in (errno.EROFS, errno.EACCES):
        known = _known_os_error(OSError(code, os.strerror(code), "/mnt/ro/report.json"))
        assert known.exit_code == 3 and "cannot write /mnt/ro/report.json" in known.message
    assert _known_os_error(OSError(errno.ENOSPC, "No space left on device")).exit_code == 3
    assert _known_os_error(ValueError("a bug")) is None  # real bugs stay internal errors


def test_json_output_is_strict_and_names_print_on_one_line():
    from edgeresnet.cli.common import json_text, printable

    assert json.loads(json_text({"top1": float("nan"), "x": [float("inf"), 1.0]})) == {"top1": None, "x": [None, 1.0]}
    weird = "a\nb" + b"\xff".decode("utf-8", "surrogateescape") + ".png"
    assert printable(weird) == "a\\nb\\xff.png"
    assert json.loads(json_text({"image": weird}))["image"].startswith("a\nb")


def test_predict_into_a_closed_pipe_is_quiet(bundle, tmp_path):
    for i in range(20):
        Image.fromarray(np.full((28, 28), i * 10, np.uint8)).save(tmp_path / f"{i}.png")
    cmd = f"{sys.executable} -m edgeresnet predict {bundle} {tmp_path} --json | head -c 100 > /dev/null"
    res = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120)
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(["artifacts", "files", "classes", "preprocess", "format"]), value=_JSON)
def test_manifest_loader_takes_any_value_of_any_field(toy_bundle, tmp_path_factory, field, value):
    """Any JSON in a manifest field is loaded as it was or refused with one InputError."""
    from edgeresnet.bundle.manifest import read_manifest

    root = tmp_path_factory.mktemp("m")
    manifest = json.loads((toy_bundle / "edgeresnet.json").read_text())
    manifest[field] = value
    (root / "edgeresnet.json").write_text(json.dumps(manifest))
    try:
        loaded = read_manifest(root)
    except InputError as exc:  # refused: the message names the file and the field (a wrong format: not a manifest)
        named = {"artifacts": "artifact", "files": "'files'", "classes": "'classes'", "preprocess": "preprocess",
                 "format": "is not an edgeresnet bundle manifest"}
        assert exc.message.startswith(str(root / "edgeresnet.json")) and named[field] in exc.message
    else:
        assert loaded[field] == value


@settings(max_examples=120, deadline=None)
@given(image=st.one_of(
    st.builds(lambda shape, dtype: np.zeros(shape, dtype),
              st.lists(st.integers(0, 40), min_size=0, max_size=5).map(tuple),
              st.sampled_from([np.uint8, np.float32, np.int64, np.float64, np.bool_])),
    st.floats(), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=3)),
    top_k=st.integers(-3, 12), batch_size=st.integers(-2, 70))
def test_runtime_predict_takes_anything_or_says_why(loaded_model, image, top_k, batch_size):
    from edgeresnet.errors import EdgeResNetError

    try:
        preds = loaded_model.predict(image, top_k=top_k, batch_size=batch_size)
    except EdgeResNetError:
        return
    assert all(1 <= len(p.top_k) <= 10 and 0 <= p.score <= 1 for p in preds)


@pytest.fixture(scope="module")
def loaded_model(bundle):
    from edgeresnet.runtime import load

    return load(bundle, target="ort", threads=1)


def test_a_signal_during_native_code_is_held_until_it_returns(monkeypatch):
    """Ctrl-C inside a runtime's pybind11 callback once aborted the process (exit 134)."""
    from edgeresnet import errors

    monkeypatch.setitem(errors.SIGNALLED, "signum", 0)
    done = []
    with pytest.raises(KeyboardInterrupt):
        with errors.native_call():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a handler that raised would have interrupted this
            done.append("the native call finished")
    assert done and errors.stop_requested()
    assert signal.getsignal(signal.SIGINT) is not None and signal.getsignal(signal.SIGINT).__name__ != "hold"


def _hashes(folder: Path) -> dict:
    import hashlib

    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _descendants(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids |= {int(k) for k in (task / "children").read_text().split()}
        except OSError:
            pass
    return kids | {g for k in kids for g in _descendants(k)}


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("command", ["bench", "predict"])
def test_a_signal_during_bench_or_predict_stops_cleanly(command, sig, code, ort_ov_bundle, test_set, tmp_path):
    """Ctrl-C or `kill` in the middle of the work: the documented exit code, no traceback, no
    process left behind, and the bundle (reports included) exactly as it was."""
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(ort_ov_bundle, bundle)
    before = _hashes(bundle)
    if command == "bench":
        args = ["bench", str(bundle), "--min-seconds", "3", "--rounds", "3"]
    else:
        folder = tmp_path / "imgs"
        folder.mkdir()
        for i in range(3000):
            Image.fromarray(test_set.images[i, :, :, 0]).save(folder / f"{i}.png")
        args = ["predict", str(bundle), *[str(folder)] * 8, "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "edgeresnet", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:  # wait until it is at work: imports done, CPU busy
        stat = Path(f"/proc/{proc.pid}/stat").read_text().split()
        if (int(stat[13]) + int(stat[14])) / os.sysconf("SC_CLK_TCK") > 4.0 or (command == "bench" and _descendants(proc.pid)):
            break
        time.sleep(0.1)
    time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
    family = _descendants(proc.pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err and "internal error" not in err
    time.sleep(0.5)
    assert not [p for p in family if _alive(p)], "a worker outlived the command"
    assert _hashes(bundle) == before  # no report half-rewritten, no temp file left


@pytest.mark.parametrize("extra,words", [(["--batch-size", "1"], "cannot be shared by 2 processes"),
                                         (["--batch-size", "8", "--limit", "1"], "--limit 1: 1 training images cannot be shared")])
def test_a_batch_smaller_than_the_world_is_a_usage_error_before_any_work(extra, words, tmp_path, monkeypatch):
    """Under torchrun (WORLD_SIZE=2), a global batch or a data set too small to give every process
    an image is exit 2 before any work (it was a ZeroDivisionError on every rank)."""
    from typer.testing import CliRunner

    from edgeresnet.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    res = CliRunner().invoke(app, ["train", "--arch", "resnet20", "--data", "default", "--epochs", "1",
                                   "--out", str(tmp_path / "t.pt"), *extra])
    assert res.exit_code == 2, (res.stderr, res.exception)
    assert words in res.stderr and res.stderr.strip().splitlines()[-1].startswith("hint: ")
    assert not list(tmp_path.iterdir())


def test_every_error_kind_prints_a_hint_line(capsys):
    """The error boundary prints a hint even when the raiser named none (the README's promise)."""
    from edgeresnet.cli.common import fail
    from edgeresnet.errors import BackendUnavailable, EdgeResNetError, InputError, OutOfSpace, PeerLost, UsageError

    for kind in (UsageError, InputError, BackendUnavailable, OutOfSpace, PeerLost, EdgeResNetError):
        exit_ = fail(kind("something is wrong"))
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[0] == "error: something is wrong" and lines[1].startswith("hint: ") and len(lines[1]) > 12
        assert exit_.exit_code == kind.exit_code
    fail(UsageError("x", hint="do this"))
    assert capsys.readouterr().err.strip().splitlines()[-1] == "hint: do this"


def _can_mount_read_only(tmp_path: Path) -> bool:
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind {tmp_path} {tmp_path} && "
                            f"mount -o remount,bind,ro {tmp_path}"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_train_refuses_a_read_only_out_before_the_first_epoch(tmp_path):
    """A real read-only mount (a bind mount in a user namespace): `train --out` there is exit 3
    in seconds, naming the path, instead of after a whole epoch."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if not _can_mount_read_only(ro):
        pytest.skip("unshare -rm cannot make a read-only bind mount here (no user namespaces)")
    script = (f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec {sys.executable} -m edgeresnet train "
              f"--arch resnet20 --data default --epochs 3 --out {ro}/out/t.pt")
    start = time.time()
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 3, res.stderr
    assert f"cannot write --out {ro}/out/t.pt: Read-only file system" in res.stderr and "hint:" in res.stderr
    assert "epoch 1" not in res.stderr and time.time() - start < 60
    assert not list(ro.iterdir())
