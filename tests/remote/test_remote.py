"""--host: a bundle driven on a device over SSH, against a real OpenSSH server on 127.0.0.1
(tests/sshd.py: throwaway keys, the device's $HOME a temp folder). The device's Python is this
venv's (numpy, onnxruntime, openvino), or a stand-in for what a device may lack: a path that does
not exist, Python 3.8 without numpy, a wrapper that SIGKILLs itself. Every failure is one error
line, one hint line, its exit code, and the bundle here left byte for byte as it was."""

from __future__ import annotations

import glob
import json
import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from edgeresnet.bundle.verify import install_device_file
from edgeresnet.remote import copies as remote, ssh
from edgeresnet.remote.ssh import Host

from .. import sshd
from ..conftest import make_bundle, run_cli

PY38 = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.8*/bin/python")))


def need_sshd() -> None:
    if sshd.missing():
        pytest.skip(sshd.missing())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_sshd()
    s = sshd.start(tmp_path_factory.mktemp("sshd"))
    yield s
    s.stop()


@pytest.fixture
def small(tmp_path) -> Path:
    """A bundle of a few files with the device file, hashed like an export's."""
    root = tmp_path / "small"
    root.mkdir()
    install_device_file(root)
    return make_bundle(root, {"model.fp32.onnx": os.urandom(4096), "trt/build.json": b"{}"})


@pytest.fixture
def bundle(ort_ov_bundle, tmp_path) -> Path:
    """A copy of the shared ORT + OpenVINO export (the merges write into it)."""
    return Path(shutil.copytree(ort_ov_bundle, tmp_path / "exp"))


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def host_args(server, *, alias: str = "testdev", python: str = sys.executable) -> list[str]:
    return ["--host", alias, "--ssh-config", str(server.config), "--remote-python", python]


def one_line_failure(res, code: int, *words: str) -> None:
    """One error line, then the hint line (cli/common.fail), the exit code, the words."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert res.returncode == code, res.stderr
    assert len(errors) == 1 and lines[-1].startswith("hint:") and "Traceback" not in res.stderr, res.stderr
    for word in words:
        assert word in res.stderr, (word, res.stderr)


# ----------------------------------------------------------------------------- the copy on the device

def test_push_checks_and_the_second_run_reuses_the_copy(server, small):
    said: list[str] = []
    host = Host("testdev", server.config, sys.executable)
    first = remote.ensure_copy(small, host, "bench", said.append)
    copy = server.cache / first.key
    assert not first.reused and first.key == hashlib.sha256((small / "edgeresnet.json").read_bytes()).hexdigest()[:16]
    assert snapshot(copy) == snapshot(small)  # exactly the listed files, the manifest and device.py
    assert not list(server.cache.glob(".push.*"))  # the temp folder was renamed into place
    second = remote.ensure_copy(small, host, "bench", said.append)
    assert second.reused and any("reusing the bundle's copy" in s for s in said), said


def test_only_listed_files_travel(server, small):
    (small / "notes.txt").write_text("not in the manifest")
    (small / "verify.json").write_text("{}")
    copy = remote.ensure_copy(small, Host("testdev", server.config, sys.executable), "bench", lambda s: None)
    assert not (server.cache / copy.key / "notes.txt").exists() and not (server.cache / copy.key / "verify.json").exists()


def test_a_tampered_copy_is_pushed_again(server, small):
    host = Host("testdev", server.config, sys.executable)
    key = remote.ensure_copy(small, host, "bench", lambda s: None).key
    (server.cache / key / "trt" / "build.json").write_text('{"edited": true}')
    said: list[str] = []
    again = remote.ensure_copy(small, host, "bench", said.append)
    assert not again.reused and any("stale" in s and "trt/build.json" in s for s in said), said
    assert snapshot(server.cache / key) == snapshot(small)


def test_a_damaged_bundle_here_is_named_before_anything_travels(server, small):
    from edgeresnet.errors import InputError

    (small / "model.fp32.onnx").write_bytes(b"edited")
    with pytest.raises(InputError, match="model.fp32.onnx"):
        remote.ensure_copy(small, Host("testdev", server.config, sys.executable), "bench", lambda s: None)


def test_remote_python_words_keep_flags_and_home():
    host = Host("jetson", None, "~/venv/bin/python -I")
    assert host.python_words() == '"$HOME"/venv/bin/python -I'
    with pytest.raises(Exception, match="not a host name"):
        Host("-oProxyCommand=x", None)


def test_ssh_failures_read_from_stderr():
    """What ssh prints for a name that does not resolve or a timeout (not provoked here: the
    tests reach 127.0.0.1 only)."""
    host = Host("jetson")
    for text, kind in (("ssh: Could not resolve hostname jetson: Name or service not known", "HostUnreachable"),
                       ("ssh: connect to host 10.0.0.7 port 22: Connection timed out", "HostUnreachable"),
                       ("Host key verification failed.", "AuthRefused"),
                       ("client_loop: send disconnect: Broken pipe", "RemoteStopped"),
                       ("/x/ssh_config line 2: Bad configuration option: hostnme", "RemoteError")):
        err = ssh.failure(host, "run", ssh.Result(255, b"", text + "\n"), "bench")
        assert type(err).__name__ == kind, (text, err)
        assert "stopped at run" in str(err) or "configuration" in str(err), (text, err)


def test_device_file_kinds_become_typed_errors():
    """device.py's one-line kinds (ondevice/device.py KINDS) as the host's errors, with its hint kept."""
    from edgeresnet.errors import RemoteError, RemoteMissing, RemoteOutOfSpace

    host = Host("jetson")
    for line, code, kind in (
            ("edgeresnet-device: no-space: no space left on the device (/x/verify.json) (free some space and rerun)",
             28, RemoteOutOfSpace),
            ("edgeresnet-device: no-numpy: numpy is not installed for /usr/bin/python3 (install it: `python3 -m pip "
             "install numpy` (JetPack: `sudo apt install python3-numpy`))", 4, RemoteMissing),
            ("edgeresnet-device: bad-file: golden.npz is not a golden set (x) (re-export)", 3, RemoteError)):
        res = ssh.Result(code, b"", "some noise\n" + line + "\n")
        err = remote._device_failure(host, "run", res, "verify", remote.device_error(res))
        assert type(err) is kind and "verify on jetson stopped at run" in err.message, err
        assert "nothing was merged" in err.hint and line.rsplit(" (", 1)[1].rstrip(")") not in err.message, err
    missing = remote._device_failure(host, "run", res, "verify", ("no-numpy", "numpy is not installed (install it: "
                                                                   "`pip install numpy` (JetPack: apt))"))
    assert missing.hint.startswith("on jetson: install it: `pip install numpy` (JetPack: apt)"), missing.hint


# ----------------------------------------------------------------------------- failures through the CLI

@pytest.fixture(scope="module")
def killer(tmp_path_factory) -> str:
    """A device Python that checks the copy, then is SIGKILLed as the action starts (the OOM killer)."""
    path = tmp_path_factory.mktemp("killer") / "python3"
    path.write_text(f'#!/bin/sh\ncase " $* " in *" bench "*|*" eval "*|*" verify "*) kill -9 $$;; esac\n'
                    f'exec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return str(path)


PY_NUMPY_ONLY = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.1*/bin/python")))


@pytest.fixture(scope="module")
def dropper(tmp_path_factory) -> str:
    """A device Python whose action kills the sshd session serving it: the connection drops mid-run."""
    path = tmp_path_factory.mktemp("dropper") / "python3"
    path.write_text('#!/bin/sh\ncase " $* " in *" bench "*) kill -9 "$(cut -d" " -f4 /proc/$PPID/stat)";; esac\n'
                    f'exec {sys.executable} "$@"\n')
    path.chmod(0o755)
    return str(path)


def failure_cases(killer, dropper) -> dict:
    """case -> (command, alias, device python, exit code, words of the message)."""
    cases = {"unreachable": ("bench", "testdev-closed", sys.executable, 4,
                             ("cannot reach testdev-closed", "Connection refused", "stopped at check")),
             "auth refused": ("bench", "testdev-wrongkey", sys.executable, 4, ("refused the login", "Permission denied")),
             "no python": ("bench", "testdev", "/nonexistent/python3", 4, ("/nonexistent/python3 cannot run on testdev",)),
             "killed": ("bench", "testdev", killer, 6, ("killed by SIGKILL", "stopped at run")),
             "dropped": ("bench", "testdev", dropper, 6, ("connection to testdev dropped", "closed by remote host",
                                                        "stopped at run"))}
    if PY38:  # JetPack 5's Python without python3-numpy (-I: nothing from user site-packages)
        cases["no numpy"] = ("verify", "testdev", f"{PY38[0]} -I", 4, ("numpy is not installed", "stopped at run"))
    numpy_only = [p for p in PY_NUMPY_ONLY if _imports(p, "numpy") and not _imports(p, "onnxruntime")
                  and not _imports(p, "openvino")]
    if numpy_only:
        cases["no runtime"] = ("bench", "testdev", f"{numpy_only[0]} -I", 4, ("no engine of", "can run here",
                                                                              "stopped at run"))
    return cases


def _imports(python: str, module: str) -> bool:
    import subprocess

    return subprocess.run([python, "-I", "-c", f"import {module}"], capture_output=True).returncode == 0


@pytest.mark.parametrize("case", ["unreachable", "auth refused", "no python", "killed", "dropped", "no numpy",
                                  "no runtime"])
def test_each_failure_is_one_line_and_merges_nothing(server, killer, dropper, bundle, case):
    found = failure_cases(killer, dropper)
    if case not in found:
        pytest.skip(f"no pyenv Python here for the {case!r} case (~/.pyenv/versions)")
    command, alias, python, code, words = found[case]
    before = snapshot(bundle)
    res = run_cli(command, str(bundle), *host_args(server, alias=alias, python=python))
    one_line_failure(res, code, *words, "nothing was merged")
    assert snapshot(bundle) == before


def test_disk_full_on_the_device(tmp_path, bundle):
    """The device's ~/.cache on a 64 KB tmpfs (a mount namespace of the server's own); where
    mounts are refused, a `tar` first on the device's PATH that fails as GNU tar does on a full disk."""
    need_sshd()
    if sshd.can_mount_tmpfs():
        server = sshd.start(tmp_path / "sshd", home_tmpfs_kb=64)
    else:  # labelled: a stand-in for the full disk, not a full disk
        fake = tmp_path / "fakebin"
        fake.mkdir()
        (fake / "tar").write_text("#!/bin/sh\ncat >/dev/null\necho 'tar: model.fp32.onnx: Cannot write: No space left "
                                  "on device' >&2\nexit 2\n")
        (fake / "tar").chmod(0o755)
        server = sshd.start(tmp_path / "sshd", path=f"{fake}:/usr/local/bin:/usr/bin:/bin")
    try:
        before = snapshot(bundle)
        res = run_cli("bench", str(bundle), *host_args(server))
        one_line_failure(res, 3, "no space left on testdev", "stopped at push", "nothing was merged")
        assert snapshot(bundle) == before
    finally:
        server.stop()


def test_host_flags_go_together(bundle):
    res = run_cli("bench", str(bundle), "--remote-python", "python3.11")
    one_line_failure(res, 2, "go with --host")
    res = run_cli("bench", str(bundle), "--host", "testdev", "--warmup", "3")  # refused before any connection
    one_line_failure(res, 2, "--warmup does not apply with --host")
    res = run_cli("eval", str(bundle), "--host", "testdev", "--data", "default")
    one_line_failure(res, 2, "--data does not apply with --host")


# ----------------------------------------------------------------------------- what comes back

def device_rows_of(rows: list[dict], alias: str = "testdev") -> list[dict]:
    return [r for r in rows if ((r.get("details") or {}).get("ran_on") or {}).get("device") == alias]


def test_bench_on_host_merges_rows_tagged_with_the_host(server, bundle):
    manifest = (bundle / "edgeresnet.json").read_bytes()
    fast = ("--min-seconds", "0.05", "--target", "ort")
    res = run_cli("bench", str(bundle), *host_args(server), *fast)
    assert res.returncode == 0, res.stderr
    rows = device_rows_of(json.loads((bundle / "bench.json").read_text())["results"])
    assert {(r["target"], r["precision"]) for r in rows} == {("ort", "fp32"), ("ort", "int8")}
    for r in rows:
        tag = r["details"]["ran_on"]
        assert r["status"] == "ok" and r["latency_ms"]["p50"] > 0 and r["artifact"] is None
        assert tag["via"] == "ssh testdev" and tag["device_key"].endswith(tag["cpu_class"])
        assert tag["runtimes"]["onnxruntime"] and tag["python"] == sys.version.split()[0]
    assert "testdev" in (bundle / "report.md").read_text()
    assert (bundle / "edgeresnet.json").read_bytes() == manifest  # its hash names the copy and verify.json's entries
    again = run_cli("bench", str(bundle), *host_args(server), *fast)
    assert again.returncode == 0 and "reusing the bundle's copy" in again.stderr, again.stderr
    assert len(device_rows_of(json.loads((bundle / "bench.json").read_text())["results"])) == len(rows)  # replaced


def test_eval_on_host_merges_golden_set_rows_into_the_report(server, bundle):
    res = run_cli("eval", str(bundle), *host_args(server), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["host"] == "testdev" and out["device"]["via"] == "ssh testdev"
    merged = device_rows_of(json.loads((bundle / "report.json").read_text())["results"])
    assert merged == out["results"] and {r["status"] for r in merged} == {"ok"}
    for r in merged:
        assert r["agreement"] >= 0.97 and r["details"]["verdict"] == "passed" and r["details"]["kernel_path"]
    local = [r for r in json.loads((bundle / "report.json").read_text())["results"] if r not in merged]
    assert any(r["target"] == "ort" and r["artifact"] for r in local)  # this machine's rows kept


@pytest.fixture(scope="module")
def trt_python(tmp_path_factory) -> str:
    """The device's Python with the TensorRT and libcudart stand-ins of tests/trt_standin (what
    test_device_rows runs the device file on): no GPU, no TensorRT here."""
    from edgeresnet.ondevice import trt_device as td

    from ..ondevice.test_trt_device import STANDIN

    path = tmp_path_factory.mktemp("trtpy") / "python3"
    path.write_text(f"#!/bin/sh\nexport PYTHONPATH={STANDIN} TRT_STANDIN_VERSION=10.3.0.30 "
                    f"{td.CUDART_ENV}=fake_cudart:library\nexec {sys.executable} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def test_build_on_host_runs_the_device_file_and_merges_its_build_rows(server, trt_python, tmp_path):
    """On the TensorRT stand-in (tests/trt_standin), not a real TensorRT or GPU."""
    from edgeresnet.bundle.manifest import write_manifest

    from ..bundle.test_device_rows import export_with_bundle

    export = export_with_bundle(tmp_path / "exp")
    install_device_file(export)
    write_manifest(export, json.loads((export / "report.json").read_text()), {})
    trt_before = snapshot(export / "trt")
    res = run_cli("build", str(export), *host_args(server, python=trt_python))
    assert res.returncode == 0, res.stderr
    rows = device_rows_of(json.loads((export / "report.json").read_text())["results"])
    assert {r["precision"] for r in rows} == {"fp32", "fp16", "int8", "int8-dla"} and all(r["status"] == "ok" for r in rows)
    tag = rows[0]["details"]["ran_on"]
    assert tag["tensorrt"] == "10.3.0.30" and tag["via"] == "ssh testdev" and tag["runtimes"]["tensorrt"] == "10.3.0.30"
    assert snapshot(export / "trt") == trt_before  # the engines stay on the device; nothing lands in trt/ here


def test_verify_on_host_gives_the_local_verdicts_and_lands_in_verify_json(server, bundle):
    """The issue's check: `verify B --host ALIAS --ssh-config F --remote-python P --json` against a
    local sshd reaches the verdicts of `verify B` here (the same machine, through the bundle's copy
    and its device.py), and its entry lands in B's verify.json tagged with the host."""
    local = run_cli("verify", str(bundle), "--json", "--time-seconds", "0.05")
    assert local.returncode == 0, local.stderr
    res = run_cli("verify", str(bundle), *host_args(server), "--json", "--time-seconds", "0.05")
    assert res.returncode == 0, res.stderr
    there = json.loads(res.stdout)

    def verdicts(entry: dict) -> dict:
        return {(r["target"], r["precision"]): (r["status"], r["top1"], r["agreement"], r["kernel"], r["path"])
                for r in entry["engines"]}

    assert verdicts(there) == verdicts(json.loads(local.stdout)) and len(verdicts(there)) >= 4
    assert there["via"] == "ssh testdev" and there["chosen"] is not None
    doc = json.loads((bundle / "verify.json").read_text())
    assert doc["bundle_sha256"] == hashlib.sha256((bundle / "edgeresnet.json").read_bytes()).hexdigest()
    assert doc["devices"][there["device"]["device_key"]] == there  # this machine's key: the remote entry replaced it
    assert not (server.cache / remote.bundle_key(bundle) / "verify.json").exists()  # --no-write there


def test_a_killed_verify_writes_no_verify_json(server, killer, bundle):
    before = snapshot(bundle)
    res = run_cli("verify", str(bundle), *host_args(server, python=killer))
    one_line_failure(res, 6, "killed by SIGKILL", "verify on testdev stopped at run")
    assert snapshot(bundle) == before and not (bundle / "verify.json").exists()


def test_build_on_host_without_tensorrt_there_is_one_line(server, trt_bundle, tmp_path):
    """trt_device.py's own two-line error (exit 4: no TensorRT module) read as the device's."""
    export = Path(shutil.copytree(trt_bundle, tmp_path / "exp"))
    before = snapshot(export)
    res = run_cli("build", str(export), *host_args(server))
    one_line_failure(res, 4, "TensorRT's Python module is not installed", "build on testdev stopped at run",
                     "python3-libnvinfer", "nothing was merged")
    assert snapshot(export) == before
