"""Run edgeresnet as another CPU, from any x86-64 machine: a harness for INT8 portability.

* ``haswell``: ``qemu-x86_64 -cpu Haswell-v4`` runs this venv's Python as an AVX2-only x86
  (no VNNI): ONNX Runtime then takes the kernels of that CPU class, about 100x slower.
* ``arm64``: ``qemu-aarch64 -cpu neoverse-n1`` (ARM dot-product, as in Graviton 2 and the
  Jetson Orin's Cortex-A78AE) runs an arm64 Python from Debian's own packages with the aarch64
  wheels of onnxruntime, numpy and pillow: the torch-free runtime as a Jetson or Graviton runs it.
* ``arm64-a72``: the same userland as a Cortex-A72 (NEON without dot-product: Raspberry Pi 4).

The arm64 userland is built without root rights, chroot or binfmt: Debian's arm64 packages
(apt-get download) unpacked with ``dpkg -x``, and the wheels unzipped beside them. qemu-user
opens absolute paths inside its ``-L`` prefix first. That is how the sysroot's synthetic ARM
``/proc/cpuinfo`` (one prefix per core) replaces the host's x86 one, which crashed ONNX Runtime's cpuinfo parser
(SIGSEGV on import). CPUID and HWCAP are emulated, so edgeresnet.host.machine sees the emulated
CPU. The sysroot is cached under ``~/.cache/edgeresnet/emulation`` and keyed by the package
versions. It is written to a temp folder and renamed into place, so an interrupted build
leaves nothing half-made.

Accuracy only: emulated time says nothing about real speed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EDGERESNET_EMULATION_CACHE", Path.home() / ".cache" / "edgeresnet" / "emulation"))
DEBS = ("python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 "
        "libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libgomp1 libzstd1 libuuid1 libcrypt1 libtirpc3 libnsl2 "
        "libdb5.3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libcom-err2 libkrb5support0 libkeyutils1").split()
# The torch-free runtime and the CLI, pinned to this venv's versions (pure-Python ones need no platform tag).
WHEELS = ("onnxruntime", "numpy", "pillow", "protobuf", "flatbuffers", "packaging", "typer", "rich",
          "shellingham", "markdown-it-py", "mdurl", "pygments", "typing_extensions", "annotated-doc", "pydantic",
          "pydantic_core", "annotated-types", "typing-inspection")
ARM_PLATFORMS = ("manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")
# What each ARM core's Linux kernel reports in /proc/cpuinfo: (qemu -cpu, Features, part number).
ARM_CORES = {
    "arm64": ("neoverse-n1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                             "dcpop asimddp", "0xd0c"),
    "arm64-a72": ("cortex-a72", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid", "0xd08"),
}
ARM_CPUINFO = ("processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
               "CPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: {part}\nCPU revision\t: 1\n")
CPUS = {"haswell": "qemu-x86_64 -cpu Haswell-v4 (AVX2, FMA; no AVX-512, no VNNI)",
        "arm64": "qemu-aarch64 -cpu neoverse-n1 (NEON, ARM dot-product: Graviton 2, Jetson Orin class)",
        "arm64-a72": "qemu-aarch64 -cpu cortex-a72 (NEON, no dot-product: Raspberry Pi 4 class)"}


class EmulatorUnavailable(RuntimeError):
    """This machine cannot run that CPU: the message says what is missing and how to get it."""


@dataclass(frozen=True)
class Emulator:
    name: str
    prefix: tuple[str, ...]  # the command that runs a Python interpreter as that CPU
    env: dict[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return CPUS[self.name]

    def python(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, "PYTHONDONTWRITEBYTECODE": "1"}
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True, env=env, timeout=timeout)

    def cli(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        """``python -m edgeresnet ARGS`` as that CPU."""
        return self.python("-m", "edgeresnet", *args, timeout=timeout)


def _qemu(binary: str) -> str:
    """The qemu-user binary; refused before 7.2, whose TCG cannot run AVX2 (Haswell-v4 would
    silently lose AVX2 and test another class)."""
    path = shutil.which(binary)
    if path is None:
        raise EmulatorUnavailable(f"{binary} is not installed (Debian: apt-get install qemu-user)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    words = out.split()
    version = words[words.index("version") + 1] if "version" in words else "0"
    major_minor = tuple(int(v) for v in version.split(".")[:2] if v.isdigit())
    if major_minor < (7, 2):
        raise EmulatorUnavailable(f"{binary} {version} is too old: qemu 7.2 or newer emulates AVX2 (Debian bookworm has it)")
    return path


def emulator(name: str) -> Emulator:
    """The emulator for a CPU class name in ``CPUS``; builds the arm64 sysroot on first use."""
    if name == "haswell":
        if os.uname().machine != "x86_64":
            raise EmulatorUnavailable("the Haswell emulation runs this venv's x86-64 Python: needs an x86-64 host")
        return Emulator(name, (_qemu("qemu-x86_64"), "-cpu", "Haswell-v4", sys.executable),
                        {"PYTHONPATH": str(ROOT)})
    if name in ARM_CORES:
        qemu = _qemu("qemu-aarch64")
        root, site = arm64_sysroot()
        prefix = _core_prefix(root, name)
        return Emulator(name, (qemu, "-cpu", ARM_CORES[name][0], "-L", str(prefix), str(prefix / "usr/bin/python3.11")),
                        {"PYTHONPATH": f"{site}{os.pathsep}{ROOT}"})
    raise ValueError(f"unknown emulated CPU {name!r}; one of {', '.join(CPUS)}")


def _core_prefix(root: Path, name: str) -> Path:
    """A -L prefix for one ARM core: its own /proc/cpuinfo, everything else linked to the sysroot."""
    prefix = root.parent / f"prefix-{name}"
    if not (prefix / "proc" / "cpuinfo").exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".prefix-{name}-", dir=root.parent))
        for entry in root.iterdir():
            if entry.name != "proc":
                (tmp / entry.name).symlink_to(entry)
        (tmp / "proc").mkdir()
        _, features, part = ARM_CORES[name]
        (tmp / "proc" / "cpuinfo").write_text(
            "\n".join(ARM_CPUINFO.format(i=i, features=features, part=part) for i in range(os.cpu_count() or 1)))
        try:
            os.replace(tmp, prefix)
        except OSError:  # built meanwhile by another process
            shutil.rmtree(tmp, ignore_errors=True)
    return prefix


def _versions() -> dict[str, str]:
    try:
        return {name: importlib.metadata.version(name) for name in WHEELS}
    except importlib.metadata.PackageNotFoundError as exc:
        raise EmulatorUnavailable(f"{exc.name} is not installed in this venv: run ./setup.sh") from None


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=900)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EmulatorUnavailable(f"{' '.join(cmd[:3])} ... failed: {tail[0]}")


def arm64_sysroot() -> tuple[Path, Path]:
    """(sysroot, site-packages) of the cached arm64 userland; built when missing (~30 s, ~250 MB)."""
    versions = _versions()
    key = hashlib.sha256(repr((sorted(versions.items()), DEBS)).encode()).hexdigest()[:12]
    final = CACHE / f"arm64-{key}"
    if (final / "ok").exists():
        return final / "root", final / "site"
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise EmulatorUnavailable("building the arm64 userland needs Debian's apt-get and dpkg")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".arm64-", dir=CACHE))
    try:
        apt = tmp / "apt"
        for d in ("lists/partial", "cache/archives/partial", "debs"):
            (apt / d).mkdir(parents=True)
        opts = ["-oAPT::Architecture=arm64", "-oAPT::Architectures=arm64", f"-oDir::State::Lists={apt / 'lists'}",
                f"-oDir::Cache={apt / 'cache'}", "-oDebug::NoLocking=1", "-qq"]
        _run(["apt-get", *opts, "update"])
        _run(["apt-get", *opts, "download", *DEBS], cwd=apt / "debs")
        root = tmp / "root"
        for deb in sorted((apt / "debs").glob("*.deb")):
            _run(["dpkg", "-x", str(deb), str(root)])
        wheels, site = tmp / "wheels", tmp / "site"
        platforms = [f"--platform={p}" for p in ARM_PLATFORMS]
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
              "--implementation", "cp", *platforms, "-d", str(wheels), *(f"{n}=={v}" for n, v in versions.items())])
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(site)
        shutil.rmtree(apt)
        (tmp / "ok").write_text(repr(versions))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / "root", final / "site"
