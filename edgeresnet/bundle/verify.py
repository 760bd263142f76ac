"""`verify`: every engine of a bundle on its golden set, here, and the record of it (verify.json).

The work is done by the bundle's device file (``bundle/device.py``), which this module imports:
the same code runs where edgeresnet is not installed, so a device and the workstation reach the
same verdicts."""

from __future__ import annotations

import shutil
from pathlib import Path

DEVICE_FILE = "device.py"


def install_device_file(root: Path) -> Path:
    """Copy the device file into an export folder (the manifest then lists and hashes it)."""
    target = Path(root) / DEVICE_FILE
    shutil.copyfile(Path(__file__).resolve().parent / DEVICE_FILE, target)
    return target
