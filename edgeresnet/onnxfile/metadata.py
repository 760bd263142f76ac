"""edgeresnet's keys in an ONNX file's metadata, read through one bounded, typed reader.

The values are strings anyone can edit: each is size-bounded, its JSON depth-bounded before it
is parsed (50,000 nested brackets once crashed the JSON parser), and each field has one type.
A model exported by other code has none of these keys; its other keys pass through untouched."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ..data import Preprocess
from ..data.preprocess import Source
from ..errors import InputError
from ..core.limits import MAX_CLASSES

PREFIX = "edgeresnet."
MAX_CHARS = 8_000_000  # one value; ImageNet-21k's 21,841 class names are about 0.5 MB of JSON
MAX_DEPTH = 8  # our deepest value is 2 (preprocess: {"mean": [...]})
MAX_TEXT = 1000  # a plain-string field or one class name
FIX = "fix or remove that key in the model's metadata_props, or re-export the model with edgeresnet"
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]")


@dataclass(frozen=True)
class OnnxMeta:
    """The typed metadata; None where the file lacks the key (a model exported by other code)."""

    arch: str | None = None
    version: str | None = None
    source: str | None = None
    preprocess: Preprocess | None = None
    classes: list[str] | None = None
    other: dict[str, str] = field(default_factory=dict)  # keys we do not read, copied as they are


def read_metadata(model, name: str) -> OnnxMeta:
    """The metadata of ``model`` (the file ``name``), or one InputError naming the bad key."""
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in props.items():
        if key.startswith(PREFIX) and len(value) > MAX_CHARS:
            raise InputError(f"{name}: metadata {key} is {len(value):,} characters; the limit is {MAX_CHARS:,}",
                             hint=FIX)
    text = {k: _text(props, k, name) for k in ("arch", "version", "source")}
    pre = _json(props, "preprocess", name, dict, "a JSON object (the preprocessing spec)")
    classes = _json(props, "classes", name, list, "a JSON list of strings, one per output")
    if classes is not None:
        if len(classes) > MAX_CLASSES or not all(isinstance(c, str) and len(c) <= MAX_TEXT for c in classes):
            raise InputError(f"{name}: metadata {PREFIX}classes must be a list of at most {MAX_CLASSES:,} strings "
                             f"of at most {MAX_TEXT} characters", hint=FIX)
    other = {k: v for k, v in props.items() if not k.startswith(PREFIX)}
    return OnnxMeta(**text, preprocess=None if pre is None else _preprocess(pre, name), classes=classes, other=other)


def _preprocess(spec: dict, name: str) -> Preprocess:
    """Through the spec's one schema, its errors naming the file and the key."""
    return Preprocess.from_dict(spec, Source("metadata", f"{name}: metadata {PREFIX}preprocess"))


def _text(props: dict[str, str], field_name: str, name: str) -> str | None:
    value = props.get(PREFIX + field_name)
    if value is not None and len(value) > MAX_TEXT:
        raise InputError(f"{name}: metadata {PREFIX}{field_name} is {len(value):,} characters; the limit is "
                         f"{MAX_TEXT}", hint=FIX)
    return value


def _json(props: dict[str, str], field_name: str, name: str, kind: type, expected: str):
    key = PREFIX + field_name
    if key not in props:
        return None
    value = props[key]
    depth = _depth(value)
    if depth > MAX_DEPTH:
        raise InputError(f"{name}: metadata {key} is JSON nested {depth} deep; the limit is {MAX_DEPTH}", hint=FIX)
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise InputError(f"{name}: metadata {key} is not valid JSON ({exc})", hint=FIX) from None
    if not isinstance(parsed, kind):
        raise InputError(f"{name}: metadata {key} must be {expected}, got {type(parsed).__name__} {value[:40]!r}",
                         hint=FIX)
    return parsed


def _depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text, strings skipped, without parsing it."""
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
    return deepest
