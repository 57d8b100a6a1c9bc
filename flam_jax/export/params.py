"""A training workdir → an export directory, parameters only (``flam-export``).

Reads ``DIR/config.json`` (the resolved training config) and the latest complete Orbax
step under ``DIR/checkpoints`` (or ``--step``). Only ``params`` and ``extra`` (BatchNorm
statistics) are restored — never the optimiser state — as host numpy arrays, so any
device count works. Writes the format of ``export.export_dir`` (what the openflam
converter writes too): config.json, params.safetensors (float32, or bfloat16 with
``--dtype``; loading casts back to float32), the tokenizer files, and with
``--stablehlo`` the ``jax.export`` artefacts of ``export.stablehlo``.

The destination is checked before anything is read (``export_dir.check_out_dir``): a file
or an unwritable place is refused, and so is a non-empty folder unless it is to be
replaced (``replace``; flam-export's ``--force``). Everything, StableHLO included, is
written into a sibling folder first and moved into place at the end
(``export_dir.staged_export``), so a failed export leaves the old one as it was.
"""

from __future__ import annotations

import jax
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

from flam_jax import paths
from flam_jax.data.tokenizers import load_tokenizer
from flam_jax.errors import CheckpointError, ConfigError, FlamError, ModelLoadError
from flam_jax.export.export_dir import check_out_dir, full_model_config, staged_export, write_export_files
from flam_jax.export.stablehlo import export_stablehlo
from flam_jax.export.weights import set_weights, weight_shapes
from flam_jax.jsonfile import read_json
from flam_jax.models.flam import build_model
from flam_jax.models.names import export_name

DTYPES = ("float32", "bfloat16")


def checkpoint_steps(workdir: str) -> list[int]:
    """Complete steps under ``workdir/checkpoints`` (Orbax renames a step's temporary dir when done)."""
    root = paths.join(workdir, "checkpoints")
    if not paths.isdir(root):
        return []
    steps = []
    for name in paths.listdir(root):
        if name.isdigit() and paths.isdir(paths.join(root, name, "state")):
            steps.append(int(name))
    return sorted(steps)


def read_training_config(workdir: str) -> dict:
    path = paths.join(workdir, "config.json")
    if not paths.isdir(workdir):
        raise CheckpointError(f"training workdir not found: {workdir}")
    config = read_json(path, CheckpointError, f"{workdir} is not a training workdir (no config.json)")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{path} has no model section")
    return config


def restore_weights(state_dir: str) -> dict[str, np.ndarray]:
    """{dotted name: numpy array} of the params and extra collections of a saved TrainState."""
    # Orbax reads a relative path's metadata as missing (a TypeError deep inside).
    state_dir = paths.resolve(state_dir)
    try:
        # The handler, not a Checkpointer: the item folder has no step metadata of its own,
        # and a Checkpointer warns about that on every read.
        handler = ocp.PyTreeCheckpointHandler()
        tree = handler.metadata(epath.Path(state_dir)).tree
        wanted = {key: dict(tree[key]) for key in ("params", "extra") if key in tree}
        if "params" not in wanted:
            raise CheckpointError(f"checkpoint {state_dir} has no params")
        restore_args = jax_tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
        restored = handler.restore(
            epath.Path(state_dir),
            args=ocp.args.PyTreeRestore(item=wanted, restore_args=restore_args, partial_restore=True),
        )
    except CheckpointError:
        raise
    except Exception as err:  # Orbax/tensorstore raise many types for a damaged step
        raise CheckpointError(
            f"checkpoint {state_dir} cannot be read: {type(err).__name__}: {str(err)[:300]}"
        ) from err
    weights = {}
    for collection in restored.values():
        for key, value in collection.items():
            weights[export_name(key)] = np.asarray(value)
    return weights


def jax_tree_map(fn, tree):
    return jax.tree_util.tree_map(fn, tree, is_leaf=lambda x: not isinstance(x, dict))


def export_workdir(
    workdir: str,
    out_dir: str,
    *,
    step: int | None = None,
    dtype: str = "float32",
    stablehlo: bool = False,
    platforms: tuple[str, ...] | None = None,
    replace: bool = True,
) -> dict:
    """Write an export directory from a training workdir; returns a summary dict.

    ``replace``: an export already at ``out_dir`` is replaced once the new one is complete;
    False refuses a non-empty ``out_dir`` before any work (flam-export without ``--force``).
    """
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    check_out_dir(out_dir, force=replace)
    config = read_training_config(workdir)
    steps = checkpoint_steps(workdir)
    if not steps:
        raise CheckpointError(f"{workdir} has no complete checkpoint under checkpoints/")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise CheckpointError(f"{workdir} has no checkpoint at step {step} (have {steps})")
    try:
        model_cfg = full_model_config(config["model"], paths.join(workdir, "config.json"))
    except ModelLoadError as err:
        raise CheckpointError(str(err)) from err
    stored = restore_weights(paths.join(workdir, "checkpoints", str(step), "state"))
    model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))
    names = weight_shapes(model)
    weights = {k: v for k, v in stored.items() if k in names}  # drop non-weight extras, if any
    set_weights(model, weights, what=f"checkpoint step {step}")  # strict names and shapes
    if dtype == "bfloat16":
        weights = {k: v.astype(ml_dtypes.bfloat16) for k, v in weights.items()}
    else:
        weights = {k: v.astype(np.float32) for k, v in weights.items()}
    tokenizer = None
    tokenizer_dir = model_cfg.get("tokenizer") or model_cfg.get("text_weights")
    if tokenizer_dir:
        try:
            tokenizer = load_tokenizer(tokenizer_dir, model_cfg.context_length)
        except FlamError as err:
            raise CheckpointError(f"tokenizer of {workdir} ({tokenizer_dir}): {err}") from err
    # The export is self-contained: paths into the training machine's file system go.
    model_cfg.text_weights = ""
    model_cfg.tokenizer = ""
    source = f"flam-export {paths.resolve(workdir)} step {step}"
    with staged_export(out_dir) as stage:
        write_export_files(stage, weights, model_cfg, tokenizer, source=source)
        written = export_stablehlo(stage, platforms=platforms) if stablehlo else []
    files = [paths.join(out_dir, f[len(stage) + 1 :]) for f in written]  # where they are now
    return {
        "step": step,
        "weights": len(weights),
        "dtype": dtype,
        "tokenizer": tokenizer is not None,
        "stablehlo": files,
    }
