"""The product package holds the product, with no development harness and no dev-only imports; its layers
import only downward."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "operator" / "bernini"


def test_every_product_module_imports_without_the_harness_or_dev_dependencies():
    modules = sorted(
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py") if path.name != "__main__.py"
    )
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(' '.join(sorted(m for m in ('localdev', 'pytest') if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", f"product modules pulled in {result.stdout.strip()}"



def test_no_product_source_imports_the_harness_or_its_pki_library():
    # cryptography arrives with some third-party packages, but our own code must not need it.
    offenders = [str(path) for path in PACKAGE.rglob("*.py")
                 if any(word in path.read_text() for word in ("import localdev", "from localdev", "from cryptography"))]
    assert offenders == []


def test_stage_replicas_do_not_import_the_meshing_libraries():
    # Every replica imports the Serve application; trimesh and scikit-image cost ~2 s of CPU on each start,
    # and only the Triangulation replicas use them.
    probe = "import sys, bernini.serve.app; print(' '.join(m for m in ('trimesh', 'skimage') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""


def _bernini_imports(path: Path) -> set[str]:
    """Every bernini module a source file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from bernini import render` imports bernini.render
            found |= {f"{node.module}.{alias.name}" for alias in node.names} if node.module == "bernini" else {node.module}
    return {name for name in found if name.split(".")[0] == "bernini"}


def _imports_from(layer: str, packages: tuple[str, ...]) -> list[str]:
    return sorted(f"{path.relative_to(PACKAGE)}: {name}" for path in (PACKAGE / layer).rglob("*.py")
                  for name in _bernini_imports(path) if name.split(".")[1] in packages)


def test_the_domain_is_the_ground_floor():
    # Instances, stages, quantities and packing are facts every other package reads; they read none of them.
    above = tuple(path.stem for path in PACKAGE.iterdir() if path.stem not in ("domain", "__init__", "__pycache__"))
    assert _imports_from("domain", above) == []


def test_the_api_builds_on_the_domain_not_on_what_uses_the_api():
    assert _imports_from("api", ("render", "reconcile", "cost", "artifacts", "serve", "cli")) == []
