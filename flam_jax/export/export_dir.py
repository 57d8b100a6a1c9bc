"""The export directory: what ``FLAM.load`` opens and every exporter writes.

    EXPORT_DIR/
      config.json          {"format": "flam_jax.export", "version": 1,
                            "model": {config.model keys}, "tokenizer": "tokenizer" | null,
                            "source": free text, "untrained": [module, ...] (optional)}
      params.safetensors   float32 weights keyed by dotted nnx path
                           (``audio.layers.0.blocks.1.attn.qkv.kernel``, ``text.pooler.bias``,
                           ``audio.frontend.bn0.mean`` ...): every nnx.Param and BatchStat
      tokenizer/           the tokenizer files (``data.tokenizers.load_tokenizer`` reads them)

The model is rebuilt from ``model`` with ``models.flam.build_model`` and must match the
stored weights exactly (names and shapes), except the top-level modules listed under
``untrained``: a starting point converted from another codebase (``export.from_clap``:
LAION-CLAP has no per-text heads; an HTS-AT checkpoint has only the audio tower) stores
none of their weights. As ``train.init_from`` those stay fresh; ``load_export`` gives them
the model's own initial values (seed 0) and warns, since their outputs mean nothing yet.

An export appears whole or not at all (``staged_export``): it is written into a sibling
folder ``.NAME.partial-<id>`` and only then moved into place, so a failure midway leaves
whatever was at ``EXPORT_DIR`` before untouched (and removes the sibling). Locally the
move is two renames: the old folder aside (``.NAME.old-<id>``), the new one in, then the
old one deleted; a process killed between them leaves both siblings for a person to pick.
On ``gs://`` a folder cannot be renamed, so after the sibling is complete the old export
stops being one (its config.json is deleted first), its objects are deleted, the new ones
are copied in with config.json last, and the sibling is deleted: a reader sees the old
export, then no export ("no config.json"), then the new one, never a mixture; a process
killed meanwhile leaves the complete new export in the sibling. Only an export (or an
empty folder) is ever replaced. The commands refuse a non-empty destination unless
``--force``, before any work (``check_out_dir``).

``export_identity`` names a model by its bytes (params file + model section), so an index
built with it can tell when a folder now holds another model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load, load_file, save, save_file

from flam_jax import paths
from flam_jax.config import base_config
from flam_jax.data.tokenizers import load_tokenizer
from flam_jax.errors import CheckpointError, ConfigError, FlamError, ModelLoadError
from flam_jax.export.weights import set_weights, weight_shapes, weight_values
from flam_jax.jsonfile import read_json
from flam_jax.models.flam import build_model

FORMAT = "flam_jax.export"
VERSION = 1
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"
TOKENIZER_DIR = "tokenizer"


def model_config_dict(model_config) -> dict:
    """The config.model section as a plain dict (ConfigDict or dict in)."""
    return dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)


def save_export(
    out_dir: str,
    weights: dict[str, np.ndarray],
    model_config,
    tokenizer=None,
    source: str = "",
    untrained: Sequence[str] = (),
):
    """Write an export directory (local or remote) from a flat weight dict
    (``export.weights.get_weights``), whole: an export already there is replaced only once
    the new one is complete (``staged_export``). ``untrained``: top-level modules whose
    weights are left out (see the module docstring)."""
    with staged_export(out_dir) as stage:
        write_export_files(stage, weights, model_config, tokenizer, source, untrained)


def _in_modules(name: str, modules: Sequence[str]) -> bool:
    return name.split(".", 1)[0] in modules


def write_export_files(
    out_dir: str,
    weights: dict[str, np.ndarray],
    model_config,
    tokenizer=None,
    source: str = "",
    untrained: Sequence[str] = (),
) -> None:
    """The files of an export, written straight into ``out_dir`` (a staging folder)."""
    weights = {k: v for k, v in weights.items() if not _in_modules(k, untrained)}
    paths.makedirs(out_dir)
    tokenizer_entry = None
    if tokenizer is not None:
        with tempfile.TemporaryDirectory() as folder:  # tokenizers write local files
            tokenizer.save(folder)
            paths.upload_tree(folder, paths.join(out_dir, TOKENIZER_DIR))
        tokenizer_entry = TOKENIZER_DIR
    arrays = {k: np.array(v, order="C") for k, v in weights.items()}  # keeps 0-d scalars 0-d
    write_params(paths.join(out_dir, PARAMS_FILE), arrays, {"format": FORMAT, "version": str(VERSION)})
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_config_dict(model_config),
        "tokenizer": tokenizer_entry,
        "source": source,
    }
    if untrained:
        config["untrained"] = sorted(untrained)
    paths.write_text(paths.join(out_dir, CONFIG_FILE), json.dumps(config, indent=2, sort_keys=True) + "\n")


def is_export(folder: str) -> bool:
    """Whether ``folder`` holds an export's config.json (what may be replaced)."""
    try:
        config = read_json(paths.join(folder, CONFIG_FILE), ModelLoadError, "")
    except ModelLoadError:
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def check_out_dir(out_dir: str, *, force: bool, flag: str = "--out") -> None:
    """Refuse, before any work, an export destination this run must not or cannot write: a
    file, an unwritable place, a non-empty folder without ``force``, or (even with it) a
    non-empty folder that is not an export. An empty folder is fine."""
    paths.require_writable(out_dir, flag, beside=True)
    if not paths.isdir(out_dir) or not paths.listdir(out_dir):
        return
    if not force:
        raise ConfigError(f"{flag} {out_dir} is not empty; pass --force to replace it")
    if not is_export(out_dir):
        raise ConfigError(
            f"{flag} {out_dir} is not empty and not an export directory (no flam_jax {CONFIG_FILE}); "
            "--force replaces only an export: give a new or empty folder"
        )


def _refuse_foreign(target: str) -> None:
    # Checked again at the swap (the commands check first): deleting a non-export folder's
    # files would lose someone's data, so it is never what "replace the export" means.
    if paths.isdir(target) and paths.listdir(target) and not is_export(target):
        raise ConfigError(f"{target} is not empty and not an export directory; it is not replaced")


@contextlib.contextmanager
def staged_export(out_dir: str) -> Iterator[str]:
    """Yield a sibling folder of ``out_dir`` to write an export into; when the block ends
    without an error it replaces ``out_dir`` (see the module docstring for how, locally and
    on gs://); on an error the sibling is deleted and ``out_dir`` left as it was."""
    target = paths.resolve(out_dir)
    if paths.is_remote(target):
        if "/" not in target.split("://", 1)[1]:
            raise ConfigError(f"{out_dir} is a bucket; an export goes into a folder inside it")
        parent, _, name = target.rpartition("/")
    else:
        # A symlinked destination: the folder it points to is replaced, the link kept.
        target = os.path.realpath(target)
        parent, name = os.path.split(target)
    tag = uuid.uuid4().hex[:8]
    stage = paths.join(parent, f".{name}.partial-{tag}")
    # A normal mkdir (not mkdtemp, which makes a 0700 folder) so the export, once renamed into
    # place, has the permissions any folder made here would have.
    paths.makedirs(stage)
    try:
        yield stage
        _refuse_foreign(target)
    except BaseException:
        paths.rmtree(stage)
        raise
    if paths.is_remote(target):
        _replace_remote(stage, target)
    else:
        _replace_local(stage, target, paths.join(parent, f".{name}.old-{tag}"))


def _replace_local(stage: str, target: str, aside: str) -> None:
    # paths.py has no rename because object stores have none; these folders are local.
    if not os.path.exists(target):
        os.rename(stage, target)
        return
    os.rename(target, aside)
    try:
        os.rename(stage, target)
    except BaseException:
        os.rename(aside, target)
        shutil.rmtree(stage, ignore_errors=True)
        raise
    shutil.rmtree(aside)


def _replace_remote(stage: str, target: str) -> None:
    if paths.isdir(target):
        paths.remove(paths.join(target, CONFIG_FILE))  # first: from here on it is not an export
        paths.rmtree(target)
    # config.json last: the folder becomes an export only when every other file is there.
    for rel in sorted(paths.walk_files(stage), key=lambda rel: rel == CONFIG_FILE):
        paths.write_bytes(paths.join(target, rel), paths.read_bytes(paths.join(stage, rel)))
    paths.rmtree(stage)


def export_identity(export_dir: str) -> str:
    """A model's identity: sha256 of its params file (streamed, never held whole) and of
    its config.json model section. Another folder with the same bytes is the same model."""
    config = read_config(export_dir)
    params_path = paths.join(export_dir, PARAMS_FILE)
    if not paths.isfile(params_path):
        raise ModelLoadError(f"{export_dir} has no {PARAMS_FILE}")
    digest = hashlib.sha256()
    for chunk in paths.read_chunks(params_path):
        digest.update(chunk)
    digest.update(b"\0")  # the two parts cannot run into each other
    digest.update(json.dumps(config["model"], sort_keys=True).encode("utf-8"))
    return digest.hexdigest()


def write_params(path: str, arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """A safetensors file, written whole (a local file through a renamed temporary)."""
    if paths.is_remote(path):
        paths.write_bytes(path, save(arrays, metadata=metadata))
        return
    tmp = path + ".tmp"
    save_file(arrays, tmp, metadata=metadata)
    os.replace(tmp, path)


def read_params(path: str, error: type[FlamError] = ModelLoadError) -> dict[str, np.ndarray]:
    """A safetensors file (local or remote) as numpy arrays; missing or damaged → ``error``."""
    if not paths.isfile(path):
        raise error(f"{path} not found")
    try:
        return load(paths.read_bytes(path)) if paths.is_remote(path) else load_file(path)
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise error(f"cannot read {path}: {err}") from err


def read_config(export_dir: str) -> dict:
    path = paths.join(export_dir, CONFIG_FILE)
    if not paths.isdir(export_dir):
        raise ModelLoadError(f"export directory not found: {export_dir}")
    config = read_json(path, ModelLoadError, f"{export_dir} is not an export directory (no {CONFIG_FILE})")
    if not isinstance(config, dict) or config.get("format") != FORMAT or "model" not in config:
        raise ModelLoadError(f"{path} is not a flam_jax export config")
    if config.get("version") != VERSION:
        raise ModelLoadError(f"{path}: export version {config.get('version')} is not supported ({VERSION})")
    return config


def full_model_config(model_section: dict, where: str):
    """The stored model section over today's defaults; unknown keys and bad values refused."""
    cfg = base_config().model
    for key, value in model_section.items():
        if key not in cfg:
            raise ModelLoadError(f"{where}: unknown model key {key!r}")
        try:
            cfg[key] = value
        except (TypeError, ValueError) as err:
            raise ModelLoadError(f"{where}: bad model.{key}={value!r}: {err}") from err
    return cfg


def _materialise_rng_state(model: nnx.Module, seed: int = 0) -> None:
    """Give an ``nnx.eval_shape`` model concrete RNG keys and counters."""
    state = nnx.state(model, nnx.RngState)
    flat = nnx.to_flat_state(state)
    for i, (_, var) in enumerate(flat):
        if isinstance(var, nnx.RngKey):
            var.set_value(jax.random.key(seed + i))
        else:
            value = var.get_value()
            var.set_value(jnp.zeros(value.shape, value.dtype))
    nnx.update(model, nnx.from_flat_state(flat))


def untrained_modules(config: dict, where: str) -> tuple[str, ...]:
    """The export's ``untrained`` list, checked to be a list of names (``load_export``
    checks that they name the model's modules)."""
    modules = config.get("untrained", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) and m for m in modules):
        raise ModelLoadError(f"{where}: 'untrained' must be a list of module names, got {modules!r}")
    return tuple(modules)


def initial_weights(model_config, modules: Sequence[str], seed: int = 0) -> dict[str, np.ndarray]:
    """The model's own initial values of the named top-level modules. Only their
    initialisers survive in the compiled program (the rest is dead code)."""

    def init():
        model = build_model(model_config, rngs=nnx.Rngs(seed))
        return {k: v for k, v in weight_values(model).items() if _in_modules(k, modules)}

    return {k: np.asarray(v) for k, v in jax.jit(init)().items()}


def load_export(export_dir: str):
    """(model, model_config, tokenizer or None, untrained modules) from an export directory
    (local or remote)."""
    config = read_config(export_dir)
    where = paths.join(export_dir, CONFIG_FILE)
    model_cfg = full_model_config(config["model"], where)
    untrained = untrained_modules(config, where)
    params_path = paths.join(export_dir, PARAMS_FILE)
    if not paths.isfile(params_path):
        raise ModelLoadError(f"{export_dir} has no {PARAMS_FILE}")
    weights = read_params(params_path)
    try:
        model = nnx.eval_shape(lambda: build_model(model_cfg, rngs=nnx.Rngs(0)))
        if untrained:
            modules = {name.split(".", 1)[0] for name in weight_shapes(model)}
            unknown = sorted(set(untrained) - modules)
            if unknown:
                raise ModelLoadError(f"{where}: untrained {unknown[0]!r} is not a module of this model")
            stored = sorted(k for k in weights if _in_modules(k, untrained))
            if stored:
                raise ModelLoadError(f"{params_path} holds {stored[0]}, of a module listed as untrained")
            weights = {**weights, **initial_weights(model_cfg, untrained)}
            warnings.warn(
                f"{export_dir}: {', '.join(untrained)} never trained (a converted starting point, "
                f"{config.get('source') or 'no source named'}); use it as train.init_from"
                + ("; frame scores need method='cosine'" if "audio" not in untrained else ""),
                stacklevel=2,
            )
        set_weights(model, weights, what=params_path)
    except CheckpointError as err:
        raise ModelLoadError(str(err)) from err
    except FlamError as err:  # a bad config value (ConfigError) in the stored model section
        raise ModelLoadError(f"{export_dir}: {err}") from err
    _materialise_rng_state(model)
    tokenizer = None
    if config.get("tokenizer"):
        tokenizer = load_tokenizer(paths.join(export_dir, config["tokenizer"]), model_cfg.context_length)
    return model, model_cfg, tokenizer, untrained
