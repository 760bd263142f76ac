import json
import os
from pathlib import Path

import pytest
import torch

from ..conftest import DEBIAN, run_cli, run_inprocess

COMMANDS = ["train", "eval", "export", "bench", "build", "report", "doctor", "predict", "demo", "models"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd):
    res = run_cli(cmd, "--help")
    assert res.returncode == 0 and "Usage" in res.stdout


def test_doctor_reports_runtimes_and_isa():
    res = run_cli("doctor", "--json")
    facts = json.loads(res.stdout)
    assert set(facts["libraries"]) >= {"torch", "onnxruntime", "openvino", "tensorrt"}
    assert facts["libraries"]["torch"] == torch.__version__
    assert facts["cpu"]["cores"] == os.cpu_count()
    assert isinstance(facts["cpu"]["isa"], list) and isinstance(facts["gpus"], list)


@pytest.mark.slow
def test_default_model_meets_its_card():
    data = "fashion-mnist" if DEBIAN.exists() else "default"
    res = run_cli("eval", "default", "--data", data, "--split", "test", "--json")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["images"] == 10000 and result["top1"] >= 0.92 and result["top5"] >= result["top1"]


def test_default_model_is_small_and_carries_its_recipe():
    from edgeresnet.models.checkpoint import default_model_path, load_checkpoint

    path = default_model_path()
    assert path.stat().st_size <= 1.5e6
    meta = load_checkpoint("default").meta
    assert meta.train["command"].startswith("edgeresnet train") and "seed" in meta.train
    assert meta.metrics["val_top1"] >= 0.92 and meta.version


@pytest.mark.parametrize("args,code,words", [
    (["eval", "/no/such/model.pt"], 3, "does not exist"),
    (["eval", "default", "--data", "nonsense-spec"], 3, "unknown data spec"),
    (["train", "--arch", "resnet21", "--data", "default"], 3, "unknown architecture"),
    (["eval", "default", "--data", "default", "--split", "holdout"], 3, "splits"),
])
def test_bad_input_is_one_line_and_an_exit_code(args, code, words):
    res = run_inprocess(*args)  # in-process: the real-process path is test_malicious_checkpoint_via_cli_runs_no_code
    assert res.returncode == code
    assert words in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 3


def test_malicious_checkpoint_via_cli_runs_no_code(tmp_path):
    marker = Path("/tmp/edgeresnet-cli-pwned")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(_evil_pickle(marker))
    res = run_cli("eval", str(evil), "--data", "default", "--arch", "resnet20")
    assert res.returncode == 3 and "would run code" in res.stderr and "Traceback" not in res.stderr
    assert not marker.exists()


def test_mismatched_classes_are_named(tmp_path):
    from edgeresnet import build_model

    torch.save(build_model("resnet20", num_classes=7, in_channels=1).state_dict(), tmp_path / "seven.pth")
    res = run_cli("eval", str(tmp_path / "seven.pth"), "--arch", "resnet20", "--data", "default")
    assert res.returncode == 3 and "7 classes" in res.stderr


def _evil_pickle(marker: Path) -> bytes:
    import io

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buf = io.BytesIO()
    torch.save({"state_dict": Exploit()}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("args,code,words", [
    (["export", "default", "--target", "tensorflow"], 2, "unknown target"),
    (["export", "default", "--calib-method", "kl"], 2, "calib-method"),
    (["export", "resnet18"], 2, "--input-size"),
    (["export", "/no/such.pt"], 3, "does not exist"),
])
def test_export_bad_input(args, code, words, tmp_path):
    res = run_inprocess(*args, "--out", str(tmp_path / "o"))
    assert res.returncode == code and words in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists() and not list(tmp_path.iterdir())
