"""Typed fields for the small JSON specs that users and model metadata hand us (the
preprocessing spec is one): each field has one type, checked the same way whether its value
came from a flag, the user's file or a checkpoint.

A type says in words what it expects and converts a value or raises ValueError; the reader of
a spec turns that into the error its source calls for (a flag: usage; a file: bad input).
Bools are never numbers here, although Python counts True as 1."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Protocol


class FieldType(Protocol):
    def expected(self, flag: bool = False) -> str:
        """What a value must be, in words (``flag``: as a command-line value, not JSON)."""

    def convert(self, value: Any) -> Any:
        """The value in its canonical Python type, or ValueError."""


def _integral(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Integer:
    least: int
    most: int
    nullable: bool = False  # JSON null (None) allowed

    def expected(self, flag: bool = False) -> str:
        return f"an integer from {self.least} to {self.most:,}" + (" or null" if self.nullable and not flag else "")

    def convert(self, value: Any) -> int | None:
        if value is None and self.nullable:
            return None
        if not _integral(value) or not self.least <= value <= self.most:
            raise ValueError(value)
        return int(value)


@dataclass(frozen=True)
class OneOf:
    choices: tuple

    def expected(self, flag: bool = False) -> str:
        return "one of " + ", ".join(map(str, self.choices))

    def convert(self, value: Any):
        if not (isinstance(value, str) or _integral(value)) or value not in self.choices:
            raise ValueError(value)
        return self.choices[self.choices.index(value)]


@dataclass(frozen=True)
class Numbers:
    """A non-empty list of finite numbers (``positive``: each > 0), as a tuple of floats."""

    positive: bool = False

    def expected(self, flag: bool = False) -> str:
        kind = "positive and finite" if self.positive else "finite"
        return kind if flag else f"a list of {kind} numbers"

    def convert(self, value: Any) -> tuple[float, ...]:
        if not isinstance(value, (list, tuple)) or not value or \
                not all(_finite(v) and (v > 0 or not self.positive) for v in value):
            raise ValueError(value)
        return tuple(float(v) for v in value)
