"""An openflam 1.0.2 state dict (.pth) -> a flam_jax export directory (flam-convert-openflam).

Every key is mapped (FLAM_SPEC §11): the towers, projections and temperature through the
layout openflam shares with LAION-CLAP (``export.clap_layout``), plus the per-text heads.
Unused or missing keys, or a shape that does not fit, are a CheckpointError naming them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from flam_jax import paths
from flam_jax.errors import CheckpointError
from flam_jax.export import clap_layout
from flam_jax.export.export_dir import save_export

# openflam's per-text heads, nn.Sequential like the projections.
HEADS = {"fc_per_text_logit_scale": "scale_head", "fc_per_text_logit_bias": "bias_head"}


def convert_state(state: Mapping[str, np.ndarray], model_config) -> dict[str, np.ndarray]:
    """openflam state dict -> flat weights of ``build_model(model_config)`` (checked)."""
    conv = clap_layout.convert_towers(state, model_config, "openflam checkpoint")
    for source, target in HEADS.items():
        clap_layout.sequential_mlp(conv, source, target)
    # The frame-wise global scale is fixed at exp(0) = 1 in openflam; we hard-code it.
    aed = conv.take("aed_logit_scale")
    if aed is not None and float(aed) != 0.0:
        raise CheckpointError(f"aed_logit_scale is {float(aed)}, but FLAM fixes it at 0 (scale 1)")
    return conv.finish()


def convert(checkpoint: str, out_dir: str, tokenizer_dir: str | None = None) -> str:
    """Convert ``checkpoint`` into the export directory ``out_dir``; returns ``out_dir``."""
    state = clap_layout.read_torch_state(checkpoint)
    model_cfg = clap_layout.model_config_for(state)
    weights = convert_state(state, model_cfg)
    vocab = int(weights["text.word_embeddings.embedding"].shape[0])
    tokenizer = clap_layout.roberta_tokenizer(tokenizer_dir, model_cfg, vocab)
    source = f"openflam checkpoint {paths.resolve(checkpoint)}"
    save_export(out_dir, weights, model_cfg, tokenizer, source=source)
    return out_dir
