"""Extract the Python names TensorRT's bindings define on one release branch, for the API fixture
(``tests/data/trt_api/<branch>.txt``) that ``tests/ondevice/test_trt_device.py`` checks trt_device against.

Reads NVIDIA/TensorRT's pybind11 sources from a git checkout (no TensorRT needed):
``python/src/**.cpp`` (``py::class_`` / ``py::enum_`` chains: ``.def``, ``.def_property*``,
``.def_readwrite``, ``.value``, ``.export_values``; ``m.def``, ``m.attr``) and the package's
``tensorrt/__init__.py`` (``__version__``, module functions). A class lists its bases' members too
(``Logger`` has ``ILogger``'s ``WARNING``). Names only: what exists on a line, not how it behaves.

    python tests/data/trt_api/extract.py /path/to/NVIDIA/TensorRT.git release/10.3 > tests/data/trt_api/release-10.3.txt
"""

from __future__ import annotations

import re
import subprocess
import sys

SOURCE = "https://github.com/NVIDIA/TensorRT/tree/{branch}/python"


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, *args], check=True, capture_output=True, text=True).stdout


def strip_comments(text: str) -> str:
    """C++ source without // and /* */ comments, string literals kept whole."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if text.find("\n", i) >= 0 else n
        elif text.startswith("/*", i):
            i = text.find("*/", i) + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def statement_end(text: str, start: int) -> int:
    """Index of the ';' ending the statement starting at ``start`` (outside brackets and strings)."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == ";" and depth <= 0:
            return i
        i += 1
    return len(text)


def template_args(text: str, start: int) -> tuple[list[str], int]:
    """The top-level arguments of the template opened at text[start] == '<', and the index after it."""
    depth, i, args, cur = 0, start, [], []
    while True:
        c = text[i]
        if c == "<":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c == ">":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return args, i + 1
        elif c == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1


MEMBER = re.compile(r'\.\s*(def|def_static|def_property|def_property_readonly|def_readwrite|def_readonly|value)'
                    r'\s*\(\s*"(\w+)"')
BINDING = re.compile(r"py::(class_|enum_)\s*<")
HEAD = re.compile(r'\s*(\w+)?\s*[({]\s*(\w+)\s*,\s*"(\w+)"')


def bindings(text: str):
    """(python name, C++ type, parent scope variable, C++ bases, members, variable) per binding."""
    for found in BINDING.finditer(text):
        args, after = template_args(text, found.end() - 1)
        head = HEAD.match(text, after)
        if not head:
            continue
        variable, scope, name = head.groups()
        end = statement_end(text, found.start())
        body = text[head.end():end]
        members = [m.group(2) for m in MEMBER.finditer(body)]
        exported = ".export_values()" in body.replace(" ", "")
        yield name, args[0].split("::")[-1], scope, args[1:], members, variable, exported


def names(repo: str, branch: str) -> set[str]:
    files = [f for f in git(repo, "ls-tree", "-r", "--name-only", branch, "--", "python/src").split()
             if f.endswith(".cpp")]
    classes: dict[str, dict] = {}  # python name -> {"cpp", "bases", "members"}
    by_cpp, by_var, top = {}, {}, set()
    for path in files:
        text = strip_comments(git(repo, "show", f"{branch}:{path}"))
        for name, cpp, scope, bases, members, variable, exported in bindings(text):
            qualified = name if scope == "m" else f"{by_var.get(scope, scope)}.{name}"
            entry = classes.setdefault(qualified, {"cpp": cpp, "bases": [], "members": set()})
            entry["bases"] += bases
            entry["members"].update(members)
            by_cpp[cpp] = qualified
            if variable:
                by_var[variable] = qualified
            if scope != "m" and exported:  # enum values exported into the enclosing class
                classes.setdefault(by_var.get(scope, scope), {"cpp": "", "bases": [], "members": set()})["members"].update(members)
            if scope == "m":
                top.add(name)
        for var, qualified in by_var.items():  # members added later through the variable: `binding.def(...)`
            for chain in re.finditer(rf"\b{var}\s*\.", text):
                body = text[chain.start():statement_end(text, chain.start())]
                classes[qualified]["members"].update(m.group(2) for m in MEMBER.finditer(body))
        top.update(re.findall(r'\bm\.(?:def|attr)\s*\(\s*"(\w+)"', text))
    for path in git(repo, "ls-tree", "-r", "--name-only", branch, "--", "python/packaging").split():
        if path.endswith("tensorrt/__init__.py") and "frontend_sdist" not in path:
            text = git(repo, "show", f"{branch}:{path}")
            top.update(re.findall(r"^(\w+)\s*=", text, re.M))
            top.update(re.findall(r"^def (\w+)", text, re.M))
    result = set(top)
    for qualified, entry in classes.items():
        result.add(qualified)
        seen, todo = set(), [qualified]
        while todo:  # a class has its bases' members (pybind11 inheritance)
            cls = todo.pop()
            if cls in seen or cls not in classes:
                continue
            seen.add(cls)
            result.update(f"{qualified}.{m}" for m in classes[cls]["members"])
            todo += [by_cpp[b.split("::")[-1]] for b in classes[cls]["bases"] if b.split("::")[-1] in by_cpp]
    return {n for n in result if not n.startswith("_") or n == "__version__"}


def main() -> None:
    repo, branch = sys.argv[1], sys.argv[2]
    commit = git(repo, "rev-parse", branch).strip()
    print(f"# {SOURCE.format(branch=branch)} at {commit}")
    print(f"# names defined by python/src/**/*.cpp and python/packaging/**/tensorrt/__init__.py "
          f"(tests/data/trt_api/extract.py)")
    for name in sorted(names(repo, branch)):
        print(name)


if __name__ == "__main__":
    main()
