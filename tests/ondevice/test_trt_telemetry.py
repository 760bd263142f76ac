"""Jetson/x86 power, clock and thermal telemetry (edgeresnet/ondevice/trt_device.py).

The Jetsons are fixture sysfs trees (tests/data/jetson/<board>, README there), copied to a tmp
folder; while the sampler runs, a second thread writes new power, clock, load and temperature
values into the copy, so the sampler reads values that really change. Nothing here ran on a
Jetson: the layout and units follow jetson_stats and the kernel documentation, not a device.
This machine's own /sys is read as is: it has no Jetson rails, so the energy columns must be
"n/a" with the reason (or a real number where RAPL or NVML reads)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgeresnet.ondevice import trt_device as T

from .test_trt_device import py38_numpy117  # noqa: F401 - the Python 3.8 + numpy 1.17 venv fixture

MODULE = Path(T.__file__)
FIXTURES = Path(__file__).resolve().parents[1] / "data" / "jetson"
CONTRACT = {"power_mode", "clocks_locked", "clocks", "avg_w", "mj_per_image", "images_per_joule", "throttled",
            "energy_source", "energy_na_reason"}
ORIN_HWMON = "sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon1"
ORIN_GPU = "sys/class/devfreq/17000000.gpu"
XAVIER_GPU = "sys/class/devfreq/17000000.gv11b"


@pytest.fixture
def board(tmp_path):
    """A writable copy of one board's fixture tree (links kept, as sysfs has them)."""
    def copy(name: str) -> Path:
        root = tmp_path / name
        shutil.copytree(FIXTURES / name, root, symlinks=True)
        return root
    return copy


def write(root: Path, rel: str, value: int) -> None:
    """Replace one sysfs value at once (a reader never sees a half-written file)."""
    path = root / rel
    tmp = path.parent / (".tmp-" + path.name)
    tmp.write_text("{}\n".format(value))
    os.replace(tmp, path)


class Writer(threading.Thread):
    """Writes each step's values into the tree and logs when each took effect (perf_counter,
    the sampler's clock); holds each step `hold` seconds and until the sampler has read it at
    least three times, so a machine that stalls the sampler thread cannot skip a step."""

    def __init__(self, root: Path, steps: list, hold: float, tel: T.Telemetry) -> None:
        super().__init__(daemon=True)
        self.root, self.steps, self.hold, self.tel, self.log = root, steps, hold, tel, []

    def run(self) -> None:
        for values in self.steps:
            for rel, value in values.items():
                write(self.root, rel, value)
            self.log.append(time.perf_counter())
            taken = len(self.tel._samples)
            time.sleep(self.hold)
            while len(self.tel._samples) < taken + 3:
                time.sleep(0.005)


def sampled(root: Path, steps: list, hold: float = 0.25, interval: float = 0.02):
    """start(), the writer's steps, stop(): (telemetry, summary, writer, start time, stop time)."""
    tel = T.Telemetry(str(root), interval=interval)
    began = time.perf_counter()
    tel.start()
    writer = Writer(root, steps, hold, tel)
    writer.start()
    writer.join()
    summary = tel.stop()
    return tel, summary, writer, began, time.perf_counter()


def time_weighted(levels: list, switched: list, initial: float, began: float, ended: float) -> float:
    """The average of a piecewise-constant signal: `initial` until the first switch time, then
    each level until the next."""
    edges = [began, *switched, ended]
    values = [initial, *levels]
    return sum(v * (b - a) for v, a, b in zip(values, edges, edges[1:])) / (ended - began)


# ---- where things are ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,devfreq", [("orin", "17000000.gpu"), ("xavier", "17000000.gv11b"),
                                          ("nano", "57000000.gpu")])
def test_the_gpu_is_found_by_scanning_devfreq(name, devfreq):
    assert Path(T.gpu_devfreq(str(FIXTURES / name))).name == devfreq


def test_the_scan_finds_jetpack5_orin_and_thor_and_nothing_elsewhere(tmp_path):
    jp5, thor = tmp_path / "jp5", tmp_path / "thor"
    (jp5 / "sys/class/devfreq/17000000.ga10b/device/of_node").mkdir(parents=True)
    (jp5 / "sys/class/devfreq/17000000.ga10b/device/of_node/name").write_text("ga10b\x00")
    (jp5 / "sys/class/devfreq/15340000.vic/device/of_node").mkdir(parents=True)
    (jp5 / "sys/class/devfreq/15340000.vic/device/of_node/name").write_text("vic")
    for name in ("bwmgr", "gpu-nvd-0", "gpu-gpc-0"):
        (thor / "sys/class/devfreq" / name).mkdir(parents=True)
    assert Path(T.gpu_devfreq(str(jp5))).name == "17000000.ga10b"
    assert Path(T.gpu_devfreq(str(thor))).name == "gpu-gpc-0"
    assert T.gpu_devfreq(str(tmp_path / "empty")) is None


def test_machine_reads_the_gpu_clock_through_the_scan():
    from edgeresnet.host import machine

    for name, devfreq, hz in (("orin", "17000000.gpu", 1020000000), ("xavier", "17000000.gv11b", 318750000),
                              ("nano", "57000000.gpu", 921600000)):
        info = machine.jetson(str(FIXTURES / name))
        assert (info["gpu_devfreq"], info["gpu_freq_hz"]) == (devfreq, hz)
        assert info["l4t"].startswith("# R3")
    assert "17000000.ga10b" not in Path(machine.__file__).read_text()


@pytest.mark.parametrize("name,mode,source", [
    ("orin", {"id": 2, "name": "MAXN_SUPER"}, "/var/lib/nvpmodel/status"),
    ("xavier", {"id": 2, "name": "MODE_15W"}, "/var/lib/nvpmodel/status"),
    ("nano", {"id": 0, "name": "MAXN"}, "/etc/nvpmodel.conf PM_CONFIG DEFAULT (no saved mode)")])
def test_power_mode_id_and_name(name, mode, source):
    snap = T.Telemetry(str(FIXTURES / name)).snapshot()
    assert {k: snap["power_mode"][k] for k in ("id", "name")} == mode
    assert snap["power_mode"]["source"] == source


def test_a_mode_missing_from_the_conf_says_so(board):
    root = board("orin")
    (root / "var/lib/nvpmodel/status").write_text("pmode:0007 fmode:quiet\n")
    mode = T.Telemetry(str(root)).snapshot()["power_mode"]
    assert (mode["id"], mode["name"]) == (7, "n/a")
    assert "not named in /etc/nvpmodel.conf" in mode["why"]


# ---- locked or not ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["orin", "nano"])
def test_jetson_clocks_state_reads_locked(name):
    snap = T.Telemetry(str(FIXTURES / name)).snapshot()
    assert snap["clocks_locked"] is True and snap["clocks_warning"] is None


def test_dvfs_clocks_and_a_low_mode_give_one_warning():
    snap = T.Telemetry(str(FIXTURES / "xavier")).snapshot()
    warning = snap["clocks_warning"]
    assert snap["clocks_locked"] is False
    assert "GPU at 318.8 of 670.0 MHz (min 114.8, not locked)" in warning
    assert "EMC at 1065.6 of 1331.2 MHz" in warning  # max capped by nvpmodel's emc_iso_cap
    assert "cpu0, cpu1, cpu2, cpu3 not locked" in warning  # cpu4-7 are offline in MODE_15W
    assert "power mode MODE_15W (2), not MAXN (0)" in warning
    assert "sudo nvpmodel -m 0 && sudo jetson_clocks" in warning


def test_a_gpu_clock_below_its_max_is_not_locked(board):
    root = board("orin")
    write(root, ORIN_GPU + "/min_freq", 306000000)
    write(root, ORIN_GPU + "/cur_freq", 306000000)
    snap = T.Telemetry(str(root)).snapshot()
    assert snap["clocks_locked"] is False
    assert snap["clocks_warning"].startswith("not at maximum clocks: GPU at 306.0 of 1020.0 MHz (min 306.0, not locked)")


# ---- rails --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,rails,total", [
    ("orin", {"VDD_IN": 6.01, "VDD_CPU_GPU_CV": 2.0, "VDD_SOC": 1.5}, "VDD_IN"),
    ("xavier", {"GPU": 1.831, "CPU": 0.915, "SOC": 1.526, "CV": 0.153, "VDDRQ": 0.458, "SYS5V": 1.994},
     "sum of GPU, CPU, SOC, CV, VDDRQ, SYS5V"),
    ("nano", {"POM_5V_IN": 2.5, "POM_5V_GPU": 0.08, "POM_5V_CPU": 0.4}, "POM_5V_IN")])
def test_ina3221_rails_once_each_with_their_total(name, rails, total):
    """Orin's hwmon folder is reached through three links and counted once; channel 7 (sum of
    shunt voltages) and the fan's hwmon are not rails; Nano's IIO folder reads in_power."""
    tel = T.Telemetry(str(FIXTURES / name))
    assert tel.snapshot()["rails_w"] == rails
    tel.start()
    summary = tel.stop()
    assert (summary["total_rail"], summary["energy_source"]) == (total, "ina3221")


# ---- a run with values that change ------------------------------------------------------------

RUNS = {  # board: (file written, watts per unit, levels, GPU clock/load steps)
    "orin": (ORIN_HWMON + "/curr1_input", 5.008e-3, [2000, 3000, 1500, 2400], {}),
    "xavier": ("sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon2/curr1_input", 19.072e-3, [500, 900, 300, 700],
               {XAVIER_GPU + "/cur_freq": 670000000, XAVIER_GPU + "/device/load": 990}),
    "nano": ("sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power0_input", 1e-3, [5000, 7000, 3000, 6000], {}),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_average_watts_energy_and_mj_per_image_follow_the_rails(board, name):
    rel, scale, levels, gpu = RUNS[name]
    root = board(name)
    before = T.Telemetry(str(root)).snapshot()["rails_w"]
    written = "GPU" if name == "xavier" else next(iter(before))
    others = sum(w for rail, w in before.items() if rail != written) if name == "xavier" else 0.0
    initial = int((root / rel).read_text())
    steps = [dict({rel: level}, **(gpu if i == 1 else {})) for i, level in enumerate(levels)]
    tel, summary, writer, began, ended = sampled(root, steps)

    expected = others + scale * time_weighted(levels, writer.log, initial, began, ended)
    assert summary["samples"] >= 20
    assert summary["avg_w"] == pytest.approx(expected, rel=0.1)
    assert summary["max_w"] == pytest.approx(others + scale * max(levels), rel=0.01)  # the sampler saw the peak
    assert summary["energy_j"] == pytest.approx(summary["avg_w"] * summary["seconds"], rel=0.01)
    images, seconds = 400, 0.75
    row = tel.row_columns(summary, images=images, seconds=seconds)
    assert CONTRACT <= set(row)
    assert row["avg_w"] == pytest.approx(summary["avg_w"], abs=1e-3)
    assert row["mj_per_image"] == pytest.approx(summary["avg_w"] * seconds * 1e3 / images, rel=1e-3)
    assert row["images_per_joule"] == pytest.approx(images / (summary["avg_w"] * seconds), rel=1e-3)
    assert (row["energy_source"], row["energy_na_reason"], row["throttled"]) == ("ina3221", None, False)
    if gpu:  # DVFS raised the clock as the load rose: a range, and no throttling
        assert row["clocks"]["gpu_mhz"] == {"min": 318.8, "max": 670.0, "cap": 670.0}
        assert summary["gpu_load_pct"]["max"] == 99.0


# ---- throttling ---------------------------------------------------------------------------------

def test_a_clock_that_falls_under_load_is_throttling(board):
    root = board("orin")
    write(root, "sys/devices/platform/bus@0/17000000.gpu/load", 990)
    _, summary, _, _, _ = sampled(root, [{}, {ORIN_GPU + "/cur_freq": 612000000}], hold=0.15)
    assert summary["throttled"] is True
    assert "GPU clock fell to 612.0 MHz from 1020.0 MHz at the start (GPU load 99%)" in summary["throttled_why"]
    assert summary["clocks_mhz"]["gpu"] == {"min": 612.0, "max": 1020.0}


def test_a_clock_that_falls_while_idle_is_dvfs_not_throttling(board):
    root = board("xavier")
    write(root, XAVIER_GPU + "/device/load", 30)
    _, summary, _, _, _ = sampled(root, [{}, {XAVIER_GPU + "/cur_freq": 114750000}], hold=0.15)
    assert (summary["throttled"], summary["throttled_why"]) == (False, None)


def test_a_zone_past_its_passive_trip_point_is_throttling(board):
    root = board("xavier")
    zone = "sys/class/thermal/thermal_zone1/temp"  # CPU-therm: passive 95.5 C, critical 96.5 C
    tel, summary, _, _, _ = sampled(root, [{zone: 90000}, {zone: 96000}, {zone: 93000}])
    assert summary["throttled"] is True
    assert summary["throttled_why"] == "CPU-therm reached 96.0 C, past its passive trip point at 95.5 C"
    assert summary["temp_max_c"] == 96.0
    assert tel.row_columns(summary, 10, 0.3)["throttled"] is True


def test_active_trip_points_only_start_fans(board):
    root = board("xavier")
    zone = "sys/class/thermal/thermal_zone5/temp"  # thermal-fan-est: active trips at 51 and 61 C
    _, summary, _, _, _ = sampled(root, [{zone: 62000}], hold=0.1)
    assert (summary["throttled"], summary["temps_max_c"]["thermal-fan-est"]) == (False, 62.0)


def test_pmic_zones_are_left_out_as_jtop_does():
    assert "PMIC-Die" not in T.Telemetry(str(FIXTURES / "nano")).snapshot()["temps_c"]


# ---- x86: RAPL --------------------------------------------------------------------------------

def rapl_tree(root: Path, zones: dict, wrap: int) -> None:
    (root / "sys/class/powercap/intel-rapl").mkdir(parents=True)  # the control type: no counter
    for zone, (name, start) in zones.items():
        folder = root / "sys/class/powercap" / zone
        folder.mkdir()
        (folder / "name").write_text(name + "\n")
        (folder / "max_energy_range_uj").write_text("{}\n".format(wrap))
        (folder / "energy_uj").write_text("{}\n".format(start))


def test_rapl_package_energy_across_a_counter_wrap(tmp_path):
    """package-0 at 20 W wraps its 20 J counter (a real one holds about 262 kJ) during the run;
    package-1 at 10 W; the core subzone (intel-rapl:0:0) is part of package 0, not added again."""
    wrap = 20_000_000
    rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 18_000_000), "intel-rapl:1": ("package-1", 0),
                         "intel-rapl:0:0": ("core", 0)}, wrap)
    stop, t0 = threading.Event(), time.perf_counter()

    def counters() -> None:
        while not stop.wait(0.002):
            elapsed = time.perf_counter() - t0
            write(tmp_path, "sys/class/powercap/intel-rapl:0/energy_uj", int(18_000_000 + 20e6 * elapsed) % wrap)
            write(tmp_path, "sys/class/powercap/intel-rapl:1/energy_uj", int(10e6 * elapsed) % wrap)
            write(tmp_path, "sys/class/powercap/intel-rapl:0:0/energy_uj", int(15e6 * elapsed) % wrap)

    thread = threading.Thread(target=counters, daemon=True)
    thread.start()
    time.sleep(0.02)
    tel = T.Telemetry(str(tmp_path), interval=0.02)
    tel.start()
    time.sleep(0.6)
    summary = tel.stop()
    stop.set()
    thread.join()
    assert int((tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").read_text()) < 18_000_000  # it wrapped
    assert set(summary["rails"]) == {"package-0", "package-1"}
    assert (summary["energy_source"], summary["total_rail"]) == ("rapl", "sum of package-0, package-1")
    assert summary["rails"]["package-0"]["avg_w"] == pytest.approx(20.0, rel=0.1)
    assert summary["avg_w"] == pytest.approx(30.0, rel=0.1)
    row = tel.row_columns(summary, images=300, seconds=0.5)
    assert row["mj_per_image"] == pytest.approx(summary["avg_w"] * 0.5 * 1e3 / 300, rel=1e-3)
    assert (row["power_mode"], row["clocks_locked"], row["energy_source"]) == ("n/a", "n/a", "rapl")


def test_a_counter_that_wraps_keeps_counting_and_one_that_resets_adds_nothing():
    """RAPL's energy_uj restarts from 0 past max_energy_range_uj: the range is added back. A
    counter with no known range that steps back (NVML's after a driver reload) adds nothing."""
    raws = iter([4_900_000, 4_990_000, 30_000, 100_000, None, 200_000])
    wrapping = T._Counter(lambda: next(raws), 5_000_000, 1e-6)
    assert [wrapping.read() for _ in range(6)] == pytest.approx([0.0, 0.09, 0.13, 0.2, None, 0.3])
    raws = iter([5_000, 6_000, 1_000, 1_500])
    resetting = T._Counter(lambda: next(raws), None, 1e-3)
    assert [resetting.read() for _ in range(4)] == pytest.approx([0.0, 1.0, 1.0, 1.5])


def test_rapl_without_a_counter_says_which_file(tmp_path):
    rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0)}, 1000)
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").unlink()
    tel = T.Telemetry(str(tmp_path))
    reason = tel.energy_na_reason()
    assert "no readable RAPL (/sys/class/powercap/intel-rapl:0/energy_uj: absent)" in reason
    tel.start()
    row = tel.row_columns(tel.stop(), images=10, seconds=1.0)
    assert (row["avg_w"], row["mj_per_image"], row["images_per_joule"], row["energy_na_reason"]) == (
        "n/a", "n/a", "n/a", reason)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_rapl_readable_by_root_only_says_so(tmp_path):
    rapl_tree(tmp_path, {"intel-rapl:0": ("package-0", 0)}, 1000)
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").chmod(0)
    assert "energy_uj: permission denied (root-only since the CVE-2020-8694 fix)" in T.Telemetry(
        str(tmp_path)).energy_na_reason()


# ---- this machine -------------------------------------------------------------------------------

def readable_rapl() -> bool:
    for path in Path("/sys/class/powercap").glob("intel-rapl:*/energy_uj"):
        try:
            int(path.read_text())
            return True
        except (OSError, ValueError):
            continue
    return False


def test_this_machine_gives_a_real_number_or_says_why_not():
    tel = T.Telemetry()
    tel.start()
    time.sleep(0.25)
    summary = tel.stop()
    row = tel.row_columns(summary, images=100, seconds=0.25)
    assert CONTRACT <= set(row)
    if row["energy_source"] == "n/a":
        assert not readable_rapl()
        assert (row["avg_w"], row["mj_per_image"], row["images_per_joule"]) == ("n/a", "n/a", "n/a")
        reason = row["energy_na_reason"]
        assert "no INA3221 rails" in reason and "no readable RAPL" in reason and "no NVML" in reason
        if not Path("/sys/class/powercap").exists():
            assert "/sys/class/powercap: absent" in reason
    else:  # a meter reads here: a measured figure, never a made-up one
        assert row["energy_source"] in ("rapl", "nvml") and row["avg_w"] > 0 and row["energy_na_reason"] is None
    if T.gpu_devfreq() is None:
        assert (row["power_mode"], row["clocks_locked"]) == ("n/a", "n/a")


# ---- what the device can run ------------------------------------------------------------------

@pytest.mark.slow
def test_the_telemetry_runs_on_python_3_8_with_numpy_1_17(py38_numpy117):
    """What the device does: the device file alone (no edgeresnet; numpy 1.17, as Ubuntu 20.04's
    python3-numpy) on Python 3.8, sampling the Orin fixture. Its imports and its 3.8 syntax are
    checked for the whole file in tests/ondevice/test_trt_device.py."""
    python = str(py38_numpy117)
    script = (
        "import importlib.util, json, sys, time\n"
        "spec = importlib.util.spec_from_file_location('trt_device', sys.argv[1])\n"
        "T = importlib.util.module_from_spec(spec); spec.loader.exec_module(T)\n"
        "assert not [m for m in sys.modules if m.startswith('edgeresnet')]\n"
        "tel = T.Telemetry(sys.argv[2], interval=0.02); tel.start(); time.sleep(0.1)\n"
        "print(json.dumps(tel.row_columns(tel.stop(), 100, 0.1)))\n")
    res = subprocess.run([python, "-I", "-c", script, str(MODULE), str(FIXTURES / "orin")], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout)
    assert (row["avg_w"], row["power_mode"], row["clocks_locked"]) == (6.01, {"id": 2, "name": "MAXN_SUPER"}, True)

