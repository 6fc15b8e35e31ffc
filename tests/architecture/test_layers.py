"""The rule of which package may import which (docs/architecture.md), enforced on the source.

Every ``import`` in ``appliance/`` and ``chip_drivers/`` -- at module level or inside a function
(function-local imports are for start-up time, never for hiding the graph) -- is checked against
:data:`LAYERS`: a package may import packages of lower layers, and of its own layer only where
:data:`SAME_LAYER` allows it. Imports by string (``importlib.import_module``) are forbidden
outside the two registries of :data:`STRING_IMPORTS_ALLOWED`, so the graph cannot be bypassed.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Lowest first. The base layer holds the root modules (errors, paths, subproc, atomic, ...).
LAYERS: list[set[str]] = [
    {"appliance"},
    {"chip_drivers", "appliance.inventory", "appliance.catalog", "appliance.licensing", "appliance.state"},
    {"appliance.planner", "appliance.models"},
    {"appliance.runtime"},
    {"appliance.provision", "appliance.gateway", "appliance.bundle", "appliance.train"},
    {"appliance.agent", "appliance.deploy", "appliance.cluster"},
    {"appliance.status"},
    {"appliance.console"},
    {"appliance.cli"},
]
# Same-layer edges that are part of the design: detection orchestrates the chip drivers, which
# read the host through inventory's host view and fill in its records.
SAME_LAYER: set[tuple[str, str]] = {("appliance.inventory", "chip_drivers"), ("chip_drivers", "appliance.inventory")}
# Registries that load modules of their own package by name (to keep start-up fast): the CLI's
# lazy command table and the chip-driver registry. Nothing else imports by string.
STRING_IMPORTS_ALLOWED = {"appliance/cli/__init__.py", "chip_drivers/__init__.py"}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "chip_drivers":
        return "chip_drivers"
    if parts[0] != "appliance":
        return None
    if len(parts) == 1 or (REPO / "appliance" / f"{parts[1]}.py").is_file():
        return "appliance"  # a root module (appliance.errors, appliance.atomic, ...)
    return f"appliance.{parts[1]}"


def layer_of(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"package {package} is in no layer: add it to LAYERS in {__file__} and to "
                         "docs/architecture.md")


def source_files() -> list[Path]:
    return sorted(p for p in [*REPO.glob("appliance/**/*.py"), *REPO.glob("chip_drivers/**/*.py")]
                  if p.name != "__main__.py")


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
    return out


def violations() -> list[str]:
    found = []
    for path in source_files():
        rel = path.relative_to(REPO).as_posix()
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        src = package_of(module.removesuffix(".__init__"))
        for line, target in imports(path):
            dst = package_of(target)
            if dst is None or dst == src:
                continue
            a, b = layer_of(src), layer_of(dst)
            if a < b or (a == b and (src, dst) not in SAME_LAYER):
                found.append(f"{rel}:{line}: {src} (layer {a}) imports {target} ({dst}, layer {b})")
        if rel not in STRING_IMPORTS_ALLOWED and "importlib.import_module" in path.read_text(encoding="utf-8"):
            found.append(f"{rel}: imports by string (importlib.import_module) hide the graph")
    return found


def test_no_package_imports_a_higher_layer():
    assert violations() == []


def test_every_package_is_in_a_layer_and_in_the_docs():
    packages = {package_of(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"))
                for p in source_files()}
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for package in sorted(packages):
        layer_of(package)
        name = package.replace("appliance.", "") + "/" if package != "appliance" else None
        if name:
            assert f"`{name}`" in doc or f"`appliance/{name}`" in doc, f"docs/architecture.md does not mention {name}"


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a planner module importing the runtime is reported."""
    fake = tmp_path / "appliance" / "planner"
    fake.mkdir(parents=True)
    (tmp_path / "appliance" / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from appliance.runtime.stack import up\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = violations()
    assert len(found) == 1 and "appliance/planner/bad.py:2: appliance.planner (layer 2) imports appliance.runtime" \
        in found[0], found
