"""The architecture, read from the imports (AST), not from quoted strings.

1. Engine isolation: no module outside ``backends/<engine>`` imports an engine's runtime
   (onnxruntime, openvino, tensorrt, executorch and every ``libraries`` name in the registry) or
   an engine module (``backends.onnxruntime``, ``backends.openvino``, ``backends.tensorrt...``).
   Lazy imports inside functions and ``importlib.import_module("...")`` count too.
2. Layering: the package-level import graph (core, host, data, ... cli) is acyclic, so no arrow
   goes back up; its order is printed (``pytest -s``) for docs/ARCHITECTURE.md.

Each guard is also run on synthetic sources to prove it fails when a violation is added.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "edgeresnet"

RUNTIMES = {"onnxruntime", "openvino", "tensorrt", "executorch"}

# Modules that may run an engine's runtime although they are not an engine, and why.
EXEMPT = {
    # The one reference interpreter: it runs ONNX graphs (calibration statistics, checks against
    # FP32) so that nothing else opens an ORT session of its own.
    "edgeresnet.onnxfile.reference",
    # Device-side files copied into every bundle: they run on a device where edgeresnet is not
    # installed (python -I, Python 3.8, no torch), so they cannot import the package's backends
    # and must call the runtime themselves.
    "edgeresnet.ondevice.device",
    "edgeresnet.ondevice.trt_device",
}

# Today's violations, being fixed by other helpers of issue 25 (SPLIT routes ORT sessions
# through onnxfile/reference.py; CONTRACT fixes tune/emulate and bench/run). The list may only
# shrink: an entry that no longer violates fails the test, so it is removed as its fix lands;
# it is to be empty at merge.
KNOWN: set[str] = set()  # empty: every module outside an engine's folder goes through the registry


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_modules() -> set[str]:
    """backends/<engine>: every module or folder in backends/ but the shared base, registry and installed."""
    shared = {"__init__", "base", "registry", "installed", "__pycache__"}
    return {f"edgeresnet.backends.{p.stem}" for p in (PKG / "backends").iterdir()
            if p.stem not in shared and (p.suffix == ".py" or (p / "__init__.py").exists())}


def runtime_libraries() -> set[str]:
    from edgeresnet.backends.registry import backends

    return RUNTIMES | {lib.split(".")[0] for b in backends() for lib in b.libraries}


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``source``: top-level or lazy, relative
    ones resolved against ``module``; ``from x import y`` gives both x and x.y (y may be a module);
    ``importlib.import_module("x")`` and ``__import__("x")`` with a constant name count too."""
    found = []
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{a.name}") for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
            if called in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(source: str, module: str, engines: set[str], libraries: set[str],
               is_package: bool = False) -> list[str]:
    """What ``module`` imports that only an engine module may: a runtime library or another
    engine's module (one line each). A module inside backends/<engine> may use its runtime and
    its own folder."""
    own = next((e for e in engines if module == e or module.startswith(e + ".")), None)
    bad: dict[int, str] = {}
    for line, name in imports(source, module, is_package):
        if own is None and name.split(".")[0] in libraries:
            bad.setdefault(line, f"{module}:{line} imports the runtime {name}")
        elif any(name == e or name.startswith(e + ".") for e in engines - {own}):
            bad.setdefault(line, f"{module}:{line} imports the engine module {name}")
    return list(bad.values())


def package_modules():
    for path in sorted(PKG.rglob("*.py")):
        yield module_name(path), path


def all_violations() -> dict[str, list[str]]:
    engines, libraries = engine_modules(), runtime_libraries()
    found = {}
    for module, path in package_modules():
        if module in EXEMPT:
            continue
        bad = violations(path.read_text(), module, engines, libraries, path.name == "__init__.py")
        if bad:
            found[module] = bad
    return found


def test_no_module_outside_an_engine_imports_a_runtime_or_an_engine():
    found = all_violations()
    new = {m: v for m, v in found.items() if m not in KNOWN}
    assert not new, "only backends/<engine> may import an engine runtime or module:\n" + \
        "\n".join(line for v in new.values() for line in v)
    fixed = sorted(KNOWN - set(found))
    assert not fixed, f"no longer violating, remove from KNOWN: {fixed}"


def test_the_exempt_modules_exist():
    names = {m for m, _ in package_modules()}
    assert EXEMPT <= names and set(KNOWN) <= names


def test_the_engines_and_runtimes_are_found():
    assert {"edgeresnet.backends.onnxruntime", "edgeresnet.backends.openvino",
            "edgeresnet.backends.tensorrt"} <= engine_modules()
    assert {"onnxruntime", "openvino", "tensorrt"} <= runtime_libraries()


ENGINES = {"edgeresnet.backends.onnxruntime", "edgeresnet.backends.tensorrt"}
LIBS = {"onnxruntime", "tensorrt"}


@pytest.mark.parametrize("source", [
    "import onnxruntime as ort",
    "def f():\n    import onnxruntime\n",
    "from onnxruntime.capi import _pybind_state",
    "import importlib\nort = importlib.import_module('onnxruntime')",
    "from ..backends import onnxruntime",
    "from ..backends.onnxruntime import PROFILE",
    "from ..backends.tensorrt.recipes import plan",
    "from edgeresnet.backends import tensorrt",
])
def test_the_guard_fails_when_an_engine_import_is_added(source):
    assert violations(source, "edgeresnet.tune.new_module", ENGINES, LIBS)


@pytest.mark.parametrize("module,source", [
    ("edgeresnet.tune.new_module", "from ..backends.registry import get_backend\nimport onnx, numpy"),
    ("edgeresnet.tune.new_module", "x = 'onnxruntime'  # a quoted name is not an import"),
    ("edgeresnet.backends.onnxruntime", "import onnxruntime"),
    ("edgeresnet.backends.tensorrt.build", "import tensorrt\nfrom .recipes import plan"),
])
def test_the_guard_passes_what_is_allowed(module, source):
    assert violations(source, module, ENGINES, LIBS) == []


def test_one_engine_may_not_import_another():
    assert violations("from .tensorrt.recipes import plan", "edgeresnet.backends.onnxruntime", ENGINES, LIBS)


# ----------------------------------------------------------------------------- layering

def package_of(module: str) -> str:
    """The first level under edgeresnet: a subpackage, or a root module (errors, runtime, ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """package -> the packages it imports (lazy imports included), from {module: (source, is_package)}."""
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        mine = package_of(module)
        graph.setdefault(mine, set())
        for _, name in imports(source, module, is_package):
            if name.startswith("edgeresnet.") and package_of(name) != mine:
                target = package_of(name)
                if target in {package_of(m) for m in sources}:
                    graph[mine].add(target)
    return graph


def layers(graph: dict[str, set[str]]) -> list[str]:
    return list(TopologicalSorter(graph).static_order())


def real_graph() -> dict[str, set[str]]:
    sources = {m: (p.read_text(), p.name == "__init__.py") for m, p in package_modules()
               if m != "edgeresnet" and m != "edgeresnet.__main__"}
    return package_graph(sources)


# Arrows back up (package -> package it should not import) tolerated while being untangled. The
# layout commit found six; the device files' own package (ondevice/), SSH's (remote/), publish in
# bundle/ and `edgeresnet build`'s generic half in export/ removed them. It stays empty: a new
# back edge fails the test below with the cycle it closes.
KNOWN_BACK_EDGES: set[tuple[str, str]] = set()


def test_packages_form_layers_with_no_arrow_back_up():
    graph = real_graph()
    gone = sorted(e for e in KNOWN_BACK_EDGES if e[1] not in graph.get(e[0], ()))
    assert not gone, f"no longer imported, remove from KNOWN_BACK_EDGES: {gone}"
    pruned = {p: deps - {b for a, b in KNOWN_BACK_EDGES if a == p} for p, deps in graph.items()}
    try:
        order = layers(pruned)
    except CycleError as err:
        pytest.fail(f"the package imports form a cycle (an arrow goes back up): {' -> '.join(err.args[1])}")
    print("\nlayers, lowest first:\n" + "\n".join(f"  {p} -> {', '.join(sorted(pruned[p])) or '-'}" for p in order))


def test_the_layering_guard_fails_on_a_cycle():
    sources = {"edgeresnet.core.limits": ("from ..host import machine", False),
               "edgeresnet.host.machine": ("def f():\n    from ..core.limits import x", False)}
    with pytest.raises(CycleError):
        layers(package_graph(sources))
