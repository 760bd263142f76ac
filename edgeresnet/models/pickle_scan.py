"""What a checkpoint file that torch refused to load is, told from its bytes: the callables its
pickle would import (read with ``pickletools``, which parses and never executes), or what kind
of file it is instead. Only used to word the refusal; loading stays ``weights_only``."""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_READ_LIMIT = 64 << 20  # a pickle header larger than this is not worth parsing for a message


def _pickles(path: Path) -> list[bytes]:
    """The pickle streams in the file: a zip checkpoint's data.pkl, or the file itself."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return [z.read(n) for n in z.namelist() if n.endswith("data.pkl") and z.getinfo(n).file_size < _READ_LIMIT]
        with path.open("rb") as f:
            return [f.read(_READ_LIMIT)]
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return []


def pickle_calls(path: Path) -> list[str]:
    """'module.name' of every global the file's pickles import (GLOBAL and STACK_GLOBAL)."""
    calls: list[str] = []
    for data in _pickles(path):
        strings: list[str] = []
        memo: dict[int, str] = {}
        try:
            for op, arg, _ in pickletools.genops(data):
                if op.name in _STRING_OPS:
                    strings.append(str(arg))
                elif op.name == "MEMOIZE" and strings:
                    memo[len(memo)] = strings[-1]
                elif op.name in ("BINGET", "LONG_BINGET", "GET") and arg in memo:
                    strings.append(memo[arg])
                elif op.name == "GLOBAL":
                    calls.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    calls.append(f"{strings[-2]}.{strings[-1]}")
        except Exception:  # noqa: BLE001 - a truncated or garbage stream: what was read so far counts
            pass
    return calls


def describe(path: Path) -> str:
    """A few words on what the file is."""
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        return "the file is empty"
    if zipfile.is_zipfile(path):
        return "a zip archive without a PyTorch data.pkl, or a damaged one"
    if head[:1] == b"\x80":
        return "a pickle that is corrupt or holds something other than tensors"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data in no format torch.save writes"
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"a text file (it starts {first!r})"
    return "binary data in no format torch.save writes"
