"""The default model's bundle, evaluated as other CPUs under qemu-user (tests/cpu_emulation.py).

A developer on a VNNI or AMX machine cannot see the int16 saturation of AVX2-only x86, nor ARM's
kernels: here the torch-free bundle runs as those CPUs, and its INT8 drop against the export's
FP32 row (same 2,000 test images) must stay under 0.5 pp. Measured natively on an AVX2-only
EPYC on these images: the saturating 8-bit file lost 1.35 pp, the 7-bit twin -0.10 pp (on the
first 500 the saturation cost only 2 images: too few to tell). Slow: emulation is ~100x slower.
"""

from __future__ import annotations

import json

import pytest

from .conftest import export_default
from .cpu_emulation import EmulatorUnavailable, emulator

pytestmark = pytest.mark.slow
IMAGES = 2000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("emulated") / "exp"
    export_default(out, "--target", "ort", "--calib-size", "256", "--eval-limit", str(IMAGES))
    return out


@pytest.mark.parametrize("cpu", ["haswell", "arm64"])  # arm64-a72: benchmarks/portability.py
def test_int8_drop_holds_as_another_cpu(bundle, cpu):
    try:
        emu = emulator(cpu)
    except EmulatorUnavailable as exc:
        pytest.skip(f"cannot emulate {cpu}: {exc}")
    probe = emu.python("-c", "from edgeresnet.host.machine import cpu_class; print(cpu_class())", timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    expected = {"haswell": "x86-avx2", "arm64": "arm-dot"}[cpu]
    assert probe.stdout.strip() == expected  # the emulated CPU, not the host's /proc/cpuinfo
    res = emu.cli("eval", str(bundle), "--data", "default", "--limit", str(IMAGES), "--json",
                  "--target", "ort", "--precision", "int8", timeout=1200)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    assert got["cpu"]["class"] == expected and got["same_images_as_report"] is True
    assert got["top1"] > 0.85
    assert got["drop_vs_report_fp32_pp"] < 0.5, got  # 10 of 2,000 images
    assert got["kernel"] == {"haswell": "u8s8-7bit", "arm64": "arm-dot"}[cpu]
