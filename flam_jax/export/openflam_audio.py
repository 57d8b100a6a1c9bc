"""openflam's ``audio_branch.*`` (HTS-AT, PyTorch layout) -> our HTSAT's nnx state.

``convert_htsat(state_dict, cfg)`` returns a nested pure dict shaped like
``nnx.state(HTSAT(cfg))`` restricted to Param and BatchStat (``load_htsat`` applies it).
Rules (FLAM_SPEC §11): Linear kernel = W^T; Conv OIHW -> HWIO; LayerNorm weight -> scale;
fused qkv W^T -> (C, 3, heads, head_dim), proj W^T -> (heads, head_dim, C); bn0 running
statistics -> BatchStat, num_batches_tracked dropped. Buffers that we recompute (STFT
kernels, mel matrix, relative position index, shift masks) are checked against the stored
ones, and any disagreement, missing key, unexpected key or wrong shape is a CheckpointError
naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flam_jax.audio import frontend
from flam_jax.errors import CheckpointError
from flam_jax.models import htsat as htsat_lib
from flam_jax.models.configs import HTSAT_CONFIGS, HTSATConfig
from flam_jax.models.htsat import HTSAT
from flam_jax.models.names import param_name

PREFIX = "audio_branch."
_DROPPED = ("bn0.num_batches_tracked",)


class _Reader:
    """Takes tensors out of a state dict by key, checking shapes and recording what was used."""

    def __init__(self, state: Mapping[str, np.ndarray], prefix: str):
        self.state, self.prefix = state, prefix
        self.used: set[str] = set()
        self.missing: list[str] = []

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        full = self.prefix + key
        if full not in self.state:
            self.missing.append(full)
            return None
        self.used.add(full)
        value = np.asarray(self.state[full])
        if tuple(value.shape) != tuple(shape):
            raise CheckpointError(f"{full} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        return value

    def check(self, key: str, *candidates: np.ndarray, exact: bool = False) -> int | None:
        """The stored buffer must equal one of the ``candidates`` we recompute (to float
        tolerance unless exact); returns the index of the one it equals."""
        stored = self.get(key, candidates[0].shape)
        if stored is None:
            return None
        for index, expected in enumerate(candidates):
            if exact:
                ok = np.array_equal(stored, expected)
            else:
                eps = np.finfo(stored.dtype).eps if np.issubdtype(stored.dtype, np.floating) else 0.0
                atol = max(1e-6, 8 * eps) * max(1.0, float(np.abs(expected).max()))
                ok = np.allclose(stored.astype(np.float64), expected, rtol=0.0, atol=atol)
            if ok:
                return index
        raise CheckpointError(
            f"{self.prefix + key} disagrees with the recomputed buffer; the checkpoint is not "
            "the HTS-AT front end/geometry this model implements"
        )


def _f32(x: np.ndarray | None) -> np.ndarray | None:
    return None if x is None else np.ascontiguousarray(x, dtype=np.float32)


def _linear(read: _Reader, key: str, n_in: int, n_out: int, bias: bool = True) -> dict:
    weight = read.get(f"{key}.weight", (n_out, n_in))
    out = {"kernel": _f32(None if weight is None else weight.T)}
    if bias:
        out["bias"] = _f32(read.get(f"{key}.bias", (n_out,)))
    return out


def _layer_norm(read: _Reader, key: str, dim: int) -> dict:
    return {"scale": _f32(read.get(f"{key}.weight", (dim,))), "bias": _f32(read.get(f"{key}.bias", (dim,)))}


def _attention(read: _Reader, key: str, dim: int, heads: int, window: int) -> dict:
    head_dim = dim // heads
    qkv_w = read.get(f"{key}.qkv.weight", (3 * dim, dim))
    qkv_b = read.get(f"{key}.qkv.bias", (3 * dim,))
    proj_w = read.get(f"{key}.proj.weight", (dim, dim))
    read.check(f"{key}.relative_position_index", htsat_lib.relative_position_index(window), exact=True)
    return {
        # Output index s*C + h*d + i of the fused Linear is (s, h, i): a plain reshape.
        "qkv": {
            "kernel": _f32(None if qkv_w is None else qkv_w.T.reshape(dim, 3, heads, head_dim)),
            "bias": _f32(None if qkv_b is None else qkv_b.reshape(3, heads, head_dim)),
        },
        "proj": {
            "kernel": _f32(None if proj_w is None else proj_w.T.reshape(heads, head_dim, dim)),
            "bias": _f32(read.get(f"{key}.proj.bias", (dim,))),
        },
        "relative_position_bias_table": _f32(
            read.get(f"{key}.relative_position_bias_table", ((2 * window - 1) ** 2, heads))
        ),
    }


def convert_htsat(
    state: Mapping[str, np.ndarray],
    cfg: HTSATConfig,
    *,
    prefix: str = PREFIX,
    mel_sample_rates: tuple[int, ...] = (frontend.SAMPLE_RATE,),
) -> tuple[dict, set[str]]:
    """Map ``prefix``-keyed numpy tensors to HTSAT's Param/BatchStat pure dict.

    Returns (nested dict, keys used). Keys outside ``prefix`` are ignored; keys under it
    that were not used (or missing ones) raise a CheckpointError listing them. The stored
    mel filterbank must be the one of a rate in ``mel_sample_rates``: the original HTS-AT
    was trained at 32 kHz, whose 64 bands over 50 Hz–14 kHz are the same bands our 48 kHz
    front end computes (LAION-CLAP starts from it the same way); ours is what is used.
    """
    read = _Reader(state, prefix)
    real, imag = frontend.dft_kernels()
    read.check("spectrogram_extractor.stft.conv_real.weight", real[:, None, :])
    read.check("spectrogram_extractor.stft.conv_imag.weight", imag[:, None, :])
    _check_mel(read, mel_sample_rates)
    for key in _DROPPED:
        if prefix + key in state:
            read.used.add(prefix + key)
    bins = frontend.N_MELS
    out: dict = {
        "frontend": {
            "bn0": {
                "scale": _f32(read.get("bn0.weight", (bins,))),
                "bias": _f32(read.get("bn0.bias", (bins,))),
                "mean": _f32(read.get("bn0.running_mean", (bins,))),
                "var": _f32(read.get("bn0.running_var", (bins,))),
            }
        }
    }
    c0, p = cfg.embed_dim, cfg.patch_size
    conv_w = read.get("patch_embed.proj.weight", (c0, 1, p, p))
    out["patch_embed"] = {
        "proj": {
            "kernel": _f32(None if conv_w is None else conv_w.transpose(2, 3, 1, 0)),
            "bias": _f32(read.get("patch_embed.proj.bias", (c0,))),
        },
        "norm": _layer_norm(read, "patch_embed.norm", c0),
    }
    layers = {}
    for s, depth in enumerate(cfg.depths):
        dim, heads = c0 * 2**s, cfg.num_heads[s]
        grid = cfg.patch_grid // 2**s
        hidden = int(dim * cfg.mlp_ratio)
        blocks = {}
        for b in range(depth):
            key = f"layers.{s}.blocks.{b}"
            window, shift = htsat_lib.window_geometry(grid, cfg.window_size, b)
            if shift:
                read.check(f"{key}.attn_mask", htsat_lib.shift_mask(grid, window, shift).astype(np.float64))
            blocks[b] = {
                "norm1": _layer_norm(read, f"{key}.norm1", dim),
                "attn": _attention(read, f"{key}.attn", dim, heads, window),
                "norm2": _layer_norm(read, f"{key}.norm2", dim),
                "mlp": {
                    "fc1": _linear(read, f"{key}.mlp.fc1", dim, hidden),
                    "fc2": _linear(read, f"{key}.mlp.fc2", hidden, dim),
                },
            }
        layer = {"blocks": blocks}
        if s < cfg.num_stages - 1:
            layer["downsample"] = {
                "norm": _layer_norm(read, f"layers.{s}.downsample.norm", 4 * dim),
                "reduction": _linear(read, f"layers.{s}.downsample.reduction", 4 * dim, 2 * dim, bias=False),
            }
        layers[s] = layer
    out["layers"] = layers
    out["norm"] = _layer_norm(read, "norm", cfg.out_dim)

    if read.missing:
        raise CheckpointError(f"missing {len(read.missing)} audio key(s): {', '.join(read.missing)}")
    unexpected = sorted(k for k in state if k.startswith(prefix) and k not in read.used)
    if unexpected:
        shown = ", ".join(f"{k} {tuple(np.shape(state[k]))}" for k in unexpected)
        raise CheckpointError(f"unexpected {len(unexpected)} audio key(s): {shown}")
    return out, read.used


def _check_mel(read: _Reader, rates: tuple[int, ...]) -> int | None:
    mels = [frontend.mel_matrix(sample_rate=rate).astype(np.float64) for rate in rates]
    index = read.check("logmel_extractor.melW", *mels)
    return None if index is None else rates[index]


def mel_sample_rate(
    state: Mapping[str, np.ndarray], rates: tuple[int, ...], *, prefix: str = PREFIX
) -> int | None:
    """The rate of ``rates`` whose mel filterbank the checkpoint stores (None: it stores
    none); a filterbank of none of them is a CheckpointError, as in ``convert_htsat``."""
    return _check_mel(_Reader(state, prefix), rates)


def detect_htsat_size(state: Mapping[str, np.ndarray], *, prefix: str = PREFIX) -> str:
    """Name of the HTSAT_CONFIGS entry whose geometry the checkpoint's audio keys match."""
    conv = state.get(prefix + "patch_embed.proj.weight")
    if conv is None:
        raise CheckpointError(f"{prefix}patch_embed.proj.weight not found: no HTS-AT audio branch")
    depths = []
    while any(k.startswith(f"{prefix}layers.{len(depths)}.") for k in state):
        stage = len(depths)
        depths.append(
            sum(
                1
                for k in state
                if k.startswith(f"{prefix}layers.{stage}.blocks.") and k.endswith(".norm1.weight")
            )
        )
    heads = []
    for stage in range(len(depths)):
        key = f"{prefix}layers.{stage}.blocks.0.attn.relative_position_bias_table"
        if key not in state or len(np.shape(state[key])) != 2:
            raise CheckpointError(f"{key} missing or not (225, heads): cannot tell the HTS-AT size")
        heads.append(int(np.shape(state[key])[1]))
    geometry = (int(np.shape(conv)[0]), int(np.shape(conv)[2]), tuple(depths), tuple(heads))
    for name, cfg in HTSAT_CONFIGS.items():
        if (cfg.embed_dim, cfg.patch_size, cfg.depths, cfg.num_heads) == geometry:
            return name
    raise CheckpointError(
        f"audio branch with C0={geometry[0]}, patch {geometry[1]}, depths {geometry[2]}, heads {geometry[3]} "
        "matches no HTS-AT config"
    )


def load_htsat(model, state: Mapping[str, np.ndarray], *, prefix: str = PREFIX) -> set[str]:
    """Convert and write the audio branch into ``model`` (an HTSAT) in place; returns keys used."""
    pure, used = convert_htsat(state, model.cfg, prefix=prefix)
    target = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    _check_covers(dict(nnx.to_flat_state(target)), _flatten(pure))
    nnx.replace_by_pure_dict(target, pure)
    nnx.update(model, target)
    return used


def htsat_from_openflam(
    state: Mapping[str, np.ndarray],
    size: str | None = None,
    *,
    prefix: str = PREFIX,
    compute_dtype="float32",
    remat: str = "none",
    seed: int = 0,
):
    """A new HTSAT holding the checkpoint's audio branch, without a random initialisation.

    The model is traced abstractly (``nnx.eval_shape``) and filled with the converted
    arrays, which avoids compiling every initialiser (tens of seconds on a CPU). Only the
    rng streams (SpecAugment, stochastic depth) are seeded from ``seed``.
    """
    size = size or detect_htsat_size(state, prefix=prefix)
    cfg = HTSAT_CONFIGS[size]
    pure, _ = convert_htsat(state, cfg, prefix=prefix)
    values = _flatten(pure)
    abstract = nnx.eval_shape(
        lambda: HTSAT(cfg, rngs=nnx.Rngs(seed), compute_dtype=compute_dtype, remat=remat)
    )
    graphdef, model_state = nnx.split(abstract)
    flat = dict(nnx.to_flat_state(model_state))
    _check_covers({p: v for p, v in flat.items() if isinstance(v, nnx.Param | nnx.BatchStat)}, values)
    root = jax.random.key(seed)
    for i, (path, variable) in enumerate(sorted(flat.items(), key=lambda item: str(item[0]))):
        if path in values:
            variable.set_value(jnp.asarray(values[path]))
        elif isinstance(variable, nnx.RngKey):
            variable.set_value(jax.random.fold_in(root, i))
        elif isinstance(variable, nnx.RngCount):
            variable.set_value(jnp.zeros((), jnp.uint32))
        else:  # a new kind of state this loader does not know how to fill
            raise CheckpointError(f"HTSAT state {param_name(path)} has no value in the checkpoint")
    return nnx.merge(graphdef, model_state)


def _check_covers(target: dict, converted: dict) -> None:
    """The converted arrays must be exactly the model's parameters and statistics, same shapes."""
    if set(target) != set(converted):
        gap = sorted(param_name(p) for p in set(target) ^ set(converted))
        raise CheckpointError(f"converted audio state does not match the model at: {', '.join(gap[:8])}")
    for path, value in converted.items():
        want = tuple(target[path].get_value().shape)
        if tuple(value.shape) != want:
            raise CheckpointError(f"{param_name(path)}: converted shape {value.shape}, model {want}")


def _flatten(tree: dict, path: tuple = ()) -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, (*path, key)))
        else:
            flat[(*path, key)] = value
    return flat
