"""``shard_map`` across jax versions.

jax 0.10.x and 0.11.x both have ``jax.shard_map(f, mesh=, in_specs=, out_specs=,
check_vma=)``; older releases only had ``jax.experimental.shard_map.shard_map`` with
``check_rep``. The losses rely on the varying/invariant checks (they make ``psum``'s
transpose correct), so both paths keep checking on.
"""

from collections.abc import Callable, Sequence

import jax

from flam_jax.errors import InputError

try:
    _shard_map = jax.shard_map
    _CHECK_KW = "check_vma"
except AttributeError:  # pragma: no cover - only on jax < 0.7
    from jax.experimental.shard_map import shard_map as _shard_map

    _CHECK_KW = "check_rep"


def shard_map(f: Callable, *, mesh: jax.sharding.Mesh, in_specs, out_specs) -> Callable:
    """``jax.shard_map`` with replication checking on, on every supported jax."""
    return _shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, **{_CHECK_KW: True})


def axes_tuple(batch_axes: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise a mesh axis name or a sequence of names to a tuple."""
    return (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes)


def axes_size(mesh: jax.sharding.Mesh, batch_axes: tuple[str, ...]) -> int:
    """Number of devices along the given mesh axes together."""
    size = 1
    for name in batch_axes:
        if name not in mesh.shape:
            raise InputError(f"batch axis {name!r} is not an axis of the mesh {tuple(mesh.shape)}")
        size *= mesh.shape[name]
    return size
