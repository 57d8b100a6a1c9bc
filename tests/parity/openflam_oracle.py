"""openflam 1.0.2 as the oracle, built offline with random weights.

openflam downloads roberta-base (weights and tokenizer) and its checkpoint; here the
RoBERTa model is built from a RobertaConfig and the tokenizer from a small byte-level
BPE trained on the spot, so nothing touches the network.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch

SR = 48000
CAPTIONS = [
    "a dog barks twice while a car passes",
    "rain falls on a tin roof, thunder far away",
    "glass shatters and a woman screams",
    "music with drums and a saxophone solo",
]


def write_bpe_files(directory: str) -> str:
    """vocab.json + merges.txt of a small RoBERTa-style byte-level BPE."""
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        CAPTIONS * 10 + ["a man speaks, birds chirp, an engine idles, footsteps on gravel"] * 10,
        vocab_size=500,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    os.makedirs(directory, exist_ok=True)
    trainer.save_model(directory)
    return directory


def roberta_config(text_layers: int):
    """roberta-base's configuration with ``text_layers`` layers (the download's stand-in)."""
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=50265,
        hidden_size=768,
        num_hidden_layers=text_layers,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def build_openflam(audio_size: str, text_layers: int, tokenizer_dir: str, seed: int = 0):
    """An ``openflam.OpenFLAM`` wrapper around ``FLAM(audio_size, RoBERTa with text_layers)``."""
    import lightning
    import openflam  # puts openflam's ``module`` package on sys.path)
    from module import model as ref_model  # the module openflam's hook uses
    from transformers import RobertaModel, RobertaTokenizer

    roberta_cfg = roberta_config(text_layers)
    vocab, merges = os.path.join(tokenizer_dir, "vocab.json"), os.path.join(tokenizer_dir, "merges.txt")

    class OfflineRoberta:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return RobertaModel(roberta_cfg, add_pooling_layer=True)

    class OfflineTokenizer:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            return RobertaTokenizer(vocab, merges)

    torch.manual_seed(seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ref_model, "RobertaModel", OfflineRoberta)
        mp.setattr(ref_model, "RobertaTokenizer", OfflineTokenizer)
        audio_dim = {"tiny": 768, "base": 1024}[audio_size]
        flam = ref_model.FLAM(
            audio_cfg=ref_model.CLAPAudioCfg(model_name=audio_size, audio_embed_dim=audio_dim),
            text_cfg=ref_model.CLAPTextCfg(connector_layers=12),
            joint_embed_shape=512,
            fabric=lightning.Fabric(accelerator="cpu", devices=1),
            cache_dir="/nonexistent-offline",
        )
    spread_weights(flam, seed)
    wrapper = openflam.OpenFLAM.__new__(openflam.OpenFLAM)
    torch.nn.Module.__init__(wrapper)
    wrapper.model = flam.eval()
    return wrapper


@torch.no_grad()
def spread_weights(flam, seed: int) -> None:
    """Non-trivial values where the defaults are constants (norms, biases, bn0 statistics)."""
    gen = torch.Generator().manual_seed(seed + 1)
    for param in flam.parameters():
        if not param.requires_grad or param.ndim != 1:
            continue
        noise = 0.1 * torch.randn(param.shape, generator=gen)
        param.add_(noise)
    bn0 = flam.audio_branch.bn0
    bn0.running_mean.copy_(-60 + 40 * torch.rand(bn0.running_mean.shape, generator=gen))
    bn0.running_var.copy_(50 + 300 * torch.rand(bn0.running_var.shape, generator=gen))


def real_recording() -> tuple[str, np.ndarray]:
    """10 s of a recorded sound from a Debian package when present, else a synthesized one."""
    from flam_jax.audio.io import load_audio

    found = sorted(
        p
        for ext in ("wav", "flac", "ogg", "oga")
        for p in glob.glob(f"/usr/share/**/*.{ext}", recursive=True)
    )
    for path in found:
        try:
            audio = load_audio(path)
        except Exception:
            continue
        if audio.size >= SR // 2:
            reps = int(np.ceil(10 * SR / audio.size))
            return path, np.tile(audio, reps)[: 10 * SR].astype(np.float32)
    # Synthesized stand-in: a decaying plucked tone, vibrato whistle and noise bursts.
    t = np.arange(10 * SR) / SR
    rng = np.random.default_rng(7)
    pluck = np.sin(2 * np.pi * 196 * t) * np.exp(-3 * (t % 1.25))
    whistle = 0.3 * np.sin(2 * np.pi * (1800 * t + 40 * np.sin(2 * np.pi * 5 * t))) * (t > 4)
    bursts = 0.4 * rng.standard_normal(t.size) * ((t % 2.0) < 0.15)
    # A microphone noise floor (~-60 dBFS): real recordings are never digitally silent in
    # every band, and near 1e-10 power the reference's fp32 conv STFT is only noise.
    floor = 1e-3 * rng.standard_normal(t.size)
    return "synthesized", (0.5 * (pluck + whistle + bursts) + floor).astype(np.float32)


def parity_clips() -> dict[str, np.ndarray]:
    """Named 10 s inputs: random noise, silence, a loud clipped signal and a recording."""
    rng = np.random.default_rng(0)
    t = np.arange(10 * SR) / SR
    loud = np.clip(4.0 * np.sin(2 * np.pi * 440 * t) + 2.0 * rng.standard_normal(t.size), -1.0, 1.0)
    return {
        "random": (0.1 * rng.standard_normal(10 * SR)).astype(np.float32),
        "silence": np.zeros(10 * SR, np.float32),
        "loud_clipped": loud.astype(np.float32),
        "recording": real_recording()[1],
    }


def short_clip() -> np.ndarray:
    """5 s, which both models stretch to 1024 STFT frames."""
    rng = np.random.default_rng(5)
    t = np.arange(5 * SR) / SR
    return (0.3 * np.sin(2 * np.pi * 1000 * t) * (t % 1 < 0.5) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def save_state_dict(wrapper, path: str) -> str:
    torch.save(wrapper.model.state_dict(), path)
    return path
