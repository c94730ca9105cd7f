"""The package's layout: the library (core, models, data) never imports a command or a study, no
module imports itself back through others, and the README's code map names every module."""

from __future__ import annotations

import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "saol_jax")
LIBRARY = ("saol_jax.core", "saol_jax.models", "saol_jax.data")
ABOVE_LIBRARY = ("saol_jax.commands", "saol_jax.studies")


def _modules() -> dict[str, str]:
    """Dotted name -> file of every module under saol_jax/ (a package is its __init__.py)."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(path: str) -> set[str]:
    """The saol_jax modules a file imports anywhere in it (`from a import b` counts `a.b` when b is a module)."""
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in MODULES}


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_three_places_exist():
    assert {"saol_jax.core", "saol_jax.commands", "saol_jax.studies", "saol_jax.models", "saol_jax.data",
            "saol_jax.commands.cli", "saol_jax.train"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, LIBRARY)))
def test_library_never_imports_a_command_or_a_study(module):
    upward = sorted(name for name in _imports(MODULES[module]) if _within(name, ABOVE_LIBRARY))
    assert not upward, f"{module} imports {upward}"


def test_no_import_cycles():
    graph = {module: _imports(path) - {module} for module, path in MODULES.items()}
    # A package's __init__ re-exporting its own modules is not a cycle of the code's layers.
    graph = {module: {name for name in names if not module.startswith(name + ".")} for module, names in graph.items()}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for name in sorted(graph[module]):
            if state.get(name) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(name):] + [module, name]))
            if name not in state:
                visit(name, trail + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_code_map_names_every_module():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = re.search(r"^## Code map\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert section, "README.md has no '## Code map' section"
    named = set(re.findall(r"saol_jax/[\w/]+\.py", section.group(1)))
    files = {os.path.relpath(path, REPO).replace(os.sep, "/") for path in MODULES.values()}
    assert not sorted(files - named), f"modules missing from the code map: {sorted(files - named)}"
    assert not sorted(named - files), f"the code map names modules that do not exist: {sorted(named - files)}"


def test_console_scripts_name_callables():
    import importlib
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert {"saol-train", "saol-evaluate", "saol-ablate"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attribute = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attribute, None)), f"{name} = {target}"
