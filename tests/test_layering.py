"""The house's import rule, enforced: modules import downward only (DESIGN.md "Layout").

``LAYERS`` is the one written copy of the order in code. A module may import anything in a
lower layer, and a unit of its own layer where no cycle forms (``models`` and ``losses``
never import each other). A function-local import of a flam_jax module needs a comment
within the three lines above it saying why it is lazy.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Bottom to top. A unit is a top-level module or subpackage of flam_jax (or the demo).
LAYERS = (
    ("flam_jax.errors", "flam_jax.jsonfile", "flam_jax.paths", "flam_jax.timeline"),
    ("flam_jax.audio",),
    ("flam_jax.models", "flam_jax.losses"),
    ("flam_jax.config", "flam_jax.data"),  # the experiment schema sits on the model configs
    ("flam_jax.export", "flam_jax.evals", "flam_jax.train"),
    ("flam_jax.infer",),
    ("flam_jax.cli", "flam_jax", "demo"),  # console scripts, the package's face, the demo
)
NEVER = {frozenset({"flam_jax.models", "flam_jax.losses"})}
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "flam_jax" and len(parts) > 1 else parts[0]


def imports(source: str, module: str, is_package: bool, known: set[str]):
    """(imported module, line, is function-local, has a reason comment) for each project import."""
    lines = source.splitlines()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        local = node.col_offset > 0
        context = lines[max(0, node.lineno - 4) : node.lineno]
        reason = any("#" in line for line in context)
        for target in targets:
            if target.split(".")[0] in ("flam_jax", "demo"):
                yield target, node.lineno, local, reason


def project_modules() -> dict[str, pathlib.Path]:
    files = [*ROOT.joinpath("flam_jax").rglob("*.py"), *ROOT.joinpath("demo").rglob("*.py")]
    return {module_name(f): f for f in files}


def violations(sources: dict[str, tuple[str, bool]]) -> list[str]:
    """Every edge against the order, every cycle and every unexplained lazy import."""
    known = set(sources)
    problems, graph = [], {}
    for module, (source, is_package) in sorted(sources.items()):
        graph[module] = set()
        for target, line, local, reason in imports(source, module, is_package, known):
            where = f"{module}:{line} imports {target}"
            src, dst = unit_of(module), unit_of(target)
            if src not in LAYER or dst not in LAYER:
                problems.append(f"{where}: {src if src not in LAYER else dst} is in no layer")
                continue
            if LAYER[dst] > LAYER[src]:
                problems.append(f"{where}: upward ({src} is layer {LAYER[src] + 1}, {dst} {LAYER[dst] + 1})")
            if frozenset({src, dst}) in NEVER:
                problems.append(f"{where}: {src} and {dst} never import each other")
            if local and not reason:
                problems.append(f"{where} inside a function without a comment saying why")
            if target != module:
                graph[module].add(target)
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    units = {}
    for module, targets in graph.items():
        units.setdefault(unit_of(module), set()).update(
            unit_of(t) for t in targets if unit_of(t) != unit_of(module)
        )
    problems += [f"cycle between units: {' -> '.join(c)}" for c in cycles(units)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected knot found by depth-first search (enough to report)."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_every_import_runs_down_the_layers():
    sources = {m: (p.read_text(), p.name == "__init__.py") for m, p in project_modules().items()}
    assert len(sources) > 50  # the walk found the package
    assert violations(sources) == []


@pytest.mark.parametrize(
    "sources, expected",
    [
        ({"flam_jax.timeline": ("from flam_jax.infer import api\n", False)}, "upward"),
        (
            {
                "flam_jax.train.a": ("from flam_jax.train import b\n", False),
                "flam_jax.train.b": ("from flam_jax.train.a import x\n", False),
                "flam_jax.train": ("", True),
            },
            "import cycle",
        ),
        ({"flam_jax.models.m": ("from flam_jax.losses import total\n", False)}, "never import"),
        ({"flam_jax.infer.x": ("def f():\n    from flam_jax import paths\n", False)}, "without a comment"),
        ({"flam_jax.extra": ("import flam_jax.errors\n", False)}, "in no layer"),
        (
            {
                "flam_jax.export.a": ("from flam_jax.train import b\n", False),
                "flam_jax.train.b": ("from flam_jax.export import c\n", False),
                "flam_jax.export.c": ("", False),
            },
            "cycle between units",
        ),
    ],
)
def test_the_checker_sees_each_kind_of_violation(sources, expected):
    problems = violations(sources)
    assert any(expected in p for p in problems), problems


def test_a_lazy_import_with_its_reason_passes():
    source = "def f():\n    # lazy: keeps the CLI's start fast\n    from flam_jax.infer import api\n"
    assert violations({"flam_jax.cli.x": (source, False)}) == []
