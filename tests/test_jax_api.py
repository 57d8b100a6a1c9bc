"""The code uses only jax APIs present in both jax 0.10.2 (here) and 0.11.x (the GPU image).

A static check over flam_jax/, benchmarks/, experiments/, data/ and demo/: every dotted
name the code reaches through jax (imports resolved, so ``jnp.empty`` is
``jax.numpy.empty``) is checked against ``REMOVED``, the spellings one of the two lines
lacks or gives another meaning. They come from jax's changelog (0.10.0 to 0.11.0) and from
the deprecation tables of jax 0.10.2 (``_deprecations`` in jax/__init__.py, jax/numpy,
jax/lax, jax/core.py, jax/interpreters/, jax/experimental/{shard_map,pjit}.py,
jax/ad_checkpoint.py): what 0.10.2 warns about, 0.11 has removed or is removing. The one
exception is the shard_map shim (flam_jax/losses/_compat.py), which keeps the old spelling
for older releases. The names that remain must also resolve in the jax installed here.
The device check (benchmarks/gpu_check.sh) runs the code itself on 0.11.
"""

import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FOLDERS = ("flam_jax", "benchmarks", "experiments", "data", "demo")
SHIM = ROOT / "flam_jax" / "losses" / "_compat.py"

# A name is refused when it is one of these or lies below one (prefix by whole parts).
REMOVED = {
    "jax.experimental.shard_map": "deprecated since 0.8: jax.shard_map (losses/_compat.py)",
    "jax.experimental.pjit": "deprecated: jax.jit",
    "jax.experimental.maps": "removed (xmap): jax.shard_map or jax.vmap",
    "jax.experimental.host_callback": "removed: jax.pure_callback or jax.debug.callback",
    "jax.experimental.export": "removed: jax.export",
    "jax.experimental.custom_dce": "removed in 0.10",
    "jax.tree_map": "removed: jax.tree.map",
    "jax.tree_leaves": "removed: jax.tree.leaves",
    "jax.tree_flatten": "removed: jax.tree.flatten",
    "jax.tree_unflatten": "removed: jax.tree.unflatten",
    "jax.tree_structure": "removed: jax.tree.structure",
    "jax.tree_transpose": "removed: jax.tree.transpose",
    "jax.tree_util.tree_multimap": "removed: jax.tree.map",
    "jax.xla_computation": "removed: jax.jit(f).lower(...).compiler_ir()",
    "jax.device_put_sharded": "removed in 0.10: jax.device_put with a sharding",
    "jax.device_put_replicated": "removed in 0.10: jax.device_put with a sharding",
    "jax.cloud_tpu_init": "removed in 0.11",
    "jax.core": "internal; 0.10 deprecated and 0.11 removed most of it",
    "jax.interpreters": "internal; 0.10 and 0.11 removed pxla and batching names",
    "jax.lib": "internal (xla_bridge, xla_client)",
    "jaxlib.xla_extension": "internal; 0.10 removed pmap names from it",
    "jax.extend": "unstable internals",
    "jax.ad_checkpoint.checkpoint": "removed in 0.11: jax.checkpoint",
    "jax.ad_checkpoint.remat": "removed in 0.11: jax.checkpoint",
    "jax.numpy.fix": "removed in 0.11: jax.numpy.trunc",
    "jax.lax.pvary": "removed in 0.11",
    "jax.numpy.empty": "0.11 leaves it uninitialised (0.10 gave zeros): jax.numpy.zeros",
    "jax.numpy.empty_like": "0.11 leaves it uninitialised (0.10 gave zeros): jax.numpy.zeros_like",
    "jax.sharding.PmapSharding": "removed in 0.10",
    "jax.sharding.XLACompatibleSharding": "removed: jax.sharding.Sharding",
    "jax.scipy.special.lpmn": "removed",
    "jax.scipy.special.lpmn_values": "removed",
    "jax.scipy.special.sph_harm": "removed",
    "jax.random.shuffle": "removed: jax.random.permutation",
    "jax.abstract_arrays": "removed",
    "jax.linear_util": "removed",
}
# Keyword arguments that were removed: (callee, keyword) -> why.
REMOVED_KEYWORDS = {
    ("jax.numpy.clip", "a"): "removed in 0.10: x",
    ("jax.numpy.clip", "a_min"): "removed in 0.10: min",
    ("jax.numpy.clip", "a_max"): "removed in 0.10: max",
    ("*", "check_rep"): "shard_map's old keyword: check_vma (losses/_compat.py)",
}
MESH_CONTEXT = "the Mesh context manager is deprecated since 0.10.1: with jax.set_mesh(mesh)"


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted module or object it stands for (jax imports only)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    out[a.asname] = a.name
                else:
                    out[a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return {k: v for k, v in out.items() if v.split(".")[0] in ("jax", "jaxlib")}


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def jax_names(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every jax import and every jax attribute chain in ``source``;
    ("line", "with-mesh") for a ``with X.mesh:`` and ("line", "kw:callee:name") for keywords."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found = []

    def resolve(node) -> str | None:
        parts = _dotted(node)
        if parts and parts[0] in aliases:
            return ".".join([aliases[parts[0]], *parts[1:]])
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] in ("jax", "jaxlib")]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in ("jax", "jaxlib")
        ):
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Attribute):  # jax.numpy.empty, and jax.numpy inside it
            name = resolve(node)
            if name:
                found.append((node.lineno, name))
        elif isinstance(node, ast.With):
            for item in node.items:
                parts = _dotted(item.context_expr)
                if parts and parts[-1].lower().endswith("mesh"):
                    found.append((node.lineno, "with-mesh"))
        if isinstance(node, ast.Call):
            callee = resolve(node.func) or "*"
            found += [(node.lineno, f"kw:{callee}:{k.arg}") for k in node.keywords if k.arg]
    return found


def problems_in(source: str) -> list[str]:
    """The refused uses in ``source``, one line each."""
    out = []
    for line, name in jax_names(source):
        if name == "with-mesh":
            out.append(f"{line}: {MESH_CONTEXT}")
        elif name.startswith("kw:"):
            _, callee, keyword = name.split(":")
            why = REMOVED_KEYWORDS.get((callee, keyword)) or REMOVED_KEYWORDS.get(("*", keyword))
            if why:
                out.append(f"{line}: {callee}({keyword}=...): {why}")
        else:
            hit = next((p for p in REMOVED if name == p or name.startswith(p + ".")), None)
            if hit:
                out.append(f"{line}: {name}: {REMOVED[hit]}")
    return out


def code_files() -> list[pathlib.Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py") if p != SHIM)


def test_rules_catch_each_kind_of_use():
    bad = """
import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.shard_map import shard_map
from jax.experimental import pjit
x = jax.tree_map(f, t)
y = jnp.empty((3,))
z = lax.pvary(x, "data")
w = jnp.clip(x, a_min=0)
s = jax.core.get_aval(x)
with mesh:
    pass
with self.mesh:
    pass
jax.shard_map(f, mesh=m, in_specs=(), out_specs=(), check_rep=True)
"""
    found = problems_in(bad)
    for needle in (
        "jax.experimental.shard_map.shard_map",
        "jax.experimental.pjit",
        "jax.tree_map",
        "jax.numpy.empty",
        "jax.lax.pvary",
        "jax.numpy.clip(a_min",
        "jax.core.get_aval",
        "check_rep",
    ):
        assert any(needle in line for line in found), (needle, found)
    assert sum(MESH_CONTEXT in line for line in found) == 2


def test_rules_let_the_current_spellings_through():
    good = """
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils, mesh_utils
x = jax.tree.map(f, t)
y = jnp.zeros((3,)) + jnp.clip(x, min=0)
f = jax.shard_map(g, mesh=m, in_specs=(), out_specs=(), check_vma=True)
with jax.set_mesh(mesh):
    pass
g = jax.checkpoint(h, policy=jax.checkpoint_policies.nothing_saveable)
"""
    assert problems_in(good) == []


@pytest.mark.parametrize("path", code_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_api_missing_from_jax_0_10_or_0_11(path):
    assert problems_in(path.read_text()) == []


def _resolves(name: str) -> bool:
    """Whether ``name`` (a.b.c) is an importable module or an attribute path from one."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_every_jax_name_the_code_uses_exists_here():
    missing = []
    for path in code_files():
        for line, name in jax_names(path.read_text()):
            if name.startswith(("kw:", "with-mesh", "jaxlib")):
                continue
            if not _resolves(name):
                missing.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert missing == []
