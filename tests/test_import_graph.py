"""The import graph of every workspace package, read with `ast` (nothing is imported):

- no import cycle between the modules of one package, counting module-level AND function-level (lazy)
  imports, so a lazy import cannot hide a two-way dependency;
- no module imports another first-party module's private name (`from x import _name`, `x._name`).

`if TYPE_CHECKING:` blocks are skipped: they never run.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Module:
    name: str  # dotted, e.g. llm_chat.serving.engine
    path: Path
    is_package: bool  # an __init__.py
    imports: set[str] = field(default_factory=set)  # first-party modules it imports
    private: list[str] = field(default_factory=list)  # "line N: what" for each private-name use


def package_roots(root: Path = ROOT) -> list[Path]:
    """The import packages (src/<name>/) of every workspace member listed in the root pyproject.toml."""
    members = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    found = []
    for pattern in members:
        for member in sorted(root.glob(pattern)):
            found += sorted(p.parent for p in (member / "src").glob("*/__init__.py"))
    return found


def collect_modules(roots: list[Path]) -> dict[str, Module]:
    mods: dict[str, Module] = {}
    for pkg in roots:
        for path in sorted(pkg.rglob("*.py")):
            parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            mods[".".join(parts)] = Module(".".join(parts), path, is_package)
    return mods


def _nodes(tree: ast.AST):
    """Every node except the bodies of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _base(mod: Module, level: int, target: str | None) -> str:
    """The absolute module named by a (possibly relative) `from` import."""
    if level == 0:
        return target or ""
    pkg = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    pkg = pkg[: len(pkg) - (level - 1)]
    return ".".join(pkg + ([target] if target else []))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def analyse(mods: dict[str, Module]) -> None:
    """Fill each module's first-party imports and private-name uses."""
    first_party = {name.split(".")[0] for name in mods}

    def known(name: str) -> str | None:
        """`name` or its nearest enclosing first-party module."""
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    for mod in mods.values():
        tree = ast.parse(mod.path.read_text(encoding="utf-8"), str(mod.path))
        aliases: dict[str, str] = {}  # local name -> first-party module it is bound to
        nodes = list(_nodes(tree))
        for node in nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] not in first_party:
                        continue
                    if target := known(a.name):
                        mod.imports.add(target)
                    if a.asname:
                        aliases[a.asname] = a.name
                    else:
                        aliases.setdefault(a.name.split(".")[0], a.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                base = _base(mod, node.level, node.module)
                if base.split(".")[0] not in first_party:
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in mods:  # `from pkg import module`
                        mod.imports.add(sub)
                        aliases[a.asname or a.name] = sub
                        continue
                    if target := known(base):
                        mod.imports.add(target)
                    if _is_private(a.name) and base != mod.name:
                        mod.private.append(f"line {node.lineno}: from {base} import {a.name}")
        for node in nodes:
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                owner = ast.unparse(node.value)
                head, _, rest = owner.partition(".")
                if head in aliases:
                    target = aliases[head] + (f".{rest}" if rest else "")
                    if target in mods and target != mod.name:
                        mod.private.append(f"line {node.lineno}: {target}.{node.attr}")
        mod.imports.discard(mod.name)


def cycles(mods: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(mods[v].imports):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, Module]:
    mods = collect_modules(package_roots())
    analyse(mods)
    return mods


def test_every_workspace_package_is_walked(graph):
    tops = {name.split(".")[0] for name in graph}
    assert {"lora_shared", "llm_chat", "vision_cls", "vision_det", "vision_pose", "text_classifier"} <= tops
    assert "llm_chat.serving.engine" in graph and graph["llm_chat.serving.engine"].imports


def test_no_import_cycle_inside_a_package(graph):
    found = cycles(graph)
    assert not found, "import cycles (module-level and lazy imports both count):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_no_module_imports_another_modules_private_name(graph):
    bad = [f"{m.path.relative_to(ROOT)} {use}" for m in graph.values() for use in m.private]
    why = "private names used across modules (make them public or move the code):\n"
    assert not bad, why + "\n".join(bad)


def test_serving_imports_point_one_way(graph):
    """schema <- engine <- api <- ui <- server: no lower layer imports a higher one."""
    layers = ["schema", "engine", "api", "ui", "server"]
    for i, low in enumerate(layers):
        above = {f"llm_chat.serving.{name}" for name in layers[i + 1 :]}
        assert not graph[f"llm_chat.serving.{low}"].imports & above, low


# ---------------------------------------------------------------------------------- the checker itself
def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    mods = collect_modules([tmp_path / "pkg"])
    analyse(mods)
    return mods


def test_checker_sees_lazy_cycles_and_private_names(tmp_path):
    mods = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .b import helper\n",
            "pkg/b.py": "def helper():\n    from . import a\n    from .c import _secret\n    return a\n",
            "pkg/c.py": "import pkg.a as A\n_secret = 1\nx = A._hidden\n",
            "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .e import _T\n",
            "pkg/e.py": "from . import d\n",
        },
    )
    assert cycles(mods) == [["pkg.a", "pkg.b", "pkg.c"]]  # b -> a is lazy, c -> a is an alias import
    assert mods["pkg.b"].private == ["line 3: from pkg.c import _secret"]
    assert mods["pkg.c"].private == ["line 3: pkg.a._hidden"]
    assert mods["pkg.d"].private == [] and "pkg.e" not in mods["pkg.d"].imports  # TYPE_CHECKING only
