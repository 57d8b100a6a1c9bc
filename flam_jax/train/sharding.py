"""The device mesh, parameter partition rules and batch sharding.

The mesh has two axes, ('data', 'fsdp'). Batches are split over both (every device
holds its own slice of examples); fp32 master parameters and optimiser state are split
over 'fsdp' only. The train step gathers whole weights for the forward and backward
passes and reduce-scatters the gradients back onto the shards (trainer.Trainer).

Why whole weights: ``loss_fn`` constrains the parameters to replicated, so each device
forms its own partial weight gradients. Left free, XLA's propagation formed the
FSDP-sharded weight gradients by gathering activations of the global batch instead: on
v5e:16x16 it did so for RoBERTa's feed-forward activations of all 2,560 SED texts, 4.1×
the FLOPs per example and 17.1 GiB per chip (benchmarks/README.md, "tpu_compile").
``tests/test_train_step.py`` (data 2 × fsdp 4) fails without the constraint. The cost is
whole fp32 weights and gradients on every device, ≈ 1.5 GiB for flam_paper's 195 M
parameters; a much larger model would want per-layer gathers instead.

``sed_groups`` (the number of self-contained SED blocks, ``data.sed_groups``) lives here:
the objective, the trainer's data iterators (``train.data``) and ``train.aot`` all need it.
"""

import math
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flam_jax.config import compile_regex
from flam_jax.errors import ConfigError, DataError
from flam_jax.models.names import param_name

MESH_AXES = ("data", "fsdp")
# Examples are spread over every device: a leading batch dimension uses both axes.
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int]:
    """Resolve ``mesh.data`` / ``mesh.fsdp`` (-1 = the rest) against the device count."""
    sizes = {"data": int(mesh_config.data), "fsdp": int(mesh_config.fsdp)}
    free = [axis for axis, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ConfigError("at most one of mesh.data, mesh.fsdp may be -1")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % fixed:
            raise ConfigError(f"mesh: {num_devices} devices are not divisible by the fixed axes ({fixed})")
        sizes[free[0]] = num_devices // fixed
    if sizes["data"] * sizes["fsdp"] != num_devices:
        raise ConfigError(
            f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} does not match the {num_devices} devices"
        )
    return sizes["data"], sizes["fsdp"]


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'fsdp') mesh over all (or the given) devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    try:
        # Topology-aware on TPU/GPU (keeps 'fsdp' neighbours on fast links).
        grid = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, MESH_AXES)


def batch_shards(mesh: Mesh) -> int:
    """How many slices a batch's leading dimension is split into."""
    return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def parse_rules(text: str) -> list[tuple[re.Pattern, PartitionSpec]]:
    """``"regex=spec;regex=spec"`` -> rules. A spec is comma-separated per-dimension
    axes (``fsdp``, ``data`` or ``none``), or ``replicate`` for no sharding."""
    rules = []
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        pattern, sep, spec = entry.rpartition("=")
        if not sep or not pattern:
            raise ConfigError(f"mesh.rules entry {entry!r} is not 'regex=spec'")
        regex = compile_regex(pattern, "mesh.rules")
        if spec.strip() == "replicate":
            rules.append((regex, PartitionSpec()))
            continue
        dims = []
        for axis in spec.split(","):
            axis = axis.strip()
            if axis not in (*MESH_AXES, "none"):
                raise ConfigError(f"mesh.rules: unknown axis {axis!r} in {entry!r}")
            dims.append(None if axis == "none" else axis)
        rules.append((regex, PartitionSpec(*dims)))
    return rules


def leaf_spec(
    path: str,
    shape: tuple[int, ...],
    *,
    fsdp: int,
    rules: list[tuple[re.Pattern, PartitionSpec]],
    min_size: int,
) -> PartitionSpec:
    """The PartitionSpec of one parameter (or optimiser-state leaf) from its path and shape.

    Explicit rules win (first match); otherwise tensors under ``min_size`` elements are
    replicated and larger ones are split over 'fsdp' along their largest dimension that
    divides evenly.
    """
    for regex, spec in rules:
        if regex.search(path):
            if len(spec) > len(shape):
                raise ConfigError(f"mesh.rules: spec {spec} has more dims than {path} {shape}")
            for dim, axis in zip(shape, spec, strict=False):
                if axis is not None and dim % (fsdp if axis == "fsdp" else 1):
                    raise ConfigError(f"mesh.rules: {path} dim {dim} is not divisible for {spec}")
            return spec
    if fsdp == 1 or math.prod(shape) < min_size:
        return PartitionSpec()
    by_size = sorted(range(len(shape)), key=lambda d: (-shape[d], d))
    for dim in by_size:
        if shape[dim] % fsdp == 0:
            return PartitionSpec(*([None] * dim), "fsdp")
    return PartitionSpec()


def path_name(path) -> str:
    """A pytree key path as ``a/b/0/c`` (what rules and optimiser groups match against)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return param_name(parts)


def tree_shardings(tree, mesh: Mesh, mesh_config):
    """NamedShardings for every leaf of an (abstract) state tree, from the rules."""
    rules = parse_rules(mesh_config.rules)
    fsdp = mesh.shape["fsdp"]

    def one(path, leaf):
        spec = leaf_spec(
            path_name(path), tuple(leaf.shape), fsdp=fsdp, rules=rules, min_size=mesh_config.shard_min_size
        )
        return NamedSharding(mesh, spec)

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading dimension over every device, the rest whole."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(host_batch, mesh: Mesh):
    """Host-local numpy arrays (this process's rows) -> global sharded jax.Arrays.

    Every process passes the rows for its own devices, in process order; the global
    leading dimension is the sum over processes.
    """
    shards = batch_shards(mesh)
    processes = jax.process_count()

    def one(path, local):
        local = np.asarray(local)
        rows = local.shape[0] * processes
        if rows % shards:
            raise DataError(
                f"batch array '{path_name(path)}' has {rows} rows, not divisible by the {shards} devices"
            )
        sharding = batch_sharding(mesh, local.ndim)
        return jax.make_array_from_process_local_data(sharding, local, (rows, *local.shape[1:]))

    return jax.tree_util.tree_map_with_path(one, host_batch)


def sed_groups(config, mesh: Mesh) -> int:
    """G, the SED batch's self-contained device blocks: ``data.sed_groups``, or one block per
    device when it is 0."""
    shards = batch_shards(mesh)
    groups = int(config.data.sed_groups) or shards
    if groups % shards:
        raise ConfigError(f"data.sed_groups={groups} must be a multiple of the {shards} devices")
    if config.data.sed_clips % groups:
        raise ConfigError(f"data.sed_clips={config.data.sed_clips} must split into {groups} SED groups")
    return groups
