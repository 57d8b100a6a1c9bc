"""The experiment config schema, loading ``experiments/X.py[:variant]`` and validation.

Every key an experiment may set is declared in ``base_config()`` with its default and
type. Experiment files start from it and change values; they cannot invent keys, so a
typo in a file or on the command line is an error instead of a silently ignored
setting. The resolved config is written next to the run as JSON.
"""

import importlib.util
import json
import os
import re
from typing import Any

import ml_collections

from flam_jax import paths
from flam_jax.data import mixing
from flam_jax.errors import ConfigError
from flam_jax.models.configs import remat_policy

ConfigDict = ml_collections.ConfigDict


def base_config() -> ConfigDict:
    """All known keys with their defaults (FLAM paper values where the spec gives them)."""
    c = ConfigDict()
    c.name = "flam"
    c.seed = 0

    c.model = ConfigDict()
    c.model.audio_size = "base"  # a key of flam_jax.models.configs.HTSAT_CONFIGS
    c.model.text_tower = "roberta-base"  # a key of flam_jax.models.configs.TEXT_CONFIGS
    c.model.text_weights = ""  # local HF directory with pretrained text weights; "" = random
    c.model.tokenizer = ""  # tokenizer file or directory for training; "" = model.text_weights
    c.model.embed_dim = 512
    c.model.per_text_scale = True  # ablation switch: alpha = exp(MLP) vs one learned scalar
    c.model.per_text_bias = True  # ablation switch: beta = MLP vs one learned scalar
    c.model.compute_dtype = "float32"  # activations; parameters are always float32
    c.model.remat = "none"  # activation checkpointing of both towers: models.configs.REMAT_POLICIES
    c.model.context_length = 77

    c.data = ConfigDict()
    c.data.dir = ""  # TFDS data_dir holding the built datasets
    c.data.sed_clips = 8  # Na: mixtures per SED batch (global, across devices)
    c.data.texts_per_clip = 5  # N: Nt <= N * Na texts per SED batch
    c.data.global_batch = 8  # audio-caption pairs per global batch
    # Self-contained SED blocks (texts drawn from the block's own clips) per global SED
    # batch; 0 = one per device. Fixing it makes the loss independent of the device count.
    c.data.sed_groups = 0
    c.data.frame_label_min_overlap = 0.5  # fraction of a frame an event must cover
    c.data.workers = 0  # Grain worker processes per host for the SED pipeline; 0 = in-process
    c.data.global_workers = -1  # the same for the global pipeline; -1 = data.workers
    c.data.max_decode_errors = 100
    c.data.sed_dataset = "clips"  # builder kind[/config] the simulator draws clips from
    c.data.global_dataset = "clips"  # builder kind[/config] of the global batch's pairs
    # Several datasets drawn by weight, "DATASET:WEIGHT[:TAG|TAG]; ..." (data/mixing.py); when
    # set they replace sed_dataset / global_dataset (the hook reads the first SED source).
    c.data.sed_sources = ""
    c.data.global_sources = ""
    c.data.split = "train"  # split both training pipelines read
    c.data.max_events = 10  # N ~ U(1, max_events) events per simulated mixture
    # Probability that a training mixture or pair is low-passed at 4-11 kHz (data/augment.py);
    # 0 = the spec's recipe.
    c.data.band_limit = 0.0
    # "host": each host draws a mixture's events from its own shard of the epoch's clips
    # (reads ~1/process_count of the corpus); "corpus": from every clip (data/sampling.py).
    c.data.sampling = "host"
    c.data.background_tags = "ambiance,ambience"  # tags (comma-separated) marking backgrounds
    c.data.pool_cache_mb = 256.0  # whole decoded clips cached per process (each Grain worker)
    c.data.prefetch = 2  # batches buffered per Grain worker

    c.loss = ConfigDict()
    c.loss.w_clip = 1.0
    c.loss.w_sed = 200.0
    c.loss.w_prior = 1.0
    c.loss.reference_normalizer = False  # True reproduces openflam's per-block means
    c.loss.global_loss = "softmax"  # "softmax" (InfoNCE) or "sigmoid" (SigLIP-style)
    c.loss.logit_scale_max = 0.0  # clamp of tau = exp(logit_scale); 0 = none (openflam)
    c.loss.sigmoid_bias = -10.0  # bias of the "sigmoid" global loss (SigLIP's init)
    c.loss.framewise_scale = 1.0  # global frame-wise logit scale (fixed, spec §5)
    c.loss.framewise_bias = 0.0  # global frame-wise logit bias (fixed, spec §5)

    c.optim = ConfigDict()
    c.optim.lr = 1e-4
    c.optim.warmup_steps = 3200
    c.optim.decay = "cosine"  # "cosine", "linear" or "constant" after warmup
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 0.0  # 0 disables global-norm clipping
    c.optim.grad_accum = 1
    c.optim.frozen = ""  # regex over parameter paths that are not trained
    c.optim.low_lr = ""  # regex over parameter paths trained at lr * low_lr_factor
    c.optim.low_lr_factor = 0.1

    c.train = ConfigDict()
    c.train.steps = 1000
    c.train.log_every = 10
    c.train.eval_every = 0  # 0 disables the validation hook
    c.train.eval_split = "validation"  # split of data.sed_dataset the hook's mixtures come from
    c.train.eval_mixtures = 32  # fixed simulated mixtures scored by the hook (frame AUROC)
    c.train.ckpt_every = 500
    c.train.ckpt_keep = 3
    c.train.ckpt_keep_every = 0  # also keep every K-th step; 0 = none
    c.train.init_from = ""  # export directory to initialise parameters from
    # regex over parameter names (a/b) left at their fresh values by init_from, e.g. the
    # heads of a FLAM-Global export that an ablation replaces by shared terms
    c.train.init_exclude = ""
    # regex: only the parameters it matches are loaded by init_from (e.g. "^audio/": the
    # audio tower of a converted checkpoint); WORKDIR/init_report.json lists what was taken
    c.train.init_include = ""
    # Checkpoint step to resume from; -1 = the latest complete one. An earlier step (the
    # latest is damaged) moves the later ones to checkpoints/superseded/; a one-off: drop it after.
    c.train.resume_step = -1
    # Persistent compilation cache (a restart reuses the compiled step): "" = WORKDIR/
    # compilation_cache, "none" = off, anything else = that directory (local or gs://).
    c.train.compile_cache = ""

    c.mesh = ConfigDict()
    c.mesh.data = -1  # -1 = all devices not used by the other axes
    c.mesh.fsdp = 1
    # Explicit partition rules, "regex=spec;..." (spec: per-dim axes "fsdp,none" or
    # "replicate"); first match wins. Unmatched leaves: see shard_min_size.
    c.mesh.rules = ""
    # Leaves with fewer elements are replicated; larger ones are split over 'fsdp' along
    # their largest evenly divisible dimension.
    c.mesh.shard_min_size = 2**16
    return c


def _schema_errors(config: ConfigDict, schema: ConfigDict, prefix: str = "") -> list[str]:
    errors = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if key not in schema:
            errors.append(f"unknown config key '{path}'")
            continue
        expected = schema[key]
        if isinstance(expected, ConfigDict):
            if not isinstance(value, ConfigDict):
                errors.append(f"config key '{path}' must be a section, got {value!r}")
            else:
                errors.extend(_schema_errors(value, expected, path + "."))
        elif not _type_ok(value, expected):
            errors.append(
                f"config key '{path}' must be {type(expected).__name__}, got {type(value).__name__} {value!r}"
            )
    return errors


def _type_ok(value: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return type(value) is type(expected)
    if isinstance(expected, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(expected))


def validate(config: ConfigDict) -> ConfigDict:
    """Check keys and types against the schema and the values against each other."""
    errors = _schema_errors(config, base_config())
    if errors:
        raise ConfigError(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    checks = [
        (config.data.sed_clips > 0, "data.sed_clips must be positive"),
        (config.data.texts_per_clip > 0, "data.texts_per_clip must be positive"),
        (config.data.global_batch >= 0, "data.global_batch must be >= 0"),
        (0 < config.data.frame_label_min_overlap <= 1, "data.frame_label_min_overlap must be in (0, 1]"),
        (config.data.max_events >= 1, "data.max_events must be >= 1"),
        (0.0 <= config.data.band_limit <= 1.0, "data.band_limit must be in [0, 1]"),
        (config.data.max_decode_errors >= 0, "data.max_decode_errors must be >= 0"),
        (config.data.workers >= 0, "data.workers must be >= 0"),
        (config.train.init_from or not config.train.init_exclude, "train.init_exclude needs train.init_from"),
        (config.train.init_from or not config.train.init_include, "train.init_include needs train.init_from"),
        (config.data.global_workers >= -1, "data.global_workers must be >= 0, or -1 for data.workers"),
        (config.data.prefetch >= 1, "data.prefetch must be >= 1"),
        (config.data.pool_cache_mb >= 0, "data.pool_cache_mb must be >= 0"),
        (config.data.sampling in ("host", "corpus"), "data.sampling must be host or corpus"),
        (config.train.steps > 0, "train.steps must be positive"),
        (config.optim.lr > 0, "optim.lr must be positive"),
        (config.optim.grad_accum >= 1, "optim.grad_accum must be >= 1"),
        (
            config.optim.decay in ("cosine", "linear", "constant"),
            "optim.decay must be cosine, linear or constant",
        ),
        (config.loss.global_loss in ("softmax", "sigmoid"), "loss.global_loss must be softmax or sigmoid"),
        (
            config.model.compute_dtype in ("float32", "bfloat16"),
            "model.compute_dtype must be float32 or bfloat16",
        ),
        (config.mesh.data == -1 or config.mesh.data > 0, "mesh.data must be -1 or positive"),
        (config.mesh.fsdp == -1 or config.mesh.fsdp > 0, "mesh.fsdp must be -1 or positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    remat_policy(config.model.remat)
    for stream in ("sed", "global"):
        mixing.parse_sources(config.data[f"{stream}_sources"], f"data.{stream}_sources")
    return config


def compile_regex(pattern: str, key: str) -> re.Pattern:
    """The regex of config key ``key`` (``optim.frozen``, ``mesh.rules``, ...); a bad one is a
    one-line ConfigError naming the key."""
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"{key}: bad regex {pattern!r}: {err}") from None


def split_spec(spec: str) -> tuple[str, str | None]:
    """``experiments/x.py:variant`` -> (path, variant)."""
    path, sep, variant = spec.partition(":")
    return path, (variant if sep else None)


def load_experiment(spec: str) -> ConfigDict:
    """Run ``get_config(variant)`` of an experiment file (no overrides, not validated)."""
    path, variant = split_spec(spec)
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location("flam_experiment", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # the file is user code; report it in one line
        raise ConfigError(f"cannot load config file {path}: {type(err).__name__}: {err}") from err
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} has no get_config(arg) function")
    try:
        config = module.get_config(variant) if variant is not None else module.get_config()
    except (ValueError, KeyError) as err:
        raise ConfigError(f"{path}: get_config({variant!r}) failed: {err}") from err
    if not isinstance(config, ConfigDict):
        raise ConfigError(f"{path}: get_config must return an ml_collections.ConfigDict")
    return config


def has_path(config: ConfigDict, dotted: str) -> bool:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


def apply_assignments(config: ConfigDict, assignments) -> None:
    """Set ``["a.b=value", ...]`` in place, each value parsed as the key's current type
    (``True``/anything else for booleans); for scripts without absl's ``--config.*``."""
    for item in assignments:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else value == "True"


def write_resolved(config: ConfigDict, workdir: str) -> str:
    """Write the resolved config to ``workdir/config.json`` (local or remote); returns the path."""
    paths.makedirs(workdir)
    path = paths.join(workdir, "config.json")
    paths.write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    return path
