"""The floors of docs/architecture.md, read from the package's own import statements: no module
imports one on a higher floor, and no chain of imports runs in a circle (function-local imports
count too). Heavy optional dependencies are imported inside functions only."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mimkit"

# module (or package prefix) -> floor, most specific first; the same table as docs/architecture.md
FLOORS = [
    ("mimkit.errors", 0), ("mimkit.config_schema", 0), ("mimkit.files", 0),
    ("mimkit.data.config", 0), ("mimkit.engine.config", 0),  # the data / optim / train config dataclasses
    ("mimkit.data.device_batch", 0),  # uint8 batches -> float on the device (the token cache uses it too)
    ("mimkit.nn", 1), ("mimkit.methods.base", 1), ("mimkit.methods.output", 1),
    ("mimkit.tokenizers", 2),
    ("mimkit.methods.", 3),  # every other module of mimkit/methods/
    ("mimkit.methods", 1),  # the package __init__: the contract only
    ("mimkit.registry", 4), ("mimkit.presets", 4), ("mimkit.config", 4),
    ("mimkit.data", 5), ("mimkit.engine", 5), ("mimkit.eval", 5), ("mimkit.generation", 5), ("mimkit.pictures", 5),
    ("mimkit.hub", 6), ("mimkit.train", 6), ("mimkit.teacher_loading", 6),
    ("mimkit.commands", 7), ("mimkit.cli", 7), ("mimkit.repro", 7), ("mimkit.__main__", 7), ("mimkit", 7),
]
# optional or slow third-party packages: imported inside the functions that need them
LAZY = ("transformers", "datasets", "huggingface_hub", "torch.utils.tensorboard", "matplotlib", "sklearn", "scipy",
        "msgpack")


def floor_of(module: str) -> int:
    for prefix, floor in FLOORS:
        if prefix.endswith("."):
            if module.startswith(prefix):
                return floor
        elif module == prefix or module.startswith(prefix + "."):
            return floor
    raise AssertionError(f"{module} has no floor in FLOORS (and docs/architecture.md)")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) of every import statement of `module`."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            found += [(n, node.lineno, id(node) in top_level) for n in [target, *names]]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top_level) for a in node.names]
    return found


def internal_edges() -> dict[str, set[str]]:
    """module -> the mimkit modules it imports (a `from pkg import name` that names a submodule counts as it)."""
    table = modules()
    edges = {m: set() for m in table}
    for module, path in table.items():
        found = {target for target, _, _ in imports(module, path) if target in table and target != module}
        # `from . import sub` names the submodule; its package is the importer's own parent
        parents = {t.rsplit(".", 1)[0] for t in found if t.rsplit(".", 1)[0] in found}
        edges[module] = found - {p for p in parents if module.startswith(p + ".")}
    return edges


def test_every_module_has_a_floor():
    for module in modules():
        floor_of(module)


def test_no_module_imports_a_higher_floor():
    bad = [f"{module} (floor {floor_of(module)}) imports {target} (floor {floor_of(target)})"
           for module, targets in internal_edges().items() for target in sorted(targets)
           if floor_of(target) > floor_of(module)]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    edges = internal_edges()
    state, stack, cycles = {}, [], []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(cycles)


def test_heavy_dependencies_are_imported_lazily():
    eager = [f"{module}:{line} imports {target}" for module, path in modules().items()
             for target, line, top in imports(module, path)
             if top and any(target == lazy or target.startswith(lazy + ".") for lazy in LAZY)]
    assert not eager, "\n".join(eager)


def test_the_floor_table_is_the_documented_one():
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for prefix, floor in FLOORS:
        assert f"| {floor} | `{prefix}`" in text, f"docs/architecture.md does not list `{prefix}` on floor {floor}"


def test_every_test_file_is_listed_in_the_testing_page():
    text = (PACKAGE.parent / "docs" / "testing.md").read_text()
    unlisted = [f.name for f in sorted((PACKAGE.parent / "tests").glob("test_*.py"))
                if f"[{f.name}](../tests/{f.name})" not in text]
    assert not unlisted, f"docs/testing.md does not list {unlisted}"
