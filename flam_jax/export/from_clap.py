"""LAION-CLAP and HTS-AT checkpoints -> export directories to start training from
(``flam-convert-clap``; use the output as ``train.init_from``).

Two kinds, told apart by their keys (``detect_kind``):

- ``clap``: a laion_clap 1.1.x model with an HTS-AT audio branch (tiny, base, large) and
  the RoBERTa text branch, as its training saves it (``{"epoch", "state_dict":
  {"module.audio_branch…"}, …}``) or a bare state dict. Converted: the audio tower, the
  text tower, both projections and ``logit_scale_a``. Left out, because FLAM has no use
  for them: HTS-AT's AudioSet classifier (``audio_branch.tscam_conv``, ``.head``), the
  MLPs and text-side temperature of LAION-CLAP's optional MLP loss (``audio_transform``,
  ``text_transform``, ``logit_scale_t``) and the ``position_ids`` buffer older
  transformers saved. The per-text heads do not exist in CLAP: the export lists them as
  untrained, so they start fresh. The result is a FLAM-Global starting point. A fusion
  model (``enable_fusion``: ``audio_branch.fusion_model``, ``mel_conv2d``) is refused:
  FLAM's audio tower has no fusion branch.
- ``htsat``: an HTS-AT AudioSet checkpoint as the original HTS-AT release saves it
  (PyTorch Lightning, ``state_dict`` keys ``sed_model.…``): the 32 kHz
  ``HTSAT_AudioSet_Saved_*.ckpt`` or LAION's 48 kHz ``HTSAT-fullset-imagenet-map=0.467.ckpt``.
  Converted: the audio tower only; the STFT kernels must equal ours and the mel
  filterbank ours at 32 or 48 kHz (``openflam_audio.convert_htsat``). Everything else is
  untrained; the export's text tower is named by ``text_tower`` (its weights absent).

Every tensor of the file is either converted, or among the kinds left out above; anything
else, missing or misshapen is a CheckpointError naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from flam_jax import paths
from flam_jax.audio import frontend
from flam_jax.errors import CheckpointError, InputError
from flam_jax.export import clap_layout, openflam_audio
from flam_jax.export.export_dir import save_export
from flam_jax.models.configs import TEXT_CONFIGS

HTSAT_PREFIX = "sed_model."
# Tensors of a LAION-CLAP checkpoint that FLAM has no place for (see the module docstring).
CLAP_LEFT_OUT = (
    "audio_branch.tscam_conv.",
    "audio_branch.head.",
    "audio_transform.",
    "text_transform.",
    "logit_scale_t",
    "text_branch.embeddings.position_ids",
)
HTSAT_LEFT_OUT = ("audio_branch.tscam_conv.", "audio_branch.head.")
# laion_clap's fusion layers (htsat.py): under audio_branch.patch_embed for its 2-D fusion
# types (aff_2d, the default), under audio_branch for the 1-D ones.
FUSION_MARKS = (".fusion_model.", ".mel_conv2d.", ".mel_conv1d.")
CLAP_UNTRAINED = ("bias_head", "scale_head")
HTSAT_UNTRAINED = ("audio_projection", "bias_head", "logit_scale", "scale_head", "text", "text_projection")
KINDS = ("auto", "clap", "htsat")


@dataclasses.dataclass(frozen=True)
class Converted:
    """What ``convert`` wrote, for the command's summary line."""

    out_dir: str
    kind: str
    audio_size: str
    text_tower: str
    untrained: tuple[str, ...]
    left_out: tuple[str, ...]  # source tensors not converted, by name
    mel_sample_rate: int  # the rate the checkpoint's mel filterbank was made for

    def summary(self) -> str:
        what = {"clap": "LAION-CLAP", "htsat": "HTS-AT audio tower"}[self.kind]
        dropped = sorted({_group(k) for k in self.left_out})
        return (
            f"wrote {self.out_dir}: {what}, HTS-AT {self.audio_size}, text tower {self.text_tower}; "
            f"untrained (fresh at train.init_from): {', '.join(self.untrained)}; "
            f"left out {len(self.left_out)} tensors ({', '.join(dropped) or 'none'}); "
            f"mel filterbank made for {self.mel_sample_rate // 1000} kHz"
        )


def _group(key: str) -> str:
    """The left-out kind a key belongs to, as the file names it."""
    for prefix in (*CLAP_LEFT_OUT, *(_as_htsat(p) for p in HTSAT_LEFT_OUT)):
        if key.startswith(prefix):
            return prefix.rstrip(".")
    return key


def _as_htsat(key: str) -> str:
    return HTSAT_PREFIX + key[len(openflam_audio.PREFIX) :]


def detect_kind(state: Mapping[str, np.ndarray]) -> str:
    if any(k.startswith(HTSAT_PREFIX) for k in state):
        return "htsat"
    if any(k.startswith(openflam_audio.PREFIX) for k in state):
        return "clap"
    raise CheckpointError("neither a LAION-CLAP (audio_branch.*) nor an HTS-AT (sed_model.*) checkpoint")


def _check_audio_branch(state: Mapping[str, np.ndarray], what: str) -> None:
    audio = (k for k in state if k.startswith(openflam_audio.PREFIX))
    fusion = sorted(k for k in audio if any(mark in k for mark in FUSION_MARKS))
    if fusion:
        raise CheckpointError(
            f"{what} is a fusion model ({fusion[0]}, …): FLAM's audio tower has no fusion branch; "
            "convert a non-fusion checkpoint"
        )
    if f"{openflam_audio.PREFIX}patch_embed.proj.weight" not in state and any(
        k.startswith(f"{openflam_audio.PREFIX}conv_block") for k in state
    ):
        raise CheckpointError(f"{what} has a PANN audio branch; only HTS-AT audio towers convert")


def _split_left_out(state: Mapping[str, np.ndarray], prefixes: tuple[str, ...]):
    kept = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    return kept, tuple(sorted(set(state) - set(kept)))


def clap_weights(state: Mapping[str, np.ndarray]):
    """(weights, model config, left out) of a LAION-CLAP state dict."""
    _check_audio_branch(state, "LAION-CLAP checkpoint")
    kept, left_out = _split_left_out(state, CLAP_LEFT_OUT)
    model_cfg = clap_layout.model_config_for(kept)
    conv = clap_layout.convert_towers(kept, model_cfg, "LAION-CLAP checkpoint", untrained=CLAP_UNTRAINED)
    return conv.finish(), model_cfg, left_out


def htsat_weights(state: Mapping[str, np.ndarray], text_tower: str = "roberta-base"):
    """(weights, model config, left out, mel rate) of an HTS-AT release state dict."""
    foreign = sorted(k for k in state if not k.startswith(HTSAT_PREFIX))
    if foreign:
        raise CheckpointError(f"HTS-AT checkpoint: {len(foreign)} keys not in {HTSAT_PREFIX}: {foreign[0]}")
    renamed = {openflam_audio.PREFIX + k[len(HTSAT_PREFIX) :]: v for k, v in state.items()}
    _check_audio_branch(renamed, "HTS-AT checkpoint")
    kept, left_out = _split_left_out(renamed, HTSAT_LEFT_OUT)
    model_cfg = clap_layout.starting_config(openflam_audio.detect_htsat_size(kept), text_tower)
    rates = (frontend.SAMPLE_RATE, 32000)
    conv = clap_layout.convert_towers(
        kept, model_cfg, "HTS-AT checkpoint", untrained=HTSAT_UNTRAINED, mel_sample_rates=rates
    )
    rate = openflam_audio.mel_sample_rate(kept, rates) or frontend.SAMPLE_RATE
    return conv.finish(), model_cfg, tuple(_as_htsat(k) for k in left_out), rate


def convert(
    checkpoint: str,
    out_dir: str,
    *,
    kind: str = "auto",
    tokenizer_dir: str | None = None,
    text_tower: str | None = None,
    allow_pickle: bool = False,
) -> Converted:
    """Convert ``checkpoint`` (``kind``: auto, clap or htsat) into the export ``out_dir``.
    ``text_tower`` (htsat only, default roberta-base) names the export's text tower."""
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if text_tower is not None and text_tower not in TEXT_CONFIGS:
        raise InputError(f"text tower {text_tower!r} is not one of {', '.join(sorted(TEXT_CONFIGS))}")
    state = clap_layout.read_torch_state(checkpoint, allow_pickle=allow_pickle)
    found = detect_kind(state)
    if kind != "auto" and kind != found:
        raise CheckpointError(f"{checkpoint} is a {found} checkpoint, not {kind}")
    source = paths.resolve(checkpoint)
    if found == "clap":
        if text_tower is not None:
            raise InputError(
                "--text-tower is for HTS-AT checkpoints: a LAION-CLAP one has its own text tower"
            )
        weights, model_cfg, left_out = clap_weights(state)
        rate, untrained = frontend.SAMPLE_RATE, CLAP_UNTRAINED
        vocab = int(weights["text.word_embeddings.embedding"].shape[0])
        tokenizer = clap_layout.roberta_tokenizer(tokenizer_dir, model_cfg, vocab)
        source = f"LAION-CLAP checkpoint {source}"
    else:
        text_tower = text_tower or "roberta-base"
        weights, model_cfg, left_out, rate = htsat_weights(state, text_tower)
        untrained = HTSAT_UNTRAINED
        tokenizer = None  # the text tower is untrained: a tokenizer is carried along when given
        if tokenizer_dir or TEXT_CONFIGS[text_tower].style == "roberta":
            vocab = TEXT_CONFIGS[text_tower].vocab_size
            tokenizer = clap_layout.roberta_tokenizer(tokenizer_dir, model_cfg, vocab, required=False)
        source = f"HTS-AT checkpoint {source}"
    save_export(out_dir, weights, model_cfg, tokenizer, source=source, untrained=untrained)
    return Converted(out_dir, found, model_cfg.audio_size, model_cfg.text_tower, untrained, left_out, rate)
