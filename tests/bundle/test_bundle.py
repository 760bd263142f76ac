"""The one reader of bundle files (edgeresnet/bundle): a hashed file is read only inside the
bundle, listed in edgeresnet.json and unchanged; files rewritten after export are typed."""

from __future__ import annotations

import json
import os

import pytest

from edgeresnet.bundle import Bundle, bundle_path, export_root, read_bundle_file
from edgeresnet.errors import InputError

from ..conftest import make_bundle, run_cli

BUILD = json.dumps({"fp32_onnx": "../model.fp32.onnx"}).encode()


@pytest.fixture
def root(tmp_path):
    return make_bundle(tmp_path / "exp", {"model.fp32.onnx": b"onnx bytes", "calibration.json": b"{}",
                                          "trt/build.json": BUILD})


def test_a_listed_unchanged_file_is_read(root):
    assert read_bundle_file(root, "trt/build.json") == BUILD
    assert bundle_path(root, "model.fp32.onnx") == root / "model.fp32.onnx"
    bundle = Bundle(root)
    assert bundle.read_json("build.json", "trt")["fp32_onnx"] == "../model.fp32.onnx"
    # a name that one bundle file gives, relative to its folder, resolves through the same check
    assert bundle.path("../model.fp32.onnx", "trt", named_by="trt/build.json") == root / "model.fp32.onnx"


@pytest.mark.parametrize("name, base, words", [
    ("/etc/passwd", "", "names a file outside the bundle"),
    ("../../../../etc/shadow", "trt", "names a file outside the bundle"),
    ("trt/../../exp2/x", "", "names a file outside the bundle"),
    ("", "", "names a file outside the bundle"),
])
def test_a_path_outside_the_bundle_is_refused(root, name, base, words):
    with pytest.raises(InputError, match=words) as err:
        Bundle(root).read_bytes(name, base, named_by="trt/build.json's fp32_onnx")
    assert "trt/build.json's fp32_onnx" in err.value.message and err.value.hint


def test_a_link_leading_outside_is_refused(root, tmp_path):
    (tmp_path / "secret").write_text("not yours")
    (root / "calibration.json").unlink()
    (root / "calibration.json").symlink_to(tmp_path / "secret")
    with pytest.raises(InputError, match="is a link to a file outside the bundle"):
        read_bundle_file(root, "calibration.json")


def test_an_unlisted_file_is_refused(root):
    (root / "trt" / "extra.onnx").write_bytes(b"dropped in after export")
    with pytest.raises(InputError, match="does not list"):
        Bundle(root).path("extra.onnx", "trt", named_by="trt/build.json's int8_onnx")


@pytest.mark.parametrize("tamper, words", [
    (lambda p: p.write_bytes(b'{"plan": 5}'), "changed since export"),
    (lambda p: p.unlink(), "missing from the bundle"),
    (lambda p: (p.unlink(), os.mkfifo(p)), "not a regular file"),
])
def test_a_changed_missing_or_special_file_is_refused(root, tamper, words):
    tamper(root / "trt" / "build.json")
    with pytest.raises(InputError, match=words):
        Bundle(root).read_json("trt/build.json")


def test_a_legitimate_rewrite_is_hashed_at_once(root):
    Bundle(root).rewrite("build.json", '{"rewritten": true}', "trt")
    assert Bundle(root).read_json("trt/build.json") == {"rewritten": True}  # a fresh reader: still verifies
    assert not [p for p in root.rglob("*.tmp")]


def test_a_folder_build_writes_into_holds_no_links(root, tmp_path):
    assert Bundle(root).folder("trt") == root / "trt"
    (root / "trt" / "model.int8.engine").symlink_to(tmp_path / "elsewhere.engine")
    with pytest.raises(InputError, match="is a symbolic link"):
        Bundle(root).folder("trt")
    with pytest.raises(InputError, match="is a link to a file outside"):
        Bundle(root).scratch("model.int8.engine", "trt")
    (root / "trt" / "timing.cache").symlink_to(root / "calibration.json")  # inside, but a write would follow it
    with pytest.raises(InputError, match="not a regular file"):
        Bundle(root).scratch("timing.cache", "trt")


def test_the_trt_folder_stands_for_its_export(root):
    assert export_root(root / "trt") == root and export_root(root) == root
    assert export_root(root / "model.fp32.onnx") == root / "model.fp32.onnx"


def test_build_takes_the_bundles_trt_folder(trt_bundle):
    """Users pass trt/ as often as the export: `build` plans from it as from its export."""
    given = run_cli("build", str(trt_bundle / "trt"), "--dry-run", "--json")
    assert given.returncode == 0, given.stderr
    assert json.loads(given.stdout) == json.loads(run_cli("build", str(trt_bundle), "--dry-run", "--json").stdout)
    here = run_cli("build", ".", "--dry-run", "--json", cwd=trt_bundle / "trt")
    assert here.returncode == 0 and json.loads(here.stdout)["trt_line"] == "10.3"  # the default: JetPack 6.1/6.2


@pytest.mark.parametrize("version, header", [("8.5.2", "TRT-8502"), ("11.4", "TRT-110401")])  # 11.4 means 11.4.1, the JetPack 7.2.2 release
def test_build_verifies_before_use_and_rehashes_what_it_rewrites(trt_bundle, tmp_path, monkeypatch, version, header):
    """`build` past the TensorRT check, as on a device with that TensorRT (this machine has
    none, so the engine builds fail as rows): it retargets the calibration cache's header and
    rewrites report.json and the manifest, and the bundle it leaves verifies file by file."""
    import shutil

    import edgeresnet.backends.tensorrt.build as build
    from edgeresnet.backends.tensorrt.bundle import parse_calibration_cache
    from edgeresnet.bundle.manifest import verify_files

    root = tmp_path / "exp"
    shutil.copytree(trt_bundle, root)
    monkeypatch.setattr(build, "unavailable_reason", lambda: None)
    monkeypatch.setattr(build, "installed_trt_version", lambda: version)
    from edgeresnet.export.device_build import build_on_device

    report = build_on_device(root / "trt")  # the trt/ folder stands for its export here too
    rows = {(r.target, r.precision): r for r in report.results if r.target == "trt"}
    assert set(rows) == {("trt", "fp32"), ("trt", "fp16"), ("trt", "int8")}
    assert all(r.status == "failed" and "TensorRT" in r.reason for r in rows.values())
    written, _ = parse_calibration_cache((root / "trt" / "calibration.cache").read_text())
    assert written == f"{header}-EntropyCalibration2"
    bundle = Bundle(root)
    verify_files(root, bundle.hashes)  # the rewritten cache carries its new hash
    assert json.loads((root / "report.json").read_text())["results"][-1]["status"] == "failed"
