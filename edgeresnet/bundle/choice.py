"""Which artifact of a bundle runs here: the fastest one that passed `verify` on this device.

`edgeresnet verify` leaves one entry per device in verify.json: every engine's verdict on the
golden set and a short timing. ``predict`` and ``runtime.load`` read this device's entry:

- nothing asked: the fastest artifact that passed (the entry's ``chosen``), then the other
  passed ones, fastest first, in case a runtime has gone missing since;
- only ``target`` or only ``precision`` asked: the fastest passed artifact that matches;
- both asked: that artifact, even if it failed (the user's word wins), with a warning;
- no entry for this device yet: the export's default (int8, the registry's engine order), and a
  note saying so once per process.

An artifact that failed verification is never chosen unless asked for by name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, PortabilityWarning

DEFAULT_PRECISION = "int8"
_noted: set[str] = set()


@dataclass(frozen=True)
class Choice:
    """Artifacts to try in order, as (target or None for any, precision), and why."""

    order: tuple[tuple[str | None, str], ...]
    why: str  # "verified" | "asked" | "unverified"
    note: str | None = None
    failed: dict[tuple[str, str], str] = field(default_factory=dict)  # (target, precision) -> reason


def _matches(engine: dict, target: str | None, precision: str | None) -> bool:
    return (target is None or engine["target"] == target) and (precision is None or engine["precision"] == precision)


def _latency(engine: dict) -> float:
    p50 = (engine.get("latency_ms") or {}).get("p50")
    return p50 if isinstance(p50, (int, float)) else float("inf")


def _failed(entry: dict) -> dict[tuple[str, str], str]:
    return {(e["target"], e["precision"]): e.get("reason") or "failed"
            for e in entry["engines"] if e["status"] == "failed"}


def _verified(root: Path, entry: dict, target: str | None, precision: str | None) -> Choice:
    failed = _failed(entry)
    passed = sorted((e for e in entry["engines"] if e["status"] == "passed" and _matches(e, target, precision)),
                    key=_latency)
    chosen = entry.get("chosen")
    if chosen and any((e["target"], e["precision"]) == (chosen["target"], chosen["precision"]) for e in passed):
        passed.sort(key=lambda e: (e["target"], e["precision"]) != (chosen["target"], chosen["precision"]))
    if passed:
        return Choice(tuple((e["target"], e["precision"]) for e in passed), "verified", failed=failed)
    asked = " ".join(x for x in (target, precision) if x) or "any engine"
    bad = [f"{t} {p} ({why})" for (t, p), why in failed.items() if _matches({"target": t, "precision": p}, target, precision)]
    if bad:
        raise InputError(f"{root}: {asked} failed verification on this device: {'; '.join(bad)}",
                         hint="pass --target and --precision to run it anyway, or re-export and `edgeresnet verify` again")
    raise InputError(f"{root}: `edgeresnet verify` found no runnable {asked} on this device",
                     hint="install the engine's runtime and rerun `edgeresnet verify`, or pass --target/--precision")


def choose(root: Path, target: str | None, precision: str | None) -> Choice:
    """The artifacts ``load`` tries, in order, for this device."""
    from .verify import device_entry, local_device_key

    entry = device_entry(root, local_device_key())
    if target is not None and precision is not None:
        failed = _failed(entry) if entry else {}
        if (target, precision) in failed:
            warnings.warn(f"{target} {precision} failed verification on this device ({failed[(target, precision)]}); "
                          "running it because it was asked for by name", PortabilityWarning, stacklevel=3)
        return Choice(((target, precision),), "asked", failed=failed)
    if entry is not None:
        return _verified(root, entry, target, precision)
    note = (f"{root} has not been verified on this device: using the export's default "
            f"({precision or DEFAULT_PRECISION}); run `edgeresnet verify {root}` to check its engines here "
            "and use the fastest that passes")
    return Choice(((target, precision or DEFAULT_PRECISION),), "unverified", note=note)


def say_once(choice: Choice, root: Path) -> None:
    """The 'not verified here' note, once per bundle and process (stderr, via warnings)."""
    key = str(Path(root).resolve())
    if choice.note and key not in _noted:
        _noted.add(key)
        warnings.warn(choice.note, PortabilityWarning, stacklevel=3)
