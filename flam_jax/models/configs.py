"""Model sizes as frozen dataclasses, keyed by the names that ``config.model`` uses.

``HTSAT_CONFIGS[config.model.audio_size]`` sizes the audio tower and
``TEXT_CONFIGS[config.model.text_tower]`` the text tower (FLAM_SPEC §3, §4).
"""

from __future__ import annotations

import dataclasses

import jax

from flam_jax.errors import ConfigError

# Activation checkpointing per block (Swin block / text layer), shared by both towers: what
# a block's backward pass may keep instead of recomputing. none; block = recompute each
# block in the backward pass; block_save_dots = recompute it but keep its matmul outputs.
REMAT_POLICIES = {
    "none": None,
    "block": jax.checkpoint_policies.nothing_saveable,
    "block_save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_policy(name: str):
    """The policy of ``model.remat`` (None for "none"); the one place the name is checked."""
    if name not in REMAT_POLICIES:
        raise ConfigError(f"model.remat must be one of {', '.join(REMAT_POLICIES)}, got {name!r}")
    return REMAT_POLICIES[name]


# --------------------------------------------------------------------------------------
# HTS-AT (audio tower). Owner: audio.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HTSATConfig:
    """One HTS-AT size. Front-end constants (48 kHz, 1024/480 STFT, 64 mels) are fixed."""

    embed_dim: int  # C0, the width of stage 0
    depths: tuple[int, ...]  # Swin blocks per stage
    num_heads: tuple[int, ...]  # attention heads per stage
    patch_size: int = 4  # patch embed kernel and stride (square)
    window_size: int = 8
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1  # stochastic depth, linear 0..rate over all blocks
    spec_size: int = 256  # the folded log-mel image is spec_size x spec_size
    mel_bins: int = 64
    time_frames: int = 1024  # STFT frames are stretched to this many before the fold

    def __post_init__(self):
        if len(self.depths) != len(self.num_heads):
            raise ConfigError("HTSATConfig: depths and num_heads must have the same length")
        for stage, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**stage) % heads:
                raise ConfigError(f"HTSATConfig: stage {stage} width not divisible by {heads} heads")
        if self.final_grid % self.time_chunks or self.spec_size % self.patch_size:
            raise ConfigError("HTSATConfig: the final grid must split evenly into time chunks")

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def out_dim(self) -> int:
        """Width of the final stage, i.e. of the pre-projection frame features."""
        return self.embed_dim * 2 ** (self.num_stages - 1)

    @property
    def time_chunks(self) -> int:
        """How many time chunks the fold stacks vertically (1024 frames / 256 columns)."""
        return self.time_frames // self.spec_size

    @property
    def patch_grid(self) -> int:
        return self.spec_size // self.patch_size

    @property
    def final_grid(self) -> int:
        return self.patch_grid // 2 ** (self.num_stages - 1)

    @property
    def num_frames(self) -> int:
        """Output frames per clip: every final-grid column of every time chunk."""
        return self.time_chunks * self.final_grid


HTSAT_CONFIGS: dict[str, HTSATConfig] = {
    "tiny": HTSATConfig(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(4, 8, 16, 32)),
    "base": HTSATConfig(embed_dim=128, depths=(2, 2, 12, 2), num_heads=(4, 8, 16, 32)),
    "large": HTSATConfig(embed_dim=256, depths=(2, 2, 12, 2), num_heads=(4, 8, 16, 32)),
    # 128 frames per 10 s: patch 2 and three stages leave a 32x32 final grid.
    "base-12hz": HTSATConfig(embed_dim=192, depths=(2, 12, 2), num_heads=(8, 16, 32), patch_size=2),
    # CPU demo: same geometry as tiny/base (32 frames per 10 s), far fewer FLOPs.
    "demo": HTSATConfig(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
}


# --------------------------------------------------------------------------------------
# Text towers. Owner: text/heads. (TextConfig and TEXT_CONFIGS go below this line.)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """One BERT-family text tower (FLAM_SPEC §4).

    ``style="roberta"``: positions count real tokens from ``pad_id + 1`` (pads get
    ``pad_id``), one token type. ``style="bert"``: positions 0..L-1, token types.
    """

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    max_positions: int
    type_vocab: int
    pad_id: int
    style: str  # "roberta" or "bert"
    layer_norm_eps: float
    dropout: float = 0.1  # hidden and attention-probability dropout (training only)
    context_length: int = 77

    def __post_init__(self):
        if self.style not in ("roberta", "bert"):
            raise ConfigError(f"TextConfig: style must be 'roberta' or 'bert', got {self.style!r}")
        if self.hidden % self.heads:
            raise ConfigError(f"TextConfig: hidden {self.hidden} not divisible by {self.heads} heads")
        # RoBERTa positions run up to pad_id + context_length.
        needed = self.context_length + (self.pad_id + 1 if self.style == "roberta" else 0)
        if needed > self.max_positions:
            raise ConfigError(f"TextConfig: context {self.context_length} needs {needed} positions")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


_ROBERTA_BASE = TextConfig(
    vocab_size=50265,
    hidden=768,
    layers=12,
    heads=12,
    ffn=3072,
    max_positions=514,
    type_vocab=1,
    pad_id=1,
    style="roberta",
    layer_norm_eps=1e-5,
)

TEXT_CONFIGS: dict[str, TextConfig] = {
    "roberta-base": _ROBERTA_BASE,
    # Two layers of roberta-base's width: fast tests and parity checks.
    "roberta-tiny": dataclasses.replace(_ROBERTA_BASE, layers=2),
    # sentence-transformers/all-MiniLM-L6-v2 (uncased WordPiece, 30522 tokens).
    "minilm-l6": TextConfig(
        vocab_size=30522,
        hidden=384,
        layers=6,
        heads=12,
        ffn=1536,
        max_positions=512,
        type_vocab=2,
        pad_id=0,
        style="bert",
        layer_norm_eps=1e-12,
    ),
}
