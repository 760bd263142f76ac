"""The engine registry: a backend is one module that registers itself, and export, bench,
predict, doctor and the report pick it up with no other file changed."""

from __future__ import annotations

import json
import os
import re

import pytest

from pathlib import Path

import typer
from typer.testing import CliRunner

from edgeresnet.backends import backend_class, expand_targets, get_backend, names, resolve
from edgeresnet.backends.base import Artifact, Backend, Capabilities, Input
from edgeresnet.backends.registry import register, unregister
from edgeresnet.errors import UsageError

from ..conftest import ROOT, ToyEngine, run_cli

TOY = "tests.plugins.toy_backend"


@pytest.fixture
def toy():
    """The toy engine registered in this process, removed afterwards. The CLI is imported first:
    its commands take their engine flags from the engines registered when it is imported, and a
    later test in this process must not see the toy's."""
    import importlib
    import sys

    import edgeresnet.cli  # noqa: F401

    sys.modules.pop(TOY, None)
    module = importlib.import_module(TOY)
    yield module.SignedOrtBackend
    unregister("ort-s8")


def toy_env() -> dict:
    """The toy engine for CLI subprocesses: a plug-in module named in EDGERESNET_BACKENDS."""
    return {**os.environ, "EDGERESNET_BACKENDS": TOY,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def test_every_spelling_resolves_once_to_one_name():
    assert names()[:3] == ("ort", "openvino", "trt")
    for spelling, name in (("TRT", "trt"), ("tensorrt", "trt"), (" TensorRT ", "trt"), ("ov", "openvino"),
                           ("onnxruntime", "ort")):
        assert resolve(spelling) == name
        assert type(get_backend(spelling)) is backend_class(name)
    with pytest.raises(UsageError, match="did you mean trt"):
        resolve("trtt")


def test_a_registered_engine_is_everywhere_names_are(toy):
    assert "ort-s8" in names() and resolve("TOY") == "ort-s8"
    assert expand_targets(("all",))[-1] == "ort-s8"  # preference 90 puts it last
    assert get_backend("toy").qdq_profile.name == "ort-s8"


def test_a_taken_name_or_alias_is_refused(toy):
    class Clash(ToyEngine):
        name, aliases = "clash", ("ov",)

    with pytest.raises(ValueError, match="'ov' is already registered"):
        register(Clash)
    assert "clash" not in names()


def test_a_missing_declaration_is_a_type_error_naming_it():
    class NoCaps(ToyEngine):
        name = "nocaps"

    del_attr = {k: v for k, v in vars(ToyEngine).items() if k not in ("capabilities", "precision_of", "takes")}
    Bare = type("Bare", (Backend,), {**del_attr, "name": "bare"})
    with pytest.raises(TypeError, match=r"Bare does not declare takes, capabilities, precision_of\(\)"):
        register(Bare)
    with pytest.raises(TypeError, match="must subclass"):
        register(type("Loose", (), {"name": "loose"}))
    with pytest.raises(TypeError, match="self_timed needs bench_block"):
        register(type("Fast", (ToyEngine,), {"name": "fast", "capabilities": Capabilities(False, self_timed=True)}))
    with pytest.raises(TypeError, match="takes QDQ_ONNX needs a qdq_profile"):
        register(type("Q", (ToyEngine,), {"name": "q", "takes": frozenset({Input.QDQ_ONNX})}))
    register(NoCaps)  # everything declared: accepted
    unregister("nocaps")
    assert not {"bare", "loose", "fast", "q", "nocaps"} & set(names())


def test_a_plugin_engines_options_are_cli_flags_and_reach_it(toy):
    from typer.testing import CliRunner

    from edgeresnet.cli.engine_flags import engine_flags
    from edgeresnet.export.pipeline import ExportConfig, _engines

    seen = {}

    @engine_flags
    def cmd(model: str = "m", engine_options: dict | None = None) -> None:
        seen.update(engine_options)

    app = typer.Typer()
    app.command()(cmd)
    res = CliRunner().invoke(app, ["--toy-note", "loud", "--trt-version", "8.6"])
    assert res.exit_code == 0, res.output
    assert seen["toy_note"] == "loud" and seen["trt_version"] == "8.6" and seen["device"] == "CPU"
    assert "--toy-note" in CliRunner().invoke(app, ["--help"]).output
    cfg = ExportConfig(model="x", out=Path("x"), targets=("toy",), engine_options={"toy_note": "loud"})
    assert _engines(cfg)[0].options == {"toy_note": "loud"}
    with pytest.raises(UsageError, match="--toy-note applies to ort-s8"):
        _engines(ExportConfig(model="x", out=Path("x"), targets=("ort",), engine_options={"toy_note": "loud"}))
    with pytest.raises(UsageError, match="not one of plain, loud"):
        get_backend("toy", {"ort-s8": {"toy_note": "quiet"}})


def test_build_flags_are_the_device_built_engines_declarations():
    """`edgeresnet build`'s engine flags come from OptionSpec.device_help: default None (the bundle's
    value), parsed by the spec, ``plan_only`` ones refused without --dry-run; an engine that does not
    build on the device adds none."""
    from edgeresnet.backends.base import OptionSpec
    from edgeresnet.cli.build import device_options
    from edgeresnet.cli.engine_flags import device_flags

    class Board(ToyEngine):
        name = "board"
        capabilities = Capabilities(False, device_build=True)
        bundle, device_files = "board", ("plan.json",)
        option_specs = (OptionSpec("--board-clock", int, 5, "export help", device_help="build help"),
                        OptionSpec("--board-line", str | None, None, "export", device_help="plan for", plan_only=True),
                        OptionSpec("--board-export-only", bool, False, "export only"))

        def device_job(self, bundle, options):
            raise AssertionError("not built here")

        def device_plan(self, bundle, options):
            raise AssertionError("not planned here")

    seen = {}

    with pytest.raises(TypeError, match="device_build needs bundle and device_files"):
        register(type("Unplanned", (Board,), {"name": "unplanned", "device_files": ()}))
    register(Board)
    try:
        @device_flags
        def cmd(engine_options: dict | None = None) -> None:
            seen.update(engine_options)
            seen["options"] = device_options(engine_options, None, dry_run=False, json_out=False)

        app = typer.Typer()
        app.command()(cmd)
        help_text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
        assert "--board-clock" in help_text and "build help" in help_text and "--board-export-only" not in help_text
        assert "--toy-note" not in help_text  # the toy engine is not built on the device
        res = CliRunner().invoke(app, [])
        assert res.exit_code == 0, res.output
        assert seen["board_clock"] is None and seen["options"]["board_clock"] is None  # the bundle's value
        CliRunner().invoke(app, ["--board-clock", "7"])
        assert seen["options"]["board_clock"] == 7
        with pytest.raises(UsageError, match="--board-line goes with --dry-run"):
            device_options({"board_line": "2"}, None, dry_run=False, json_out=False)
        assert device_options({"board_line": "2"}, None, dry_run=True, json_out=False)["board_line"] == "2"
    finally:
        unregister("board")


def test_export_help_lists_a_plugin_engines_flag():
    res = run_cli("export", "--help", env={**toy_env(), "COLUMNS": "200"})
    assert res.returncode == 0 and "--toy-note" in res.stdout and "--trt-version" in res.stdout


def test_each_engine_tells_its_files_precision(tmp_path):
    qdq = tmp_path / "custom.onnx"
    qdq.write_bytes(b"\x08\x07...QuantizeLinear...")
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(b"\x08\x07...Conv...")
    assert get_backend("ort").precision_of(tmp_path / "model.int8.ort.onnx") == "int8"
    assert get_backend("ort").precision_of(qdq) == "int8" and get_backend("ort").precision_of(plain) == "fp32"
    ir = tmp_path / "net.xml"
    ir.write_text('<layer type="FakeQuantize"/>')
    assert get_backend("openvino").precision_of(ir) == "int8"
    ir.write_text('<layer type="Convolution"/>')
    assert get_backend("openvino").precision_of(ir) == "fp32"
    assert get_backend("trt").precision_of(tmp_path / "model.int8-dla.engine") == "int8-dla"
    assert get_backend("trt").precision_of(tmp_path / "model.fp16.engine") == "fp16"
    assert get_backend("trt").precision_of(tmp_path / "x.engine") is None


def test_the_orchestrator_names_no_engine():
    """pipeline, engines and bench read the registry; engine names live in backends/ only."""
    files = [ROOT / "edgeresnet" / "export" / f for f in ("pipeline.py", "engines.py")]
    files += sorted((ROOT / "edgeresnet" / "bench").glob("*.py"))
    found = [f"{f.name}: {m.group(0)}" for f in files for m in re.finditer(r'"(trt|openvino|ort)"', f.read_text())]
    assert len(files) >= 5 and found == []


def test_a_plugin_that_cannot_be_imported_is_one_warning_line():
    res = run_cli("doctor", "--json", env={**os.environ, "EDGERESNET_BACKENDS": "no_such_engine_module"})
    assert res.returncode == 0 and "Traceback" not in res.stderr
    assert [ln for ln in res.stderr.splitlines() if "no_such_engine_module" in ln] == res.stderr.strip().splitlines()
    assert set(json.loads(res.stdout)["int8_kernels"]) == set(names())  # every registered engine


@pytest.mark.slow
def test_a_toy_engine_goes_through_export_bench_predict_doctor_and_report(tmp_path, test_set):
    env = toy_env()
    out = tmp_path / "toy"
    res = run_cli("export", "default", "--calib", "default", "--eval", "default", "--out", str(out), "--target",
                  "ort,toy", "--calib-size", "64", "--eval-limit", "300", "--toy-note", "loud", env=env)
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    rows = {(r["target"], r["precision"]): r for r in report["results"]}
    toy_int8 = rows[("ort-s8", "int8")]
    assert toy_int8["status"] == "ok" and toy_int8["details"]["qdq_profile"]["name"] == "ort-s8"
    assert toy_int8["details"]["toy_note"] == "loud"  # its own flag reached it
    assert (out / toy_int8["artifact"]).exists() and toy_int8["artifact"] != rows[("ort", "int8")]["artifact"]
    assert abs(toy_int8["top1_drop_pp"]) < 2.0  # the same scales on another grid: still a working INT8 model
    assert "ort-s8" in (out / "report.md").read_text() and "ort-s8" in (out / "report.html").read_text()
    manifest = json.loads((out / "edgeresnet.json").read_text())
    assert ("ort-s8", "int8") in {(a["target"], a["precision"]) for a in manifest["artifacts"]}

    res = run_cli("bench", str(out), "--target", "TOY", "--min-runs", "5", "--min-seconds", "0.1", env=env)
    assert res.returncode == 0, res.stderr
    bench = json.loads((out / "bench.json").read_text())["results"]
    assert {(r["target"], r["precision"], r["status"]) for r in bench} == {("ort-s8", p, "ok") for p in ("fp32", "int8")}

    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    for i in range(8):
        Image.fromarray(test_set.images[i, :, :, 0]).save(images / f"img_{i}.png")
    res = run_cli("predict", str(out), str(images), "--target", "toy", "--json", env=env)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["target"] == "ort-s8" and len(data["predictions"]) == 8
    assert sum(p["class_index"] == int(test_set.labels[i]) for i, p in enumerate(data["predictions"])) >= 6

    res = run_cli("doctor", "--json", env=env)
    assert json.loads(res.stdout)["int8_kernels"]["ort-s8"]["kernel"] == "s8s8"


class _TorchEngine(ToyEngine):
    """A fourth kind of engine: built from the torch model and the calibration table, no ONNX."""

    name = "torch-toy"
    takes = frozenset({Input.TORCH_MODEL, Input.TABLE})
    seen: list = []

    def build(self, inputs, precision, out_dir):
        self.seen.append((precision, inputs.torch_model, inputs.recipe and dict(inputs.recipe.scales),
                          inputs.chw, None if inputs.calibration_batch is None else inputs.calibration_batch.shape))
        path = out_dir / f"model.{precision}.toy"
        path.write_bytes(b"toy")
        return Artifact(self.name, precision, path)


def test_an_engine_built_from_the_torch_model_and_table_gets_them(tmp_path):
    """BuildInputs carries the torch model, the table's recipe, the shape and calibration images,
    so such an engine needs no change to base.py, export/engines.py or export/pipeline.py."""
    import numpy as np

    from edgeresnet.calibrate.table import CalibrationTable
    from edgeresnet.export.engines import EngineContext, engine_rows, missing_input

    table = CalibrationTable(method="minmax", images=1, source="t", weights_sha256="", preprocess={}, amax={"x": 2.54})
    model = object()
    ctx = EngineContext(work=tmp_path, fp32_path=tmp_path / "m.onnx", fp32_proto=None, table=table, threads=1,
                        measure=lambda row, run, art=None: None, chw=(1, 4, 4), torch_model=model,
                        calibration_batch=np.zeros((8, 1, 4, 4), np.float32))
    engine = _TorchEngine()
    _TorchEngine.seen = []
    rows = engine_rows(engine, ctx, int8=True)
    assert [(r.precision, r.status) for r in rows] == [("fp32", "ok"), ("int8", "ok")]
    assert [s[0] for s in engine.seen] == ["fp32", "int8"] and all(s[1] is model for s in engine.seen)
    assert engine.seen[1][2] == {"x": 2.54 / 127} and engine.seen[1][3:] == ((1, 4, 4), (8, 1, 4, 4))
    assert "qdq_profile" not in rows[1].details  # it took no QDQ encoding
    ctx.torch_model = None  # an ONNX source: a skipped row, said why, instead of a failed build
    assert "ONNX source" in missing_input(engine, ctx)
