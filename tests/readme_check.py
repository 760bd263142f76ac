"""Run every command of the README's ```bash blocks, as written, in a fresh clone with a fresh venv.

    python3 tests/readme_check.py [--root DIR] [--keep]

Not a pytest module (it takes 20 to 30 minutes on 2 cores; CI runs the tests instead). It
clones this repository into a scratch directory (or uses ``--root``, a clone it may litter), runs
``./setup.sh`` there (the README's first command), makes the inputs the examples name
(``runs/r20.pt``, ``photos/``, ``resnet50.pth``, ``shoe.png``, ...) from the shipped images, and
then runs each command in README order with ``edgeresnet`` meaning the clone's venv. What cannot
run here is named, not hidden:

* ``rsync``/``scp`` to a ``jetson`` host: no such host;
* the Jetson session (``sudo apt install``, ``cd ~/exports/...``, ``python3 trt/trt_device.py``): no Jetson;
* ``edgeresnet build``: must exit 4 saying TensorRT is missing (no TensorRT installs here);
* ``edgeresnet report``: must exit 3 saying there are no device rows (the Jetson session did not run);
* ``python -m pytest``: what CI runs.

The ``--host jetson`` commands (Devices over SSH) run as written against a stand-in for the
Jetson: OpenSSH's sshd on 127.0.0.1 (tests/sshd.py, throwaway keys), whose ``python3`` is the
clone's venv, reached as ``jetson`` through ``ssh_config`` in the clone; ``ssh`` on the commands'
PATH is a wrapper adding ``-F ssh_config`` (ssh reads ~/.ssh/config from the passwd entry, not
$HOME, and the real one is left alone). Without sshd they are named and skipped.

Prints one line per command (exit code, seconds, the last line of its output) and exits 1 when
any command that should work did not.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP = {"rsync": "needs a remote host (jetson)", "scp": "needs a remote host (jetson)",
        ".venv/bin/python -m pytest": "the test suite: CI runs it",
        "sudo apt install": "on the Jetson: JetPack's own packages",
        "cd ~/exports/": "on the Jetson", "python3 trt/trt_device.py": "on the Jetson: needs its TensorRT"}
NO_TENSORRT = ("edgeresnet build",)  # expected: exit 4, a one-line "TensorRT ... not installed"
NO_DEVICE = ("edgeresnet report",)  # expected: exit 3, "no device rows" (the Jetson session was skipped)


def readme_commands(readme: Path) -> list[str]:
    commands, inside = [], False
    for line in readme.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside and line.strip():
            commands.append(re.sub(r"\s+#\s.*$", "", line).strip())
    return commands


def make_inputs(root: Path, py: Path) -> None:
    """The files the README's examples name, made from the shipped Fashion-MNIST images."""
    script = r'''
import sys
from pathlib import Path
import numpy as np, torch
from PIL import Image
from edgeresnet import build_model
from edgeresnet.data import load_split
root = Path(sys.argv[1]); data = load_split("default", "train")
def png(i, path, side=32):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.images[i, :, :, 0]).resize((side, side)).convert("RGB").save(path)
for c in range(3):
    for i in np.flatnonzero(data.labels == c)[:16]:
        png(i, root / "photos" / data.classes[c].replace("/", "-") / f"{i}.png")
png(int(np.flatnonzero(data.labels == 7)[0]), root / "shoe.png", 28)
for k, i in enumerate(np.flatnonzero(data.labels == 8)[:2]):
    png(i, root / "bags" / f"bag{k}.png", 28)
for k, i in enumerate(np.flatnonzero(data.labels == 0)[:2]):
    (root / "more").mkdir(exist_ok=True)
    Image.fromarray(data.images[i, :, :, 0]).save(root / "more" / f"shirt{k}.jpg")
for k in range(3):
    png(k, root / "imgs" / f"{k}.png", 28)
torch.save(build_model("resnet50", num_classes=1000).state_dict(), root / "resnet50.pth")
torch.save(build_model("resnet18", num_classes=1000).state_dict(), root / "resnet18.pth")
'''
    subprocess.run([str(py), "-c", script, str(root)], check=True, cwd=root)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, help="a clone to run in (default: a fresh clone in a temp dir)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per command")
    args = ap.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="edgeresnet-readme-")) / "edgeresnet"
    if not args.root:
        subprocess.run(["git", "clone", "-q", str(REPO), str(root)], check=True)
    home = root / "home"  # `~/exports/...` in the Jetson lines
    home.mkdir(exist_ok=True)
    real_cache = Path.home() / ".cache"
    if real_cache.is_dir() and not (home / ".cache").exists():
        (home / ".cache").symlink_to(real_cache)  # the emulation's built interpreters (tests/cpu_emulation.py)
    env = {**os.environ, "HOME": str(home), "PATH": f"{root / '.venv' / 'bin'}:{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    failures, made_inputs = 0, False
    jetson = StandInJetson(root)
    print(f"README commands in {root}")
    for cmd in readme_commands(root / "README.md"):
        skip = next((why for prefix, why in SKIP.items() if cmd.startswith(prefix)), None)
        if skip:
            print(f"SKIP  {cmd}\n      {skip}")
            continue
        if not made_inputs and (root / ".venv" / "bin" / "python").exists():
            make_inputs(root, root / ".venv" / "bin" / "python")
            # runs/r20.pt: the README's own train command, shortened (its 15 full epochs take 21 minutes)
            subprocess.run(["edgeresnet", "train", "--arch", "resnet20", "--data", "fashion-mnist", "--epochs", "1",
                            "--limit", "3000", "--out", "runs/r20.pt"], cwd=root, env=env, check=True,
                           capture_output=True)
            made_inputs = True
        if ".whl" in cmd and cmd.startswith("pip install"):
            # A device-side install: the wheel built as Install says, copied over (scp), into a venv
            # of its own, as on a device.
            if not list((root / "dist").glob("*.whl")):
                subprocess.run([".venv/bin/pip", "wheel", ".", "--no-deps", "-q", "-w", "dist"], cwd=root, env=env,
                               check=True, capture_output=True)
            for wheel in (root / "dist").glob("*.whl"):
                (root / wheel.name).write_bytes(wheel.read_bytes())
            venv = root / "device-venv"
            if not venv.exists():
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            cmd = f"{venv}/bin/{cmd}"
        elif cmd.startswith("pip "):
            cmd = f".venv/bin/{cmd}"
        if "~/exports/" in cmd and (root / "exports").is_dir():  # after `rsync -a exports/r20 jetson:~/exports/`
            subprocess.run(["cp", "-a", str(root / "exports"), str(home)], check=True)
        run_env = env
        if "--host jetson" in cmd:
            run_env = jetson.env(env) if jetson.ready() else None
            if run_env is None:
                print(f"SKIP  {cmd}\n      {jetson.why}")
                continue
        start = time.perf_counter()
        res = subprocess.run(["bash", "-c", cmd], cwd=root, env=run_env, capture_output=True, text=True,
                             timeout=args.timeout)
        seconds = time.perf_counter() - start
        last = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or [""]
        expected_fail = cmd.startswith(NO_TENSORRT) and "--dry-run" not in cmd
        no_rows = cmd.startswith(NO_DEVICE)
        ok = (res.returncode == 4 and "tensorrt" in res.stderr.lower()) if expected_fail else \
            (res.returncode == 3 and "no device rows" in res.stderr) if no_rows else res.returncode == 0
        failures += not ok
        tag = ("OK" if ok else "FAIL") + (" (no TensorRT here, as expected)" if expected_fail and ok else "") + \
            (" (no device session here, as expected)" if no_rows and ok else "")
        print(f"{tag:4}  exit {res.returncode}  {seconds:6.1f}s  {cmd}\n      {last[0][:200]}")
        if not ok:
            print("\n".join("      | " + line for line in (res.stdout + res.stderr).splitlines()[-15:]))
        sys.stdout.flush()
    jetson.stop()
    print(f"{failures} command(s) failed" if failures else "every README command ran as written")
    return 1 if failures else 0


class StandInJetson:
    """`--host jetson` for the README's commands: sshd on 127.0.0.1, started at first use."""

    def __init__(self, root: Path) -> None:
        self.root, self.server, self.why = root, None, ""

    def ready(self) -> bool:
        if self.server is not None or self.why:
            return self.server is not None
        sys.path.insert(0, str(REPO))
        from tests import sshd

        self.why = sshd.missing() or ""
        if self.why:
            return False
        venv = self.root / ".venv" / "bin"
        self.server = sshd.start(self.root / "jetson-sshd", path=f"{venv}:/usr/local/bin:/usr/bin:/bin", alias="jetson")
        (self.server.home / "venv").symlink_to(self.root / ".venv")  # `--remote-python "~/venv/bin/python -I"`
        (self.root / "ssh_config").write_text(self.server.config.read_text())
        wrapper = self.root / "jetson-sshd" / "bin" / "ssh"
        wrapper.parent.mkdir(exist_ok=True)
        real = subprocess.run(["sh", "-c", "command -v ssh"], capture_output=True, text=True).stdout.strip()
        wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" -F "*) exec {real} "$@";; esac\n'
                           f'exec {real} -F {self.root / "ssh_config"} "$@"\n')
        wrapper.chmod(0o755)
        return True

    def env(self, env: dict) -> dict:
        return {**env, "PATH": f"{self.root / 'jetson-sshd' / 'bin'}:{env['PATH']}"}

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


if __name__ == "__main__":
    sys.exit(main())
