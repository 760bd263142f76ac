#!/usr/bin/env bash
# One-step setup on a fresh machine: a .venv with the CPU build of torch and edgeresnet with
# every engine that installs from PyPI, plus Debian's Fashion-MNIST when apt is at hand.
set -euo pipefail
cd "$(dirname "$0")"
if command -v apt-get >/dev/null 2>&1 && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
            || echo "note: dataset-fashion-mnist not installed; the shipped calibration/ images still work (--data default)"
    else
        echo "note: run 'sudo apt-get install dataset-fashion-mnist' for the full Fashion-MNIST train split"
    fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Pinned: an unpinned torch pulls the CUDA build (gigabytes) on machines without a GPU.
.venv/bin/python -m pip install -q "torch==${EDGERESNET_TORCH:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "ready: .venv/bin/edgeresnet --help"
