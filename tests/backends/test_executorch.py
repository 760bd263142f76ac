"""ExecuTorch with XNNPACK: the table's scales reach every quantized activation as fixed
parameters, every conv runs in the delegate, and the .pte programs run and agree with FP32.

Tiny ResNets (a basic-block net with the small stem, a bottleneck net with the ImageNet stem
and its max-pool, a pre-activation net whose BNs stay as scale + shift) stand for the shapes
of the zoo; the default model's accuracy bar is slow.
Skipped where executorch is not installed (``pip install 'edgeresnet[executorch]'``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("executorch", reason="ExecuTorch is an optional extra: pip install 'edgeresnet[executorch]'")
pytestmark = pytest.mark.slow  # the extra weighs 1.6 GB and lowering takes seconds a graph: never the fast tier

import onnx  # noqa: E402
import torch  # noqa: E402

from edgeresnet.backends import get_backend  # noqa: E402
from edgeresnet.backends.executorch import build_artifact  # noqa: E402
from edgeresnet.backends.executorch.lower import export_graph, lower_fp32, lower_int8  # noqa: E402
from edgeresnet.backends.executorch.qparams import (  # noqa: E402
    RELU_ZERO_POINT,
    SIGNED_ZERO_POINT,
    SchemeWeightObserver,
    check_fixed,
)
from edgeresnet.backends.executorch.tensors import TableMismatch  # noqa: E402
from edgeresnet.backends.executorch.tensors import onnx_names  # noqa: E402
from edgeresnet.models.checkpoint import ModelMeta  # noqa: E402
from edgeresnet.data import Preprocess  # noqa: E402
from edgeresnet.export.torch_onnx import export_onnx  # noqa: E402
from edgeresnet.models.fold import fold_bn  # noqa: E402
from edgeresnet.models.resnet import BasicBlock, Bottleneck, PreActBasicBlock, ResNet  # noqa: E402
from edgeresnet.onnxfile.reference import session_with_outputs  # noqa: E402
from edgeresnet.quantize.plan import plan  # noqa: E402
from edgeresnet.quantize.recipe import Candidate  # noqa: E402
from edgeresnet.quantize.scheme import QMAX, weight_scales  # noqa: E402

from ..conftest import export_default, run_cli  # noqa: E402

SHAPES = {  # name -> (block, layers, widths, stem, input side)
    "basic-small": (BasicBlock, (1, 1), (4, 8), "small", 12),
    "bottleneck-imagenet": (Bottleneck, (1, 1), (4, 8), "imagenet", 32),
    "preact-small": (PreActBasicBlock, (1, 1), (4, 8), "small", 12),  # BNs kept as scale + shift
}


class Tiny:
    """A folded tiny ResNet, its FP32 ONNX, and a table measured on random images."""

    def __init__(self, name: str, work) -> None:
        block, layers, widths, stem, side = SHAPES[name]
        torch.manual_seed(0)
        self.preact = block is PreActBasicBlock
        model = ResNet(block, layers, widths, num_classes=5, in_channels=1, stem=stem, preact=self.preact).eval()
        for m in model.modules():  # BN statistics a trained net would have: folding must move the biases
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        self.model, _ = fold_bn(model)
        self.chw = (1, side, side)
        meta = ModelMeta("resnet-tiny", 5, 1, Preprocess(1, side), [str(i) for i in range(5)], small_input=stem == "small")
        self.onnx_path = work / "model.fp32.onnx"
        export_onnx(self.model, meta, self.onnx_path)
        self.proto = onnx.load(str(self.onnx_path))
        self.sites = plan(self.proto)
        self.x = np.random.default_rng(0).standard_normal((16, *self.chw)).astype(np.float32)
        tensors = self.sites.all_tensors
        outs = session_with_outputs(self.proto, tensors).run(tensors, {"input": self.x})
        self.scales = {t: float(np.abs(v).max()) / QMAX for t, v in zip(tensors, outs)}
        self.work = work

    def fp32_logits(self) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(self.x)).numpy()


@pytest.fixture(scope="module", params=list(SHAPES))
def tiny(request, tmp_path_factory) -> Tiny:
    return Tiny(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def lowered(tiny):
    """Both programs of a tiny model, lowered once per shape."""
    return (lower_fp32(tiny.model, tiny.chw, tiny.work / "m.fp32.pte"),
            lower_int8(tiny.model, tiny.proto, tiny.scales, tiny.chw, tiny.work / "m.int8.pte"))


def run_pte(path, x: np.ndarray) -> np.ndarray:
    from edgeresnet.backends.executorch.runner import batch_runner

    return batch_runner(path)(x)


def test_every_quantized_tensor_pairs_with_the_fx_node_computing_it(tiny):
    """The structural pairing is checked on values: each FX node's output equals the ONNX
    tensor it was paired with, for every tensor the table has a scale for."""
    graph = export_graph(tiny.model, tiny.chw).module()
    names = onnx_names(tiny.proto, graph)
    paired = {name: node for node, onnx_tensors in names.items() for name in onnx_tensors}
    assert set(tiny.scales) <= set(paired), set(tiny.scales) - set(paired)
    x = tiny.x[:1]
    seen = {}

    class Capture(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            seen[n] = out
            return out

    with torch.no_grad():
        Capture(graph).run(torch.from_numpy(x))
    tensors = sorted(tiny.scales)
    ort = dict(zip(tensors, session_with_outputs(tiny.proto, tensors, level="basic").run(tensors, {"input": x})))
    for name in tensors:
        np.testing.assert_allclose(seen[paired[name]].numpy(), ort[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_int8_takes_every_activation_scale_from_the_table(tiny, lowered):
    _, int8 = lowered
    assert set(tiny.sites.activations) <= set(int8.assigned) <= set(tiny.scales)
    if tiny.preact:  # the BN scale + shift, the final ReLU and pool: float in every engine's placement
        assert {"mul", "add", "adaptive_avg_pool2d"} <= set(int8.left_float)
    else:
        assert set(int8.assigned) == set(tiny.scales) and int8.left_float == []
    for tensor, (scale, zero_point) in int8.assigned.items():
        assert scale == pytest.approx(tiny.scales[tensor], rel=1e-6), tensor
        want = RELU_ZERO_POINT if tensor in tiny.sites.nonnegative else SIGNED_ZERO_POINT
        assert zero_point == want, tensor
    assert int8.float_output == ["linear"]  # the logits have no table scale, as in every engine


def test_a_quantizer_that_would_calibrate_is_refused(tiny):
    """XNNPACK's own config observes data (HistogramObserver): check_fixed must catch it."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    plain = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(export_graph(tiny.model, tiny.chw).module(), plain)
    with pytest.raises(TableMismatch, match="calibrated again"):
        check_fixed(prepared)


def test_a_table_missing_a_tensor_is_refused(tiny, tmp_path):
    partial = dict(tiny.scales)
    partial.pop(tiny.sites.activations[1])
    with pytest.raises(TableMismatch, match="no scale"):
        lower_int8(tiny.model, tiny.proto, partial, tiny.chw, tmp_path / "x.pte")
    assert not (tmp_path / "x.pte").exists()


def test_weight_scales_are_the_schemes():
    """Per channel max|w|/127 as the QDQ graphs have them: an all-zero channel 1.0, a tiny one
    its own scale (PyTorch's observer with XNNPACK's eps 2**-12 would coarsen it to 2**-12)."""
    w = np.stack([np.full((2, 3, 3), v, np.float32) for v in (0.5, 0.0, -1e-3)])
    obs = SchemeWeightObserver(ch_axis=0, dtype=torch.int8, qscheme=torch.per_channel_symmetric,
                                   quant_min=-127, quant_max=127)
    obs(torch.from_numpy(w))
    scales, zero_points = obs.calculate_qparams()
    np.testing.assert_array_equal(scales.numpy(), weight_scales(w))
    assert scales[1] == 1.0 and scales[2] < 2**-12 and not zero_points.any()


def test_every_op_runs_in_one_xnnpack_subgraph(tiny, lowered):
    convs = sum(n.op_type == "Conv" for n in tiny.proto.graph.node)
    for low in lowered:
        assert low.subgraphs == 1 and low.outside == {}, low.details()
        assert low.delegated_ops["aten_convolution_default"] == convs
    assert lowered[1].delegated_ops["quantized_decomposed_dequantize_per_channel_default"] == convs  # int8 weights


def test_programs_run_and_follow_fp32(tiny, lowered):
    fp32, int8 = lowered
    ref = tiny.fp32_logits()
    np.testing.assert_allclose(run_pte(fp32.path, tiny.x), ref, rtol=1e-4, atol=1e-4)
    got = run_pte(int8.path, tiny.x)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < 0.1, err  # 8-bit activations on a random net: a few percent of the logit range
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99


def test_int8_matches_the_qdq_graph_on_the_same_grid(tiny, lowered):
    """The ORT QDQ graph of the same scales (run unfused: exact QDQ arithmetic) is the numeric
    reference: XNNPACK's int8 computes the same numbers (measured: 7e-6 apart, where FP32 is
    7e-3 away), so the engines really share one grid."""
    import onnxruntime as ort

    from edgeresnet.quantize.recipe import quantized_model
    from edgeresnet.backends.onnxruntime import PROFILE as ORT

    qdq = quantized_model(tiny.proto, Candidate(tiny.scales), ORT)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(qdq.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, {"input": tiny.x})[0]
    got = run_pte(lowered[1].path, tiny.x)
    assert np.abs(got - want).max() < 0.02 * np.abs(tiny.fp32_logits() - want).max()


def test_a_layer_kept_in_float_is_not_quantized(tiny, tmp_path):
    layer = tiny.sites.layers[1]
    low = lower_int8(tiny.model, tiny.proto, tiny.scales, tiny.chw, tmp_path / "kf.pte", keep_float=frozenset({layer}))
    assert len(low.kept_float) == 1
    convs = sum(n.op_type == "Conv" for n in tiny.proto.graph.node)
    assert low.delegated_ops["quantized_decomposed_dequantize_per_channel_default"] == convs - 1


def test_corrected_biases_reach_the_program(tiny, lowered, tmp_path):
    """A recipe's biases are keyed by ONNX initializer names, which are the torch parameter names."""
    bias = tiny.sites.weights[-1].bias  # the classifier's: its output is the logits, read directly
    lower_int8(tiny.model, tiny.proto, tiny.scales, tiny.chw, tmp_path / "b.pte",
               biases={bias: np.full(5, 3.0, np.float32)})
    plain = dict(tiny.model.named_parameters())[bias].detach().numpy()
    shift = run_pte(tmp_path / "b.pte", tiny.x[:2]) - run_pte(lowered[1].path, tiny.x[:2])
    np.testing.assert_allclose(shift, np.broadcast_to(3.0 - plain, shift.shape), atol=1e-4)
    with pytest.raises(TableMismatch, match="does not have"):
        lower_int8(tiny.model, tiny.proto, tiny.scales, tiny.chw, tmp_path / "c.pte", biases={"nope.bias": plain})


def test_the_backend_reads_precision_and_shape_from_the_program(tiny, lowered):
    backend = get_backend("executorch")
    for low in lowered:
        assert backend.precision_of(low.path) == low.precision
        assert backend.input_chw(low.path) == tiny.chw


def test_load_records_kernel_and_threads(tiny):
    art = build_artifact(tiny.model, tiny.proto, Candidate(tiny.scales), tiny.chw, "int8", tiny.work / "art")
    run = get_backend("et").load(art)
    assert run(tiny.x[:3]).shape == (3, 5)
    assert art.details["kernel"].startswith("xnnpack-qs8") and art.details["threads"] >= 1
    assert art.path.name == "model.int8.executorch.pte" and art.details["delegated_subgraphs"] == 1


@pytest.mark.slow
def test_default_model_int8_keeps_its_accuracy(tmp_path):
    """`export default --target executorch` on the 10,000 test images: the same bar as the other
    engines (drop <= 0.1 pp vs its own FP32), and the .pte files say what they are."""
    out = tmp_path / "et"
    export_default(out, "--target", "executorch")
    rows = {(r["target"], r["precision"]): r for r in json.loads((out / "report.json").read_text())["results"]}
    fp32, int8 = rows[("executorch", "fp32")], rows[("executorch", "int8")]
    assert fp32["status"] == int8["status"] == "ok", (fp32.get("reason"), int8.get("reason"))
    assert int8["top1_drop_pp"] <= 0.1 and int8["agreement"] >= 0.99
    assert fp32["details"]["agreement_with_torch"] >= 0.999
    assert int8["kernel"].startswith("xnnpack-qs8") and int8["details"]["fixed_qparams"] == 33
    backend = get_backend("executorch")
    assert backend.precision_of(out / int8["artifact"]) == "int8"
    assert backend.precision_of(out / fp32["artifact"]) == "fp32"


def test_build_takes_the_torch_model_and_the_recipe_from_build_inputs(tiny, tmp_path):
    """The engine stage hands the folded torch model, the FP32 ONNX and the recipe over in
    BuildInputs (the typed contract): INT8 is built on the table's scales, FP32 without them."""
    from edgeresnet.backends.base import BuildInputs

    def no_qdq(profile):
        raise AssertionError("ExecuTorch takes no QDQ ONNX")

    table = type("Table", (), {"scales": tiny.scales})()
    inputs = BuildInputs(fp32_onnx=tmp_path / "unused.onnx", chw=tiny.chw, work=tmp_path, write_qdq=no_qdq,
                         table=table, torch_model=tiny.model, fp32_proto=tiny.proto)
    backend = get_backend("executorch")
    int8 = backend.build(inputs, "int8", tmp_path)
    fp32 = backend.build(inputs, "fp32", tmp_path)
    assert (int8.path.name, fp32.path.name) == ("model.int8.executorch.pte", "model.fp32.executorch.pte")
    assert backend.precision_of(int8.path) == "int8" and backend.precision_of(fp32.path) == "fp32"
    np.testing.assert_allclose(run_pte(int8.path, tiny.x), run_pte(lower_int8(
        tiny.model, tiny.proto, tiny.scales, tiny.chw, tmp_path / "ref.pte").path, tiny.x), atol=1e-6)


# ----------------------------------------------------------------------------- verify: the bundle's device.py

@pytest.fixture(scope="module")
def et_bundle(tmp_path_factory):
    """`export default --target ort,executorch`, small: the golden set, both .pte files, device.py."""
    out = tmp_path_factory.mktemp("et_verify") / "exp"
    res = export_default(out, "--target", "ort,executorch", "--calib-size", "64", "--eval-limit", "300", "--rounds", "2")
    (out.parent / "export.stderr").write_text(res.stderr)
    return out


# Lines executorch, torchao and torch print on every CPU-only machine, none actionable: the CPU
# probe's ARM-register lines (native), torchao's CUDA libraries, torch's pytree deprecations.
NOISE = ("cpuinfo_utils", "Failed to load", "LeafSpec", "_pytree.py")


def test_export_and_verify_print_only_their_own_lines(et_bundle, tmp_path):
    """The export, `edgeresnet verify` and the bundle's own device.py print none of NOISE: a user
    reads only what edgeresnet says (a failure still shows what was held back)."""
    import shutil

    from ..bundle.test_verify import run_device

    verify = run_cli("verify", str(et_bundle), "--time-seconds", "0.05")
    alone = run_device(shutil.copytree(et_bundle, tmp_path / "copy"), "verify", "--time-seconds", "0.05", "--rounds", "1")
    for name, text in (("export", (et_bundle.parent / "export.stderr").read_text()), ("verify", verify.stderr),
                       ("device.py verify", alone.stderr)):
        assert not [line for line in text.splitlines() if any(n in line for n in NOISE)], (name, text[-3000:])
    assert verify.returncode == alone.returncode == 0


def et_entry(root, precision: str) -> dict:
    manifest = json.loads((root / "edgeresnet.json").read_text())
    return next(a for a in manifest["artifacts"] if (a["target"], a["precision"]) == ("executorch", precision))


def test_the_device_runner_gives_the_package_runners_logits(et_bundle):
    """device.open_executorch (the bundle's side) and the backend's load (predict's side) run the
    same program on the golden images and give the same logits, kernel and file."""
    from edgeresnet.backends.base import Artifact
    from edgeresnet.ondevice import device

    bundle = device.Bundle(str(et_bundle))
    golden = device.load_golden(bundle)
    x = device.normalize(golden["x"][:40], bundle.manifest["preprocess"])
    cls = device.cpu_facts()["class"]
    for precision in ("fp32", "int8"):
        entry = et_entry(et_bundle, precision)
        engine = device.open_executorch(bundle, entry, cls, None)
        artifact = Artifact("executorch", precision, et_bundle / entry["path"], {})
        want = get_backend("executorch").load(artifact)(x)
        np.testing.assert_allclose(engine.run(x), want, rtol=1e-6, atol=1e-6)
        assert engine.kernel == artifact.details.get("kernel") == entry["kernel"]
        assert engine.file == entry["path"] and engine.path.startswith(f"{cls} xnnpack-")


def test_the_bundles_device_file_verifies_executorch_as_the_package_does(et_bundle, tmp_path):
    """The bundle's own device.py (python -I, edgeresnet not importable) and `edgeresnet verify`:
    both ExecuTorch rows pass near 100% agreement with the export's kernel, are timed in their own
    processes, and the two reach the same verdicts."""
    import shutil

    from ..bundle.test_verify import run_device, verdicts

    alone = shutil.copytree(et_bundle, tmp_path / "copy")
    res = run_device(alone, "verify", "--json", "--time-seconds", "0.1", "--rounds", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    entry = json.loads(res.stdout)
    rows = {(r["target"], r["precision"]): r for r in entry["engines"]}
    assert set(rows) == {("ort", "fp32"), ("ort", "int8"), ("executorch", "fp32"), ("executorch", "int8")}
    for precision in ("fp32", "int8"):
        r = rows[("executorch", precision)]
        assert r["status"] == "passed" and r["agreement"] >= 0.99 and r["latency_ms"]["p50"] > 0, r
        assert r["kernel"] == r["expected"]["kernel"] == et_entry(et_bundle, precision)["kernel"]
    assert not any("could not be timed" in f for f in entry["flags"]), entry["flags"]
    package = run_cli("verify", str(et_bundle), "--json", "--time-seconds", "0")
    assert package.returncode == 0, package.stderr[-2000:]
    assert verdicts(json.loads(package.stdout)) == verdicts(entry)


def test_predict_runs_executorch_when_verify_chose_it(et_bundle, tmp_path):
    """`verify --target executorch` times only the .pte files, so one of them is this device's
    choice; `predict` with neither --target nor --precision then runs it."""
    import shutil

    from PIL import Image

    from edgeresnet.ondevice import device

    root = shutil.copytree(et_bundle, tmp_path / "B")
    res = run_cli("verify", str(root), "--json", "--target", "executorch", "--time-seconds", "0.1")
    assert res.returncode == 0, res.stderr[-2000:]
    chosen = json.loads(res.stdout)["chosen"]
    assert chosen["target"] == "executorch"
    bundle = device.Bundle(str(root))
    golden = device.load_golden(bundle)
    for i in range(3):
        Image.fromarray(golden["x"][i][..., 0]).save(tmp_path / f"{i}.png")
    res = run_cli("predict", str(root), *(str(tmp_path / f"{i}.png") for i in range(3)), "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert (out["target"], out["precision"], out["chosen_by"]) == ("executorch", chosen["precision"], "verified")
    engine = device.open_executorch(bundle, et_entry(root, chosen["precision"]), device.cpu_facts()["class"], None)
    want = engine.run(device.normalize(golden["x"][:3], bundle.manifest["preprocess"])).argmax(1).tolist()
    assert [p["class_index"] for p in out["predictions"]] == want


POOL_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
from edgeresnet.backends import get_backend
from edgeresnet.backends.base import Artifact
from edgeresnet.backends.executorch.runner import pool_threads
from edgeresnet.ondevice import device

root = Path(sys.argv[1])
bundle = device.Bundle(str(root))
entry = next(a for a in bundle.manifest["artifacts"] if a["target"] == "executorch" and a["precision"] == "int8")
x = np.zeros([2] + bundle.manifest["input_shape"][1:], np.float32)
engine = device.open_executorch(bundle, entry, "x86", 1)  # the first load of the process sizes the pool
engine.run(x)
assert pool_threads() == 1, pool_threads()
artifact = Artifact("executorch", "int8", root / entry["path"], {})
get_backend("executorch").load(artifact, threads=2)(x)  # too late: kept, said, and no reset after a load
assert pool_threads() == 1 and "not applied" in artifact.details["threads_note"], artifact.details
engine.run(x)  # the program loaded before: a reset in between would abort here
print("ok")
"""


def test_the_device_file_and_the_package_share_one_thread_pool_record(et_bundle):
    """Resetting the pool after a program loaded, then running, crashed the process (measured:
    a segfault after shrinking it to 1, glibc's __pthread_tpp_change_priority abort after 1 then
    2; this order happened to survive). So one record: the device runner's first load sizes the
    pool, and the package's later load asking for another size keeps it and says so. In a child
    process: a crash would take pytest with it."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", POOL_SCRIPT, str(et_bundle)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]
