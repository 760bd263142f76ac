"""Power, clocks and temperatures around a benchmark run, read the way Jetson users read them.

A Jetson number means little without the board's state: the nvpmodel power mode, whether
`jetson_clocks` locked the clocks, whether a clock fell or a thermal zone passed a trip point
during the run, and what each image cost in energy. This module reads those facts from sysfs
(the files rbonghi/jetson_stats reads; each reader names the jetson_stats file it follows), from
RAPL on x86 and from NVML on discrete GPUs, and writes "n/a" and why wherever a fact cannot be
read: it never makes up a figure.

Standard library only, Python >= 3.8: it runs on the device beside trt_device.py (which inlines
it), where nothing may be installed. pynvml (nvidia-ml-py) is used when it imports.
Units out: W, J, MHz, degrees C, GPU load in percent.
"""

import glob
import os
import re
import shutil
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

NA = "n/a"
HIGH_LOAD_PCT = 50.0  # a clock drop is throttling only while the GPU is at least this busy
CLOCK_DROP = 0.05  # ... and only when the clock fell more than 5% below its starting value
THROTTLE_TRIPS = ("passive", "hot", "critical")  # trip types that cap clocks or stop the chip
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN")  # module input rails: jtop/core/power.py total_power
GPU_NODE_NAMES = ("gv11b", "gp10b", "ga10b", "gb10b")  # jtop/core/gpu.py KNOWN_GPU_DEVICE_NAMES
OFFLINE_C = -40.0  # jtop/core/temperature.py marks an unreadable zone -256 C; none runs this cold


class _Sysfs:
    """Files under `root` read as if `root` were "/" (a fixture tree in tests). A missing or
    unreadable file reads as None: on a device that is a fact to report, never an error."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def path(self, absolute: str) -> str:
        return os.path.join(self.root, absolute.lstrip("/"))

    def shown(self, path: str) -> str:
        """The path as the device names it (the fixture root taken off), for messages."""
        rel = os.path.relpath(path, self.root)
        return path if rel.startswith("..") else "/" + rel.replace(os.sep, "/")

    def glob(self, pattern: str, under: Optional[str] = None) -> List[str]:
        """Sorted matches of `pattern`, an absolute device path or one relative to the folder
        `under`; the root itself is escaped, so a fixture path with [ or * in it stays literal."""
        base = glob.escape(under if under is not None else self.root)
        return sorted(glob.glob(os.path.join(base, pattern.lstrip("/") if under is None else pattern)))

    @staticmethod
    def text(path: str) -> Optional[str]:
        try:
            with open(path, "r", errors="replace") as handle:
                return handle.read().strip("\x00\n\r\t ")
        except OSError:
            return None

    @classmethod
    def number(cls, path: str) -> Optional[int]:
        """An integer file; jtop/core/power.py also meets "32760 ma", so the first word."""
        text = cls.text(path)
        try:
            return int(text.split()[0]) if text else None
        except ValueError:
            return None

    def why(self, path: str) -> str:
        """Why `path` gives no number: absent, permission denied, or the OS's own words."""
        try:
            with open(path, "r") as handle:
                handle.read(64)
            return "{}: not a number".format(self.shown(path))
        except FileNotFoundError:
            return "{}: absent".format(self.shown(path))
        except PermissionError:
            return "{}: permission denied".format(self.shown(path))
        except OSError as exc:
            return "{}: {}".format(self.shown(path), exc.strerror or exc)


def gpu_devfreq(root: str = "/") -> Optional[str]:
    """The integrated GPU's devfreq folder, or None off Jetson.

    Every /sys/class/devfreq entry whose device-tree node (device/of_node/name) or own name is a
    Tegra GPU, as jtop/core/gpu.py find_igpu scans; Thor's GPU is gpu-gpc-0 (jtop/core/thor_gpu.py,
    hw_detect.py), ranked before its other gpu-* domains. Never one hard-coded path: Orin is
    17000000.ga10b on JetPack 5 and 17000000.gpu on JetPack 6, Xavier 17000000.gv11b, Nano
    57000000.gpu."""
    fs = _Sysfs(root)
    ranked = []
    for entry in fs.glob("/sys/class/devfreq/*"):
        base = os.path.basename(entry).lower()
        node = (fs.text(os.path.join(entry, "device", "of_node", "name")) or "").lower()
        if any(name in node or name in base for name in GPU_NODE_NAMES):
            rank = 0
        elif "gpu" in node:
            rank = 1
        elif "gpu" in base:
            rank = 2 if "gpc" in base else 3
        else:
            continue
        ranked.append((rank, base, entry))
    return min(ranked)[2] if ranked else None


# EMC (memory) clock, (cur, min, max) in Hz, in the order jtop/core/memory.py read_emc tries them:
# BPMP debugfs (Xavier, Orin; debugfs is root-only), Thor's bwmgr devfreq, tegra_bwmgr (Nano, TX),
# the old clk tree. nvpmodel's EMC cap lowers max (read_emc, emc_iso_cap).
_EMC_SOURCES = (
    ("/sys/kernel/debug/bpmp/debug/clk/emc/rate", "/sys/kernel/debug/bpmp/debug/clk/emc/min_rate",
     "/sys/kernel/debug/bpmp/debug/clk/emc/max_rate"),
    ("/sys/class/devfreq/bwmgr/cur_freq", "/sys/class/devfreq/bwmgr/min_freq",
     "/sys/class/devfreq/bwmgr/max_freq"),
    ("/sys/kernel/debug/clk/override.emc/clk_rate", "/sys/kernel/debug/tegra_bwmgr/emc_min_rate",
     "/sys/kernel/debug/tegra_bwmgr/emc_max_rate"),
    ("/sys/kernel/clk/emc/clk_rate", "/sys/kernel/clk/emc/clk_min_rate", "/sys/kernel/clk/emc/clk_max_rate"),
)
_EMC_CAP = "/sys/kernel/nvpmodel_emc_cap/emc_iso_cap"


def _mhz(value: Optional[int], per_mhz: float) -> Optional[float]:
    return None if value is None else round(value / per_mhz, 1)


class _Clocks:
    """Where the GPU (devfreq, Hz), EMC (Hz) and CPU (cpufreq, kHz) clocks are, and their
    min/max/cur now. CPU files as jtop/core/cpu.py read_system_cpu reads them."""

    def __init__(self, fs: _Sysfs) -> None:
        self.fs = fs
        self.gpu = gpu_devfreq(fs.root)
        self.emc, self.emc_why = self._find_emc()
        self.cpus = [d for d in fs.glob("/sys/devices/system/cpu/cpu[0-9]*")
                     if os.path.isdir(os.path.join(d, "cpufreq"))]

    def _find_emc(self) -> Tuple[Optional[Tuple[str, str, str]], Optional[str]]:
        reasons = []
        for paths in _EMC_SOURCES:
            full = tuple(self.fs.path(p) for p in paths)
            if self.fs.number(full[0]) is not None:
                return (full[0], full[1], full[2]), None
            reason = self.fs.why(full[0])
            if not reason.endswith(": absent"):
                reasons.append(reason + (" (debugfs is root-only)" if "/debug/" in paths[0] else ""))
        if reasons:
            return None, "; ".join(reasons)
        return None, "no EMC clock under /sys/kernel/debug/bpmp, /sys/class/devfreq/bwmgr, " \
                     "/sys/kernel/debug/tegra_bwmgr or /sys/kernel/clk/emc"

    def gpu_hz(self) -> Optional[int]:
        return self.fs.number(os.path.join(self.gpu, "cur_freq")) if self.gpu else None

    def gpu_load(self) -> Optional[float]:
        """Percent busy: the GPU device's `load`, per mille (jtop/core/gpu.py igpu_read_status)."""
        if not self.gpu:
            return None
        for name in (os.path.join("device", "load"), "load"):
            value = self.fs.number(os.path.join(self.gpu, name))
            if value is not None:
                return value / 10.0
        return None

    def emc_hz(self) -> Optional[int]:
        return self.fs.number(self.emc[0]) if self.emc else None

    def state(self) -> Dict[str, Dict[str, Any]]:
        """{"gpu"|"emc"|"cpu": {"cur_mhz", "min_mhz", "max_mhz", ...}} for the domains readable."""
        out = {}  # type: Dict[str, Dict[str, Any]]
        if self.gpu:
            read = lambda name: self.fs.number(os.path.join(self.gpu, name))  # noqa: E731
            out["gpu"] = {"cur_mhz": _mhz(read("cur_freq"), 1e6), "min_mhz": _mhz(read("min_freq"), 1e6),
                          "max_mhz": _mhz(read("max_freq"), 1e6), "devfreq": os.path.basename(self.gpu),
                          "governor": self.fs.text(os.path.join(self.gpu, "governor"))}
        if self.emc:
            top = self.fs.number(self.emc[2])
            cap = self.fs.number(self.fs.path(_EMC_CAP))
            if top is not None and cap and 0 < cap < top:
                top = cap
            out["emc"] = {"cur_mhz": _mhz(self.fs.number(self.emc[0]), 1e6),
                          "min_mhz": _mhz(self.fs.number(self.emc[1]), 1e6), "max_mhz": _mhz(top, 1e6),
                          "source": self.fs.shown(os.path.dirname(self.emc[0]))}
        cpu = self._cpu_state()
        if cpu:
            out["cpu"] = cpu
        return out

    def _cpu_state(self) -> Optional[Dict[str, Any]]:
        """Online CPUs' scaling min/max/cur (kHz files): the lowest current and minimum, the
        highest maximum, and which CPUs are unlocked (min != max) or below their maximum."""
        rows = []
        for cpu in self.cpus:
            if (self.fs.text(os.path.join(cpu, "online")) or "1") != "1":
                continue
            freq = os.path.join(cpu, "cpufreq")
            values = [self.fs.number(os.path.join(freq, "scaling_{}_freq".format(k))) for k in ("cur", "min", "max")]
            if all(v is not None for v in values):
                rows.append((os.path.basename(cpu), values[0], values[1], values[2]))
        if not rows:
            return None
        return {"cur_mhz": _mhz(min(r[1] for r in rows), 1e3), "cur_top_mhz": _mhz(max(r[1] for r in rows), 1e3),
                "min_mhz": _mhz(min(r[2] for r in rows), 1e3), "max_mhz": _mhz(max(r[3] for r in rows), 1e3),
                "online": len(rows), "unlocked": [r[0] for r in rows if r[2] != r[3]],
                "below_max": [r[0] for r in rows if r[1] != r[3]],
                "governor": self.fs.text(os.path.join(self.cpus[0], "cpufreq", "scaling_governor"))}


_MODEL_RE = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>")
_DEFAULT_RE = re.compile(r"<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>")
_QUERY_RE = re.compile(r"NV Power Mode:\s*(\S+)")  # jtop/core/nvpmodel.py NV_POWER_MODE_RE


def _nvpmodel_conf(fs: _Sysfs) -> Tuple[Dict[int, str], Optional[int]]:
    """Mode names and the boot default from /etc/nvpmodel.conf ("< POWER_MODEL ID=0 NAME=MAXN >",
    "< PM_CONFIG DEFAULT=2 >", the format its own header documents); comment lines skipped."""
    modes, default = {}, None  # type: Dict[int, str], Optional[int]
    for line in (fs.text(fs.path("/etc/nvpmodel.conf")) or "").splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _MODEL_RE.search(line)
        if match:
            modes.setdefault(int(match.group(1)), match.group(2))
        match = _DEFAULT_RE.search(line)
        if match:
            default = int(match.group(1))
    return modes, default


def _nvpmodel_query() -> Optional[Tuple[int, str]]:
    """`nvpmodel -q`: "NV Power Mode: MAXN" then the id on the next line (jtop/core/nvpmodel.py
    nvpmodel_query)."""
    try:
        lines = subprocess.run(["nvpmodel", "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               universal_newlines=True, timeout=5).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    for index, line in enumerate(lines):
        match = _QUERY_RE.search(line)
        if match and index + 1 < len(lines) and lines[index + 1].strip().isdigit():
            return int(lines[index + 1].strip()), match.group(1)
    return None


def _power_mode(fs: _Sysfs, live: bool) -> Dict[str, Any]:
    """The nvpmodel mode: its id from /var/lib/nvpmodel/status ("pmode:0002", what nvpmodel
    writes on every -m), named from /etc/nvpmodel.conf; else `nvpmodel -q` (on the real machine
    only); else the conf's PM_CONFIG default, which nvpmodel applies when it has saved no mode."""
    modes, default = _nvpmodel_conf(fs)
    maxn = sorted((i, n) for i, n in modes.items() if n.upper().startswith("MAXN"))
    out = {"maxn": {"id": maxn[0][0], "name": maxn[0][1]} if maxn else None}  # type: Dict[str, Any]
    status = fs.text(fs.path("/var/lib/nvpmodel/status")) or ""
    match = re.search(r"pmode:\s*(\d+)", status)
    queried = _nvpmodel_query() if not match and live and shutil.which("nvpmodel") else None
    if match:
        mode_id, source = int(match.group(1)), "/var/lib/nvpmodel/status"
    elif queried:
        mode_id, source = queried[0], "nvpmodel -q"
        modes.setdefault(mode_id, queried[1])
    elif default is not None:
        mode_id, source = default, "/etc/nvpmodel.conf PM_CONFIG DEFAULT (no saved mode)"
    else:
        out.update(id=None, name=NA, why="no /var/lib/nvpmodel/status, /etc/nvpmodel.conf or nvpmodel")
        return out
    out.update(id=mode_id, name=modes.get(mode_id, NA), source=source)
    if mode_id not in modes:
        out["why"] = "mode {} is not named in /etc/nvpmodel.conf".format(mode_id)
    return out


def _lock_check(clocks: Dict[str, Dict[str, Any]], mode: Dict[str, Any]) -> Tuple[Any, Optional[str]]:
    """(locked, warning). Locked is what `jetson_clocks` leaves: GPU and CPU min == max == cur,
    EMC cur == max (jtop/core/jetson_clocks.py jetson_clocks_alive: min == max for CPU and GPU,
    cur == max for EMC). One warning names every clock below its maximum or unlocked and a power
    mode other than the board's MAXN. n/a off Jetson (no GPU devfreq)."""
    gpu = clocks.get("gpu")
    if not gpu:
        return NA, None
    if None in (gpu["cur_mhz"], gpu["min_mhz"], gpu["max_mhz"]):
        return NA, "GPU clocks unreadable in {}".format(gpu["devfreq"])
    problems = []
    if gpu["min_mhz"] != gpu["max_mhz"] or gpu["cur_mhz"] != gpu["max_mhz"]:
        unlocked = "" if gpu["min_mhz"] == gpu["max_mhz"] else " (min {}, not locked)".format(gpu["min_mhz"])
        problems.append("GPU at {} of {} MHz{}".format(gpu["cur_mhz"], gpu["max_mhz"], unlocked))
    emc = clocks.get("emc")
    if emc and emc["max_mhz"] is not None and emc["cur_mhz"] != emc["max_mhz"]:
        problems.append("EMC at {} of {} MHz".format(emc["cur_mhz"], emc["max_mhz"]))
    cpu = clocks.get("cpu")
    if cpu and (cpu["unlocked"] or cpu["below_max"]):
        unlocked = " ({} not locked)".format(", ".join(cpu["unlocked"])) if cpu["unlocked"] else ""
        problems.append("CPU at {} of {} MHz{}".format(cpu["cur_mhz"], cpu["max_mhz"], unlocked))
    locked = not problems
    maxn = mode.get("maxn")
    if maxn and mode.get("id") is not None and mode["id"] != maxn["id"]:
        problems.append("power mode {} ({}), not {} ({})".format(mode["name"], mode["id"], maxn["name"], maxn["id"]))
    if not problems:
        return locked, None
    fix = "sudo nvpmodel -m {} && sudo jetson_clocks".format(maxn["id"]) if maxn else "sudo jetson_clocks"
    return locked, "not at maximum clocks: {}; `{}` gives repeatable numbers".format("; ".join(problems), fix)


class _Thermal:
    """Thermal zones and their trip points. jtop/core/temperature.py reads
    /sys/devices/virtual/thermal/thermal_zone*/{type,temp}, which /sys/class/thermal links to,
    and skips PMIC zones (a fixed value on TX and Nano); trip points per the kernel's
    Documentation/driver-api/thermal/sysfs-api.rst (trip_point_N_temp in millidegrees C,
    trip_point_N_type critical/hot/passive/active)."""

    def __init__(self, fs: _Sysfs) -> None:
        self.fs = fs
        self.zones = []  # type: List[Tuple[str, str]]
        self.trips = {}  # type: Dict[str, List[Tuple[str, float]]]
        for zone in fs.glob("/sys/class/thermal/thermal_zone*"):
            name = fs.text(os.path.join(zone, "type")) or os.path.basename(zone)
            if "PMIC" in name:
                continue
            if any(name == seen for seen, _ in self.zones):
                name = "{} ({})".format(name, os.path.basename(zone))
            self.zones.append((name, os.path.join(zone, "temp")))
            trips = []
            for temp_path in fs.glob("trip_point_*_temp", under=zone):
                kind = fs.text(temp_path[:-len("temp")] + "type")
                limit = fs.number(temp_path)
                if kind in THROTTLE_TRIPS and limit is not None:
                    trips.append((kind, limit / 1000.0))
            if trips:
                self.trips[name] = sorted(trips, key=lambda trip: trip[1])

    def read(self) -> Dict[str, float]:
        temps = {}
        for name, path in self.zones:
            value = self.fs.number(path)
            if value is not None and value / 1000.0 > OFFLINE_C:
                temps[name] = value / 1000.0
        return temps


class _Rail:
    """One power reading: `read()` gives watts now (kind "W") or a running energy total in
    joules (kind "J": RAPL's and NVML's counters, unwrapped by _Counter)."""

    def __init__(self, name: str, kind: str, read: Callable[[], Optional[float]]) -> None:
        self.name, self.kind, self.read = name, kind, read


class _Counter:
    """A hardware energy counter made monotonic: each read adds the step since the last read,
    adding the range back when it wrapped (RAPL's energy_uj wraps at max_energy_range_uj).
    A counter that steps back with no known range (a driver reload) adds nothing for that step."""

    def __init__(self, read_raw: Callable[[], Optional[int]], wrap: Optional[int], joules_per_unit: float) -> None:
        self.read_raw, self.wrap, self.scale = read_raw, wrap, joules_per_unit
        self.last = None  # type: Optional[int]
        self.total = 0.0

    def read(self) -> Optional[float]:
        raw = self.read_raw()
        if raw is None:
            return None
        if self.last is not None:
            step = raw - self.last
            if step < 0:
                step = step + self.wrap if self.wrap else 0
            self.total += step * self.scale
        self.last = raw
        return self.total


class _Source:
    """One energy meter (INA3221, NVML or RAPL): its rails, which of them make the total, and
    why it has none."""

    def __init__(self, kind: str, label: str, rails: List[_Rail], total: List[str], why: str) -> None:
        self.kind, self.label, self.rails, self.total, self.why = kind, label, rails, total, why

    def total_name(self) -> str:
        return self.total[0] if len(self.total) == 1 else "sum of " + ", ".join(self.total)


def _ina3221_folders(fs: _Sysfs) -> List[str]:
    """INA3221 hwmon folders (JetPack 5+) and IIO folders (JetPack 4), found under the paths
    jtop/core/power.py find_all_i2c_power_monitor walks (/sys/bus/i2c/devices/*, a device whose
    `name` says ina3221) and under /sys/class/hwmon and the driver's own folder; one folder
    reached by two of these paths (they are links to one device) counts once."""
    seen, found = set(), []
    patterns = ("/sys/class/hwmon/hwmon*", "/sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*",
                "/sys/bus/i2c/drivers/ina3221*/*/iio:device*", "/sys/bus/i2c/devices/*/hwmon/hwmon*",
                "/sys/bus/i2c/devices/*/iio:device*")
    for pattern in patterns:
        for folder in fs.glob(pattern):
            names = [fs.text(os.path.join(d, "name")) or "" for d in
                     (folder, os.path.dirname(folder), os.path.dirname(os.path.dirname(folder)))]
            real = os.path.realpath(folder)
            if real not in seen and any("ina3221" in name for name in names):
                seen.add(real)
                found.append(folder)
    return found


def _watts(volt_mv: str, curr_ma: str, fs: _Sysfs) -> Callable[[], Optional[float]]:
    def read() -> Optional[float]:
        volt, curr = fs.number(volt_mv), fs.number(curr_ma)
        return None if volt is None or curr is None else volt * curr / 1e6
    return read


def _scaled(read_raw: Callable[[], Optional[int]], factor: float) -> Callable[[], Optional[float]]:
    def read() -> Optional[float]:
        value = read_raw()
        return None if value is None else value * factor
    return read


def _ina3221_source(fs: _Sysfs) -> _Source:
    """INA3221 channels as jtop/core/power.py list_all_i2c_ports reads them: hwmon inN_label,
    inN_input (mV), currN_input (mA) (kernel Documentation/hwmon/ina3221.rst), or IIO rail_name_N,
    in_powerN_input (mW) or in_voltageN_input x in_currentN_input. "NC" (unconnected) channels
    and channel 7 (the sum of shunt voltages) are skipped as jtop skips them. The total is
    VDD_IN or POM_5V_IN where the board has it, else the sum (jtop's total_power; AGX Xavier and
    AGX Orin monitor no input rail, so their sum leaves out the carrier board)."""
    rails = []  # type: List[_Rail]
    for folder in _ina3221_folders(fs):
        for label_path in fs.glob("in*_label", under=folder) + fs.glob("rail_name_*", under=folder):
            match = re.search(r"(?:in(\d+)_label|rail_name_(\d+))$", label_path)
            label = fs.text(label_path)
            if not match or not label or label.upper() == "NC" or match.group(1) == "7":
                continue
            if match.group(1):
                read = _watts(os.path.join(folder, "in{}_input".format(match.group(1))),
                              os.path.join(folder, "curr{}_input".format(match.group(1))), fs)
            elif os.path.exists(os.path.join(folder, "in_power{}_input".format(match.group(2)))):
                path = os.path.join(folder, "in_power{}_input".format(match.group(2)))
                read = _scaled(lambda path=path: fs.number(path), 1e-3)
            else:
                read = _watts(os.path.join(folder, "in_voltage{}_input".format(match.group(2))),
                              os.path.join(folder, "in_current{}_input".format(match.group(2))), fs)
            if any(rail.name == label for rail in rails):
                label = "{} ({})".format(label, fs.shown(folder))
            rails.append(_Rail(label, "W", read))
    readable = [rail for rail in rails if rail.read() is not None]
    if not rails:
        why = "none under /sys/class/hwmon or /sys/bus/i2c"
    else:
        why = "" if readable else "INA3221 channels found but none readable"
    total = [r.name for r in readable if r.name in TOTAL_RAILS][:1] or [r.name for r in readable]
    return _Source("ina3221", "INA3221 rails", readable, total, why)


def _rapl_source(fs: _Sysfs) -> _Source:
    """Package energy from RAPL: /sys/class/powercap/intel-rapl:N/energy_uj, a microjoule
    counter that wraps at max_energy_range_uj (kernel Documentation/power/powercap/powercap.rst).
    Top-level zones only (intel-rapl:N:M are parts of package N); the total is the packages'
    sum. Kernels patched for CVE-2020-8694 let only root read energy_uj."""
    if not os.path.isdir(fs.path("/sys/class/powercap")):
        return _Source("rapl", "readable RAPL", [], [], "/sys/class/powercap: absent")
    zones = [z for z in fs.glob("/sys/class/powercap/intel-rapl:*") if re.search(r"intel-rapl:\d+$", z)]
    rails, reasons = [], []
    for zone in zones:
        energy = os.path.join(zone, "energy_uj")
        if fs.number(energy) is None:
            reason = fs.why(energy)
            reasons.append(reason + (" (root-only since the CVE-2020-8694 fix)" if "permission" in reason else ""))
            continue
        counter = _Counter(lambda path=energy: fs.number(path), fs.number(os.path.join(zone, "max_energy_range_uj")), 1e-6)
        rails.append(_Rail(fs.text(os.path.join(zone, "name")) or os.path.basename(zone), "J", counter.read))
    why = "; ".join(reasons) or ("" if rails else "no intel-rapl:N zone under /sys/class/powercap")
    total = [r.name for r in rails if r.name.startswith("package")] or [r.name for r in rails]
    return _Source("rapl", "readable RAPL", rails, total, why)


def _nvml_source(live: bool) -> _Source:
    """GPU energy from NVML through nvidia-ml-py: nvmlDeviceGetTotalEnergyConsumption (mJ since
    the driver loaded, Volta and newer), else nvmlDeviceGetPowerUsage (mW) sampled (NVML API
    reference). On Jetson NVML answers "Not Supported", which is why INA3221 comes first."""
    if not live:
        return _Source("nvml", "NVML", [], [], "not consulted for a fixture root")
    try:
        import pynvml  # optional: nvidia-ml-py
    except ImportError:
        return _Source("nvml", "NVML", [], [], "pynvml not importable: pip install nvidia-ml-py")
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError as exc:
        return _Source("nvml", "NVML", [], [], "nvmlInit: {}".format(exc))

    def guarded(call: Callable[[], Any]) -> Callable[[], Optional[int]]:
        def read() -> Optional[int]:
            try:
                return int(call())
            except pynvml.NVMLError:
                return None
        return read

    rails, reasons = [], []
    for index, handle in enumerate(handles):
        energy = guarded(lambda h=handle: pynvml.nvmlDeviceGetTotalEnergyConsumption(h))
        power = guarded(lambda h=handle: pynvml.nvmlDeviceGetPowerUsage(h))
        if energy() is not None:
            rails.append(_Rail("gpu{}".format(index), "J", _Counter(energy, None, 1e-3).read))
        elif power() is not None:
            rails.append(_Rail("gpu{}".format(index), "W", _scaled(power, 1e-3)))
        else:
            reasons.append("GPU {}: energy and power not supported".format(index))
    kind = rails[0].kind if rails else "W"
    why = "; ".join(reasons) or ("" if rails else "no GPU")
    return _Source("nvml", "NVML", rails, [r.name for r in rails if r.kind == kind], why)


def _rail_stats(series: List[Tuple[float, Optional[float]]], kind: str) -> Dict[str, Any]:
    """avg/max W and energy J of one rail over the run: power rails integrated by the trapezoid
    rule over the sample times; energy counters as last minus first."""
    points = [(t, v) for t, v in series if v is not None]
    if not points or (kind == "J" and len(points) < 2):
        return {"avg_w": NA, "max_w": NA, "energy_j": NA}
    span = points[-1][0] - points[0][0]
    steps = list(zip(points, points[1:]))
    if kind == "W":
        energy = sum((t1 - t0) * (v0 + v1) / 2.0 for (t0, v0), (t1, v1) in steps)
        avg = energy / span if span > 0 else sum(v for _, v in points) / len(points)
        peak = max(v for _, v in points)
    else:
        energy = points[-1][1] - points[0][1]
        rates = [(v1 - v0) / (t1 - t0) for (t0, v0), (t1, v1) in steps if t1 > t0]
        if span <= 0 or not rates:
            return {"avg_w": NA, "max_w": NA, "energy_j": NA}
        avg, peak = energy / span, max(rates)
    return {"avg_w": round(avg, 4), "max_w": round(peak, 4), "energy_j": round(energy, 4)}


def _span(values: List[Optional[float]], per_mhz: float) -> Optional[Dict[str, float]]:
    known = [v for v in values if v is not None]
    return {"min": _mhz(min(known), per_mhz), "max": _mhz(max(known), per_mhz)} if known else None


def _throttle(samples: List[Dict[str, Any]], trips: Dict[str, List[Tuple[str, float]]]) -> Tuple[Any, Optional[str]]:
    """(throttled, why): a GPU or EMC clock fell more than CLOCK_DROP below its value at the
    start while the GPU was busy (or its load unreadable), or a zone reached a passive, hot or
    critical trip point. n/a when neither clocks nor trip points are readable."""
    events = []
    for key, label in (("gpu_hz", "GPU"), ("emc_hz", "EMC")):
        start = next((s[key] for s in samples if s[key] is not None), None)
        for sample in samples:
            load, value = sample["gpu_load"], sample[key]
            if start and value is not None and value < start * (1 - CLOCK_DROP) and (load is None or load >= HIGH_LOAD_PCT):
                events.append("{} clock fell to {} MHz from {} MHz at the start ({})".format(
                    label, _mhz(value, 1e6), _mhz(start, 1e6), "GPU load unreadable" if load is None else
                    "GPU load {:.0f}%".format(load)))
                break
    for zone, zone_trips in trips.items():
        peak = max((s["temps"][zone] for s in samples if zone in s["temps"]), default=None)
        crossed = [trip for trip in zone_trips if peak is not None and peak >= trip[1]]
        if crossed:
            kind, limit = crossed[-1]
            events.append("{} reached {:.1f} C, past its {} trip point at {:.1f} C".format(zone, peak, kind, limit))
    readable = any(s["gpu_hz"] is not None or s["emc_hz"] is not None for s in samples) or bool(trips)
    if events:
        return True, "; ".join(events)
    return (False, None) if readable else (NA, "no GPU/EMC clock or thermal trip point readable")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Telemetry:
    """Power mode, clocks, temperatures and energy around one benchmark run.

    `snapshot()` reads the state once (before and after a run); `start()`/`stop()` around the
    timed run sample GPU load and clock, EMC, temperatures and power rails in a daemon thread
    every `interval` seconds and summarise them; `row_columns()` turns the summary into the
    columns every bench row carries. `root` points every read at a fixture tree (tests); only
    with root "/" does it run `nvpmodel -q` or ask NVML, which describe the real machine.

    The energy figure comes from the first meter that reads, INA3221 (the module's own rails),
    then NVML (the GPU board), then RAPL (the CPU packages); the others' rails still appear in
    the summary's "rails", never added in, since each meter covers a different part of the box."""

    def __init__(self, root: str = "/", interval: float = 0.1) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0 seconds, got {!r}".format(interval))
        self.fs = _Sysfs(root)
        self.interval = interval
        self._live = self.fs.root == os.path.abspath(os.sep)
        self._clocks = _Clocks(self.fs)
        self._thermal = _Thermal(self.fs)
        self._sources = [_ina3221_source(self.fs), _nvml_source(self._live), _rapl_source(self.fs)]
        self._primary = next((s for s in self._sources if s.rails), None)
        self._samples = []  # type: List[Dict[str, Any]]
        self._before = {}  # type: Dict[str, Any]
        self._halt = threading.Event()
        self._thread = None  # type: Optional[threading.Thread]

    def energy_na_reason(self) -> Optional[str]:
        """Why no energy figure can be given (None when one can): each meter and what it lacks."""
        if self._primary:
            return None
        return "; ".join("no {} ({})".format(s.label, s.why) for s in self._sources)

    def snapshot(self) -> Dict[str, Any]:
        """Power mode, GPU/EMC/CPU clocks, whether they are locked (with one warning when not at
        maximum), GPU load, temperatures and instantaneous rail watts, plus why for what is n/a."""
        clocks = self._clocks.state()
        mode = _power_mode(self.fs, self._live)
        locked, warning = _lock_check(clocks, mode)
        load = self._clocks.gpu_load()
        rails = {}
        for source in self._sources:
            for rail in source.rails:
                watts = rail.read() if rail.kind == "W" else None
                if watts is not None:
                    rails[rail.name] = round(watts, 3)
        why = {"gpu": None if self._clocks.gpu else "no GPU devfreq under /sys/class/devfreq",
               "emc": self._clocks.emc_why, "power_mode": mode.get("why"), "energy": self.energy_na_reason(),
               "cpu": None if "cpu" in clocks else "no cpufreq under /sys/devices/system/cpu"}
        return {"time": time.time(), "power_mode": mode, "clocks": clocks, "clocks_locked": locked,
                "clocks_warning": warning, "gpu_load_pct": NA if load is None else load,
                "temps_c": self._thermal.read(), "rails_w": rails, "why": {k: v for k, v in why.items() if v}}

    def _sample(self) -> Dict[str, Any]:
        rails = {}
        for source in self._sources:
            for rail in source.rails:
                rails[rail.name] = rail.read()
        return {"t": time.perf_counter(), "gpu_load": self._clocks.gpu_load(), "gpu_hz": self._clocks.gpu_hz(),
                "emc_hz": self._clocks.emc_hz(), "temps": self._thermal.read(), "rails": rails}

    def _run(self) -> None:
        deadline = time.perf_counter()
        while True:
            deadline = max(deadline + self.interval, time.perf_counter())
            if self._halt.wait(max(0.0, deadline - time.perf_counter())):
                return
            self._samples.append(self._sample())

    def start(self) -> None:
        """Snapshot the state, take the first sample, then sample every `interval` in a daemon
        thread (it never keeps the process alive) until stop()."""
        if self._thread is not None:
            raise RuntimeError("Telemetry.start() called twice without stop()")
        self._before = self.snapshot()
        self._samples = [self._sample()]
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, name="trt-telemetry", daemon=True)
        self._thread.start()

    def stop(self) -> Dict[str, Any]:
        """Stop sampling, take the last sample and summarise the run."""
        if self._thread is None:
            raise RuntimeError("Telemetry.stop() called before start()")
        self._halt.set()
        self._thread.join()
        self._thread = None
        self._samples.append(self._sample())
        return self._summary(self._samples, self._before, self.snapshot())

    def _summary(self, samples: List[Dict[str, Any]], before: Dict[str, Any], after: Dict[str, Any]) -> Dict[str, Any]:
        rails = {}
        for source in self._sources:
            for rail in source.rails:
                stats = _rail_stats([(s["t"], s["rails"].get(rail.name)) for s in samples], rail.kind)
                rails[rail.name] = dict(stats, source=source.kind)
        out = {"samples": len(samples), "seconds": round(samples[-1]["t"] - samples[0]["t"], 4), "rails": rails,
               "energy_source": NA, "energy_na_reason": self.energy_na_reason(), "total_rail": NA,
               "avg_w": NA, "max_w": NA, "energy_j": NA}  # type: Dict[str, Any]
        if self._primary:
            names, kind = self._primary.total, self._primary.rails[0].kind
            series = [(s["t"], None if any(s["rails"].get(n) is None for n in names) else
                       sum(s["rails"][n] for n in names)) for s in samples]
            out.update(_rail_stats(series, kind), energy_source=self._primary.kind, total_rail=self._primary.total_name())
            if not _is_number(out["avg_w"]):
                out["energy_na_reason"] = "{}: fewer than two readings in {} s".format(self._primary.label, out["seconds"])
        loads = [s["gpu_load"] for s in samples if s["gpu_load"] is not None]
        peaks = {}  # type: Dict[str, float]
        for sample in samples:
            for zone, temp in sample["temps"].items():
                peaks[zone] = max(temp, peaks.get(zone, temp))
        clocks = {"gpu": _span([s["gpu_hz"] for s in samples], 1e6), "emc": _span([s["emc_hz"] for s in samples], 1e6)}
        throttled, why = _throttle(samples, self._thermal.trips)
        out.update(gpu_load_pct={"avg": round(sum(loads) / len(loads), 1), "max": max(loads)} if loads else NA,
                   clocks_mhz={k: v for k, v in clocks.items() if v}, temps_max_c=peaks,
                   temp_max_c=max(peaks.values()) if peaks else NA, throttled=throttled, throttled_why=why,
                   before=before, after=after)
        return out

    def row_columns(self, summary: Dict[str, Any], images: int, seconds: float) -> Dict[str, Any]:
        """The columns every bench row carries. Energy is the run's average watts (over the
        sampled window) times the bench's own timed `seconds`, so mJ/image and images/J describe
        exactly the images it timed; "n/a" with energy_na_reason wherever no meter reads."""
        before, after = summary.get("before") or {}, summary.get("after") or {}
        mode = before.get("power_mode") or {}
        locks = [before.get("clocks_locked", NA), after.get("clocks_locked", NA)]
        avg_w, reason = summary.get("avg_w", NA), summary.get("energy_na_reason")
        energy = avg_w * seconds if _is_number(avg_w) and seconds > 0 and images > 0 else None
        if _is_number(avg_w) and energy is None:
            reason = "no images or no time measured ({} images in {} s)".format(images, seconds)
        return {
            "power_mode": {"id": mode["id"], "name": mode["name"]} if mode.get("id") is not None else NA,
            "clocks_locked": NA if NA in locks else all(locks),
            "clocks": self._clock_columns(summary, before, after),
            "avg_w": round(avg_w, 3) if _is_number(avg_w) else NA,
            "mj_per_image": round(energy * 1e3 / images, 4) if energy else NA,
            "images_per_joule": round(images / energy, 4) if energy else NA,
            "throttled": summary.get("throttled", NA),
            "energy_source": summary.get("energy_source", NA) if _is_number(avg_w) else NA,
            "energy_na_reason": reason,
            "clocks_warning": before.get("clocks_warning") or after.get("clocks_warning"),
            "throttled_why": summary.get("throttled_why"),
        }

    @staticmethod
    def _clock_columns(summary: Dict[str, Any], before: Dict[str, Any], after: Dict[str, Any]) -> Any:
        """{"gpu_mhz"|"emc_mhz"|"cpu_mhz": {"min", "max", "cap"}}: GPU and EMC over the sampled
        run, CPU (not sampled) from the two snapshots; cap is the maximum the mode allows."""
        out = {}
        for domain, run in (summary.get("clocks_mhz") or {}).items():
            cap = (before.get("clocks") or {}).get(domain, {}).get("max_mhz")
            out[domain + "_mhz"] = {"min": run["min"], "max": run["max"], "cap": cap}
        cpus = [s["clocks"]["cpu"] for s in (before, after) if "cpu" in (s.get("clocks") or {})]
        if cpus:
            out["cpu_mhz"] = {"min": min(c["cur_mhz"] for c in cpus), "max": max(c["cur_top_mhz"] for c in cpus),
                              "cap": cpus[0]["max_mhz"]}
        return out or NA
