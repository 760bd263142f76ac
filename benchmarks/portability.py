"""INT8 accuracy per CPU class: ours, ONNX Runtime's quantize_static and NNCF, native and emulated.

    python benchmarks/portability.py [--images 2000] [--cpus native,haswell,arm64] [--out benchmarks/RESULTS-portability.md]

One export of the default model (`edgeresnet export default --target ort,openvino`). The peers
quantize its FP32 ONNX on the same calibration images:
- `quantize_static` best x86 setting: QDQ, uint8 activations, per-channel int8 weights;
- NNCF's `nncf.quantize` defaults on the ONNX model (a QDQ ONNX, run by ONNX Runtime).

Every INT8 model is then scored on the first N Fashion-MNIST test images:
- natively;
- as an AVX2-only x86 (`qemu-x86_64 -cpu Haswell-v4`);
- as an ARM64 Neoverse-N1 (`qemu-aarch64`; see tests/cpu_emulation.py).

Ours is scored with `edgeresnet eval BUNDLE`, so each CPU picks its own file. Peers run through a
standalone numpy + onnxruntime script. Drops are against the FP32 ONNX run natively on the same
images: float results do not depend on the ISA beyond rounding. Emulated rows are accuracy only,
never latency.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cpu_emulation import CPUS, Emulator, EmulatorUnavailable, emulator  # noqa: E402

SCORE = """
import json, sys, numpy as np, onnxruntime as ort
model, images, labels = sys.argv[1:4]
x, y = np.load(images), np.load(labels)
s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
name = s.get_inputs()[0].name
pred = np.concatenate([s.run(None, {name: x[i:i + 250]})[0].argmax(1) for i in range(0, len(x), 250)])
print(json.dumps({"top1": float((pred == y).mean()), "pred": pred.tolist()}))
"""


def native() -> Emulator:
    return Emulator("native", (sys.executable,), {"PYTHONPATH": str(ROOT)})


def peers(bundle: Path, work: Path) -> dict[str, Path]:
    import nncf
    import onnx
    from onnxruntime import quantization as ortq

    from edgeresnet.data import Preprocess, load_split

    manifest = json.loads((bundle / "edgeresnet.json").read_text())
    table = json.loads((bundle / "calibration.json").read_text())
    pre = Preprocess.from_dict(manifest["preprocess"])
    calib = load_split("default", "train").batch(np.asarray(table["image_indices"]), pre)

    class Reader(ortq.CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib[i:i + 16] for i in range(0, len(calib), 16))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    fp32 = bundle / "model.fp32.onnx"
    paths = {"quantize_static best (U8S8, per-channel)": work / "qs_best.onnx", "NNCF defaults (ONNX backend)": work / "nncf.onnx"}
    ortq.quantize_static(str(fp32), str(paths["quantize_static best (U8S8, per-channel)"]), Reader(),
                         activation_type=ortq.QuantType.QUInt8, per_channel=True)
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {"input": x})
    quantized = nncf.quantize(onnx.load(str(fp32)), dataset, subset_size=len(calib))
    onnx.save(quantized, str(paths["NNCF defaults (ONNX backend)"]))
    return paths


def peer_kernel(path: Path, cls: str) -> str:
    """A peer model's kernel family from its graph: activation type (uint8 -> U8S8, int8 -> S8S8)
    and whether its 8-bit weights meet int16 saturation on this CPU class (x86 without VNNI)."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    act = "u8" if inits.get(q.input[2]) == onnx.TensorProto.UINT8 else "s8"
    no_vnni = cls in ("x86-avx2", "x86-avx512", "x86")
    return f"{act}s8" + ("-saturating" if no_vnni and act == "u8" else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000, help="test images per emulated row (native rows: all 10,000)")
    ap.add_argument("--cpus", default="native,haswell,arm64,arm64-a72")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS-portability.md")
    args = ap.parse_args()
    from edgeresnet.data import Preprocess, load_split
    from edgeresnet.backends.installed import libraries
    from edgeresnet.host.machine import cpu, cpu_class

    work = Path(tempfile.mkdtemp(prefix="edgeresnet-portability-"))
    bundle = work / "bundle"
    export_cmd = ["edgeresnet", "export", "default", "--target", "ort,openvino", "--calib", "default", "--eval", "default",
                  "--calib-size", "512", "--out", str(bundle)]
    subprocess.run([sys.executable, "-m", "edgeresnet", *export_cmd[1:]], check=True)
    models = peers(bundle, work)
    pre = Preprocess.from_dict(json.loads((bundle / "edgeresnet.json").read_text())["preprocess"])
    test = load_split("default", "test")
    sections, rows = [], []
    for name in args.cpus.split(","):
        n = len(test) if name == "native" else args.images
        images, labels = work / f"x{n}.npy", work / f"y{n}.npy"
        if not images.exists():
            np.save(images, test.batch(np.arange(n), pre))
            np.save(labels, test.labels[:n])
        fp32 = json.loads(native().python("-c", SCORE, str(bundle / "model.fp32.onnx"), str(images), str(labels)).stdout)
        try:
            emu = native() if name == "native" else emulator(name)
        except EmulatorUnavailable as exc:
            rows.append(f"| {name} | - | - | - | - | - | not run: {exc} |")
            continue
        probe = json.loads(emu.python("-c", "import json; from edgeresnet.host.machine import cpu; "
                                      "print(json.dumps(cpu()))").stdout)
        where = f"{name}: {probe['model'] if name == 'native' else CPUS[name]} [{probe['class']}: {', '.join(probe['isa'])}]"
        targets = ["ort", "openvino"] if name == "native" else ["ort"]
        for target in targets:
            t0 = time.perf_counter()
            res = emu.cli("eval", str(bundle), "--data", "default", "--limit", str(n), "--json", "--target", target)
            got = json.loads(res.stdout)
            rows.append(f"| {where} | edgeresnet {target} INT8 | {got.get('kernel')} | {fp32['top1']:.2%} | {got['top1']:.2%} | "
                        f"{(fp32['top1'] - got['top1']) * 100:+.2f} | {n} ({time.perf_counter() - t0:.0f} s) |")
            print(rows[-1], flush=True)
        for label, path in models.items():
            t0 = time.perf_counter()
            res = emu.python("-c", SCORE, str(path), str(images), str(labels))
            if res.returncode != 0:
                rows.append(f"| {where} | {label} | - | {fp32['top1']:.2%} | failed | - | {res.stderr.strip().splitlines()[-1][:120]} |")
                continue
            got = json.loads(res.stdout)
            agree = float((np.asarray(got["pred"]) == np.asarray(fp32["pred"])).mean())
            kernel = peer_kernel(path, probe["class"])
            rows.append(f"| {where} | {label} (agreement {agree:.2%}) | {kernel} | {fp32['top1']:.2%} | {got['top1']:.2%} | "
                        f"{(fp32['top1'] - got['top1']) * 100:+.2f} | {n} ({time.perf_counter() - t0:.0f} s) |")
            print(rows[-1], flush=True)
    me = cpu()
    text = "\n".join([
        "# INT8 accuracy per CPU class", "",
        f"Recorded {datetime.date.today().isoformat()} on {me['model']} (class {cpu_class()}, {me['cores']} cores; "
        f"{', '.join(me['isa'])}; ISA read by {me['isa_source']}); "
        + ", ".join(f"{k} {v}" for k, v in libraries().items() if v) + ".", "",
        f"Command: `python benchmarks/portability.py --images {args.images} --cpus {args.cpus}`; the export inside it: "
        f"`{' '.join(export_cmd[:-2])}`.", "",
        "Drop = FP32 top-1 (the FP32 ONNX run natively on the same images) - INT8 top-1, in pp. Native rows score all "
        f"10,000 test images; emulated rows the first {args.images} (accuracy only: emulated time is no latency). "
        "Ours is `edgeresnet eval BUNDLE` as that CPU, so each CPU loads the file it picks (`kernel`). Peers are the same "
        "FP32 ONNX quantized on the same 512 calibration images.", "",
        "| CPU class | engine / tool | INT8 kernel | FP32 top-1 | INT8 top-1 | drop pp | images (time) |",
        "|---|---|---|---|---|---|---|", *rows, ""])
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
