"""The package's shape: imports point one way (down the layers below), no import cycles, and no
import hidden inside a function except a commented, lazy import of an optional or heavy library.

The layer order is written once, here (LAYERS); the documentation's design page
(docs/explanations/design.md, "Layers") is generated from it when the site is built."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "widecli"

# Bottom to top: a module may import modules of its own layer or of a layer listed before it.
LAYERS = [
    ("errors", "rng", "registry", "__init__"),   # the ground floor
    ("config",),       # the foundation: recipes and RunSpecs, names checked against a catalog handed in
    ("models",),
    ("sparsity",),
    ("data",),
    ("methods",),
    ("recipes",),      # the registries as config's catalog: where a recipe is loaded
    ("store",),
    ("engine",),
    ("execute",),
    ("analysis",),
    ("cli", "__main__"),
]
# Third-party modules that may be imported inside a function (with a comment saying why):
# optional extras, and heavy libraries that only one loader, one plot or one backend needs.
LAZY_ALLOWED = {"ray", "submitit", "matplotlib", "sklearn", "mnist1d", "scipy", "torchvision", "psutil",
                "mlxtend", "mlflow", "tensorboard", "wandb", "torch.utils.tensorboard",
                "numba", "numba.core", "optuna", "optuna.trial"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    if module.startswith("widecli.") and module.count(".") == 1 and module.split(".")[1] in ("__init__", "__main__"):
        top = module.split(".")[1]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its package {top!r} has no layer in LAYERS; add it")


def _resolve(node: ast.ImportFrom | ast.Import, importer: str) -> list[str]:
    """The widecli modules an import statement imports."""
    out = []
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "widecli" or a.name.startswith("widecli.")]
    base = node.module or ""
    if node.level:  # relative import
        pkg = importer.split(".")[: -node.level] if not MODULES[importer].name == "__init__.py" else \
            importer.split(".")[: len(importer.split(".")) - node.level + 1]
        base = ".".join(pkg + ([base] if base else []))
    if base != "widecli" and not base.startswith("widecli."):
        return []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in MODULES else base)
    return out


def imports(path: Path):
    """(imported widecli module, line, inside a function?, third-party top name, source line) per import."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    importer = _module_name(path)
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = _resolve(child, importer)
                third = None
                if not targets:
                    name = child.names[0].name if isinstance(child, ast.Import) else (child.module or "")
                    third = name if name in LAZY_ALLOWED else name.split(".")[0]
                for t in targets or [None]:
                    found.append((t, child.lineno, in_function, third, lines[child.lineno - 1]))
            visit(child, nested)
    visit(tree, False)
    return found


GRAPH = {m: sorted({t for t, *_ in imports(p) if t and t != m}) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for m in MODULES:
        layer_of(m)


def test_no_upward_imports():
    bad = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
           for m, targets in GRAPH.items() for t in targets if layer_of(t) > layer_of(m)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles, state = [], {}

    def dfs(m, stack):
        state[m] = "open"
        for t in GRAPH.get(m, []):
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                dfs(t, stack + [t])
        state[m] = "done"
    for m in GRAPH:
        if m not in state:
            dfs(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_widecli_import_inside_a_function():
    bad = [f"{_module_name(p)}:{line}: {text.strip()}" for p in MODULES.values()
           for t, line, nested, _, text in imports(p) if t and nested]
    assert not bad, "imports hidden inside functions:\n" + "\n".join(bad)


def test_lazy_third_party_imports_are_allowed_and_commented():
    bad = []
    for p in MODULES.values():
        src = p.read_text().splitlines()
        for t, line, nested, third, text in imports(p):
            if not nested or t:
                continue
            commented = "#" in text or src[line - 2].strip().startswith("#")
            if third not in LAZY_ALLOWED or not commented:
                bad.append(f"{_module_name(p)}:{line}: {text.strip()}")
    assert not bad, "function-level imports must be an allowed lazy library with a comment:\n" + "\n".join(bad)


@pytest.mark.parametrize("importer, imported", [
    ("widecli.registry", "widecli.errors"),            # from widecli.errors import ...
    ("widecli.config.load", "widecli.config.catalog"),
    ("widecli.recipes", "widecli.config.expand"),      # from widecli.config import expand as _expand
    ("widecli.methods", "widecli.sparsity.rules"),
    ("widecli.engine.loop", "widecli.methods"),
    ("widecli.engine.loop", "widecli.engine.steps"),
])
def test_the_checker_sees_real_imports(importer, imported):
    """Guards the checker itself: known imports are found (an empty graph would pass everything)."""
    assert imported in GRAPH[importer]


def test_the_ground_floor_stands_on_nothing():
    """errors.py imports no widecli module, and the rest of the ground floor only the ground floor."""
    assert GRAPH["widecli.errors"] == []
    assert all(layer_of(t) == 0 for m in ("widecli.rng", "widecli.registry") for t in GRAPH[m])
    assert GRAPH["widecli.registry"] == ["widecli.errors"]


def test_epoch_loop_fits_on_one_screen():
    tree = ast.parse((PACKAGE / "engine" / "loop.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "epoch_loop")
    assert fn.end_lineno - fn.lineno + 1 <= 60


def test_no_method_name_tests_outside_methods():
    """One object per method: no `spec.method == "..."` outside widecli/methods.py."""
    bad = []
    for m, p in MODULES.items():
        if m == "widecli.methods":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "method" \
                    and any(isinstance(c, ast.Constant) and isinstance(c.value, str) for c in node.comparators):
                bad.append(f"{m}:{node.lineno}")
    assert not bad, "method-name tests outside widecli.methods: " + ", ".join(bad)
