"""Bounds on sizes and counts that come from files or flags, checked before anything is
allocated: a tiny hostile file must not make us build a billion-entry class list or a
100,000-pixel input. Each limit is named in the error it raises."""

from __future__ import annotations

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841
MAX_SIDE = 4096  # pixels of the model's input side (and of a resize)


_FILE_HINT = "the value comes from the file or data named above: fix it there, or use another file"


def check_count(what: str, value, most: int, least: int = 1, hint: str | None = None) -> int:
    """An integer in [least, most], or an InputError naming ``what``, the limit and ``hint``
    (by default: fix the file the value came from)."""
    from ..errors import InputError

    if isinstance(value, bool) or not isinstance(value, int):
        try:
            if float(value) != int(value):
                raise ValueError
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{what} must be an integer, got {value!r}", hint=hint or _FILE_HINT) from None
    if not least <= value <= most:
        raise InputError(f"{what} is {value}: the limit is {least} to {most:,}", hint=hint or _FILE_HINT)
    return value


def check_flag(flag: str, value, *, least=None, most=None, above=None, below=None, integer: bool = False) -> None:
    """A numeric flag within its bounds (NaN and inf never are), or a UsageError naming it."""
    import math

    from ..errors import UsageError

    if value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (not integer or float(value).is_integer())
    ok = ok and (least is None or value >= least) and (most is None or value <= most)
    ok = ok and (above is None or value > above) and (below is None or value < below)
    if not ok:
        bounds = [f">= {least}" if least is not None else "", f"> {above}" if above is not None else "",
                  f"<= {most:,}" if most is not None else "", f"< {below}" if below is not None else ""]
        want = " and ".join(b for b in bounds if b) or "finite"
        kind = "an integer " if integer else "a number "
        raise UsageError(f"{flag} must be {kind}{want}, got {value}",
                         hint=f"pass {flag} {kind}{want}, or leave it out for its default")
