"""Make the ModelOpt reference fixture (see README.md beside this file). Run once, from the
repository root, with this project's venv and a separate venv holding NVIDIA's ModelOpt:

    python3 -m venv /tmp/movenv
    /tmp/movenv/bin/pip install torch==2.13.0 "nvidia-modelopt[onnx]==0.47.0"
    .venv/bin/python tests/data/modelopt/make_fixture.py --modelopt-python /tmp/movenv/bin/python

For each model it exports our TensorRT bundle (--prepare-only, minmax), writes the very
calibration images our export used to an .npy, has ModelOpt quantize the same FP32 ONNX with
them (``--calibration_method max``, the same statistic as our minmax), and keeps ModelOpt's
placement and scales as JSON (tests/qdq_placement.py reads both graphs the same way).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from tests.qdq_placement import placement  # noqa: E402

MODELS = {
    "resnet20": ["default", "--calib", "default", "--calib-size", "512"],
    "resnet18": ["resnet18", "--input-size", "224", "--calib", "default", "--calib-size", "64"],
}
MODELOPT = ["-m", "modelopt.onnx.quantization", "--quantize_mode", "int8", "--calibration_method", "max",
            "--calibration_eps", "cpu", "--high_precision_dtype", "fp32"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modelopt-python", required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeresnet-modelopt"))
    args = ap.parse_args()
    version = subprocess.run([args.modelopt_python, "-c", "import modelopt; print(modelopt.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    for name, export_args in MODELS.items():
        out = args.work / name
        subprocess.run([sys.executable, "-m", "edgeresnet", "export", *export_args, "--target", "trt", "--prepare-only",
                        "--calib-method", "minmax", "--no-eval", "--out", str(out), "--force"], check=True)
        from edgeresnet.calibrate.table import CalibrationTable
        from edgeresnet.data import Preprocess, load_split

        table = CalibrationTable.load(out / "calibration.json")
        report = json.loads((out / "report.json").read_text())
        pre = Preprocess.from_dict(report["model"]["preprocess"])
        images = load_split("default", "train").batch(np.asarray(table.image_indices), pre)
        np.save(out / "calib.npy", images)
        mo_path = out / "modelopt.onnx"
        subprocess.run([args.modelopt_python, *MODELOPT, "--onnx_path", str(out / "model.fp32.onnx"),
                        "--calibration_data_path", str(out / "calib.npy"), "--output_path", str(mo_path)], check=True)
        fixture = {"model": name, "export": "edgeresnet export " + " ".join(export_args) +
                   " --target trt --prepare-only --calib-method minmax --no-eval",
                   "modelopt": f"nvidia-modelopt {version}: python " + " ".join(MODELOPT) +
                   " --onnx_path model.fp32.onnx --calibration_data_path calib.npy",
                   "calibration_images": int(len(images)), "placement": placement(onnx.load(str(mo_path)))}
        (Path(__file__).parent / f"{name}.json").write_text(json.dumps(fixture, indent=None, separators=(",", ":")))
        print(f"{name}: {len(fixture['placement'])} nodes with quantized inputs")


if __name__ == "__main__":
    main()
