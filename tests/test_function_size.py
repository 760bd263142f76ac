"""No function in the package is longer than a screen (60 lines, signature and docstring
included), the device-side files too: a longer one is split into named steps."""

import ast
from pathlib import Path

import edgeresnet

MAX_LINES = 60
PACKAGE = Path(edgeresnet.__file__).parent


def long_functions(root: Path, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function or method over ``limit`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_over_a_screen():
    offenders = long_functions(PACKAGE)
    assert not offenders, f"functions over {MAX_LINES} lines (split them into named steps):\n" + "\n".join(offenders)


def test_the_scan_sees_the_device_files_and_catches_a_long_function(tmp_path):
    names = {p.name for p in PACKAGE.rglob("*.py")}
    assert {"device.py", "trt_device.py"} <= names  # bundle/ files run on the device: they count too
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    (pkg / "m.py").write_text(f"def short():\n    return 1\n\n\nclass C:\n    def long(self):\n{body}\n")
    assert long_functions(pkg) == [f"pkg/m.py:6 long ({MAX_LINES + 1} lines)"]
