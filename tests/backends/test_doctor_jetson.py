"""`edgeresnet doctor` on a Jetson: L4T from /etc/nv_tegra_release (or dpkg), the board from the
device tree, then JetPack -> TensorRT line -> install path (apt on JetPack 5/6, never pip). The
roots under tests/data/jetson_doctor/ stand for each board's `/` (README there)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgeresnet.backends.tensorrt.jetpack import jetson_facts, read_l4t, stack_for
from edgeresnet.backends.tensorrt.recipes import recipe_for

from ..conftest import run_cli

ROOTS = Path(__file__).parents[1] / "data" / "jetson_doctor"
BOARDS = {  # board: (L4T, JetPack, TensorRT JetPack ships, line, install path, DLA note starts with)
    "agx-orin-jp5.0.2": ("35.1.0", "5.0.2", "8.4.1", "8.4", "apt", "DLA cores"),
    "xavier-nx-jp5.1.2": ("35.4.1", "5.1.2", "8.5.2", "8.5", "apt", "DLA cores"),
    "orin-nano-jp6.0": ("36.3.0", "6.0", "8.6.2", "8.6", "apt", "no DLA on Orin Nano"),
    "agx-orin-jp6.2": ("36.4.3", "6.2", "10.3.0", "10.3", "apt", "DLA cores"),
    "agx-thor-jp7.0": ("38.2.1", "7.0", "10.13", "10", "apt or pip", "no DLA on Thor"),
}


@pytest.mark.parametrize("board", list(BOARDS))
def test_each_board_maps_l4t_to_jetpack_to_its_tensorrt_line(board):
    l4t, jetpack, tensorrt, line, install, dla = BOARDS[board]
    facts = jetson_facts(ROOTS / board)
    assert facts["supported"] is True
    assert (facts["l4t"], facts["jetpack"], facts["tensorrt"], facts["trt_line"]) == (l4t, jetpack, tensorrt, line)
    assert facts["install_path"] == install and facts["dla"].startswith(dla)
    assert recipe_for(facts["tensorrt"])[0].line == line  # the doctor's line is the recipe's
    if install == "apt":  # JetPack 5/6: JetPack's TensorRT from apt, never pip
        assert "apt install python3-libnvinfer" in facts["install"] and "never pip" in facts["install"]
        assert "pip install tensorrt" not in facts["install"]
    assert facts["cuda_python"].startswith(f'pip install "cuda-python=={facts["cuda"]}.*"')


def test_thor_without_nv_tegra_release_reads_l4t_from_dpkg():
    assert read_l4t(ROOTS / "agx-thor-jp7.0") == ("38.2.1", "dpkg nvidia-l4t-core")
    assert read_l4t(ROOTS / "agx-orin-jp6.2") == ("36.4.3", "/etc/nv_tegra_release")


def test_jetpack_4_is_named_and_refused_and_a_workstation_is_no_jetson():
    facts = jetson_facts(ROOTS / "nano-jp4.6")
    assert facts["supported"] is False and facts["jetpack"] == "4.6.1" and "JetPack 4" in facts["why"]
    assert jetson_facts(ROOTS / "x86-workstation") is None
    assert jetson_facts(ROOTS / "does-not-exist") is None


def test_the_installed_tensorrt_is_set_against_the_jetpacks():
    facts = jetson_facts(ROOTS / "agx-orin-jp6.2", installed_tensorrt="10.3.0.30")
    assert (facts["installed_tensorrt"], facts["installed_line"]) == ("10.3.0.30", "10.3")
    odd = jetson_facts(ROOTS / "agx-orin-jp6.2", installed_tensorrt="7.1.3")
    assert odd["installed_line"] is None


def test_every_release_series_has_a_line():
    for l4t in ("35.1.0", "35.2.1", "35.6.4", "36.3.0", "36.4.0", "36.5.0", "38.4.0", "39.2.0"):
        stack = stack_for(l4t)
        assert stack is not None and recipe_for(stack.tensorrt)[0].line, l4t
    assert stack_for("32.7.1") is None and stack_for("34.1.1") is None


def test_doctor_says_it_on_the_command_line():
    res = run_cli("doctor", "--json", "--root", str(ROOTS / "agx-orin-jp5.0.2"))
    assert res.returncode == 0, res.stderr
    jetson = json.loads(res.stdout)["jetson"]
    assert (jetson["jetpack"], jetson["trt_line"], jetson["python"]) == ("5.0.2", "8.4", "3.8")
    table = run_cli("doctor", "--root", str(ROOTS / "agx-orin-jp5.0.2"), env={**os.environ, "COLUMNS": "200"})
    assert table.returncode == 0 and "JetPack 5.0.2" in table.stdout and "python3-libnvinfer" in table.stdout
    assert "edgeresnet[trt]" not in table.stdout  # no pip hint for TensorRT on a JetPack 5 board
    here = run_cli("doctor", "--json", "--root", str(ROOTS / "x86-workstation"))
    assert here.returncode == 0 and "jetson" not in json.loads(here.stdout)
