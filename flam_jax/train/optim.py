"""The optimiser from ``config.optim``: AdamW, warmup + decay, clipping, groups, accumulation.

Parameters live in a flat dict keyed by path (``audio/layers/0/attn/qkv/kernel``), so
the regexes of ``optim.frozen`` and ``optim.low_lr`` are matched against those names.
"""

import re
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import optax

from flam_jax.config import compile_regex
from flam_jax.errors import ConfigError

TRAIN, LOW_LR, FROZEN = "train", "low_lr", "frozen"


def learning_rate_schedule(optim_config, total_updates: int) -> optax.Schedule:
    """Linear warmup to ``lr`` over ``warmup_steps`` (the first update already uses
    lr/warmup, not 0), then cosine or linear decay towards 0 at ``total_updates``, or
    constant."""
    lr = float(optim_config.lr)
    warmup = max(0, min(int(optim_config.warmup_steps), total_updates))
    decay_steps = max(1, total_updates - warmup)
    kind = optim_config.decay
    if kind not in ("cosine", "linear", "constant"):
        raise ConfigError(f"optim.decay must be cosine, linear or constant, got {kind!r}")

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        progress = jnp.clip((count - warmup) / decay_steps, 0.0, 1.0)
        if kind == "cosine":
            after = 0.5 * lr * (1.0 + jnp.cos(jnp.pi * progress))
        elif kind == "linear":
            after = lr * (1.0 - progress)
        else:
            after = jnp.full_like(progress, lr)
        if warmup == 0:
            return after
        return jnp.where(count < warmup, lr * (count + 1.0) / warmup, after)

    return schedule


def _compile(pattern: str, key: str) -> re.Pattern | None:
    return compile_regex(pattern, f"optim.{key}") if pattern else None


def parameter_groups(optim_config, names) -> dict[str, str]:
    """name -> "train" | "low_lr" | "frozen" (frozen wins over low_lr)."""
    names = list(names)
    frozen = _compile(optim_config.frozen, "frozen")
    low = _compile(optim_config.low_lr, "low_lr")
    for pattern, key in ((frozen, "frozen"), (low, "low_lr")):
        if pattern is not None and not any(pattern.search(name) for name in names):
            # A typo here would silently train everything: say so.
            raise ConfigError(f"optim.{key} regex {pattern.pattern!r} matches no parameter")
    groups = {}
    for name in names:
        if frozen is not None and frozen.search(name):
            groups[name] = FROZEN
        elif low is not None and low.search(name):
            groups[name] = LOW_LR
        else:
            groups[name] = TRAIN
    return groups


def make_optimizer(
    optim_config, params: Mapping[str, object], total_steps: int
) -> tuple[optax.GradientTransformation, Callable]:
    """(transformation over the flat param dict, lr schedule indexed by optimiser update).

    ``total_steps`` counts batches; with ``grad_accum`` = k the optimiser updates every
    k-th batch, so the schedule runs over ``total_steps // k`` updates.
    """
    accum = int(optim_config.grad_accum)
    schedule = learning_rate_schedule(optim_config, max(1, total_steps // accum))

    def adamw(scale: float) -> optax.GradientTransformation:
        lr = schedule if scale == 1.0 else (lambda count: scale * schedule(count))
        # Weight decay on matrices only: biases, norms and scalars (logit_scale) are exempt.
        return optax.adamw(
            lr,
            b1=optim_config.b1,
            b2=optim_config.b2,
            eps=1e-8,
            weight_decay=optim_config.weight_decay,
            mask=lambda tree: {name: getattr(leaf, "ndim", 0) >= 2 for name, leaf in tree.items()},
        )

    groups = parameter_groups(optim_config, params.keys())
    transforms = {
        TRAIN: adamw(1.0),
        LOW_LR: adamw(float(optim_config.low_lr_factor)),
        FROZEN: optax.set_to_zero(),
    }
    used = {g: t for g, t in transforms.items() if g in groups.values()}
    stages = []
    if FROZEN in used:
        # Frozen gradients are zeroed first so they do not count in the clipping norm.
        stages.append(optax.masked(optax.set_to_zero(), {n: g == FROZEN for n, g in groups.items()}))
    if optim_config.clip_norm > 0:
        stages.append(optax.clip_by_global_norm(float(optim_config.clip_norm)))
    stages.append(optax.multi_transform(used, dict(groups)) if len(used) > 1 else next(iter(used.values())))
    tx = optax.chain(*stages) if len(stages) > 1 else stages[0]
    if accum > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accum)
    return tx, schedule
