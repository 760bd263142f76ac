#!/usr/bin/env bash
# One-step setup on a fresh machine: a .venv with the CPU build of torch and edgeresnet with
# every engine that installs from PyPI, plus Debian's Fashion-MNIST when apt is at hand.
set -euo pipefail
cd "$(dirname "$0")"
# Debian packages: Fashion-MNIST (the full train split), qemu-user (tests/test_cpu_emulation.py
# runs the bundle as an AVX2-only x86 and as an ARM64 CPU) and openssh-server (tests/host/test_remote.py
# drives --host through an sshd of its own on 127.0.0.1 with throwaway keys). All optional:
# without them the shipped calibration/ images still work and the emulation and SSH tests skip,
# saying why.
missing=""
[ -d /usr/share/datasets/fashion-mnist ] || missing="$missing dataset-fashion-mnist"
command -v qemu-aarch64 >/dev/null 2>&1 || missing="$missing qemu-user"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v ssh >/dev/null 2>&1 || missing="$missing openssh-client"
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) \
            || echo "note:$missing not installed; the shipped calibration/ images still work, emulation and SSH tests skip"
    else
        echo "note: run 'sudo apt-get install$missing' for the full Fashion-MNIST train split, the CPU emulation and the SSH tests"
    fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Pinned: an unpinned torch pulls the CUDA build (gigabytes) on machines without a GPU.
.venv/bin/python -m pip install -q "torch==${EDGERESNET_TORCH:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "ready: .venv/bin/edgeresnet --help"
