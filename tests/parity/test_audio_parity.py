"""Audio tower parity: openflam 1.0.2's HTS-AT (random weights, built offline) vs our HTSAT.

The reference's audio branch is built with openflam's own ``create_htsat_model``, every
weight and bn0 statistic is randomised, its state dict is converted with
``export.openflam_audio`` and both models see the same waveforms: the log-mel image
before and after bn0, and the pre-projection frames (and their mean) are compared.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from flam_jax.audio import frontend as fe
from flam_jax.errors import CheckpointError
from flam_jax.export import openflam_audio
from flam_jax.models.configs import HTSAT_CONFIGS
from flam_jax.models.htsat import HTSAT

SR = 48_000
TEN_S = 480_000


def recorded_clip() -> np.ndarray:
    """10 s of real recorded audio at 48 kHz mono: sed_eval's bundled acoustic-scene WAV
    (dcase_util example data), else a synthesized stand-in with speech-like bursts."""
    spec = importlib.util.find_spec("dcase_util")
    if spec is not None and spec.origin:
        path = os.path.join(os.path.dirname(spec.origin), "utils", "example_data", "acoustic_scene.wav")
        if os.path.exists(path):
            import soundfile
            import soxr

            audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
            mono = soxr.resample(audio.mean(axis=1), rate, SR).astype(np.float32)
            return np.pad(mono, (0, max(0, TEN_S - len(mono))))[:TEN_S]
    t = np.arange(TEN_S) / SR
    rng = np.random.RandomState(7)
    envelope = (np.sin(2 * np.pi * 3 * t) > 0.3).astype(np.float32)
    voice = np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 0.5 * t)) * t) * envelope
    return (0.3 * voice + 0.02 * rng.randn(TEN_S)).astype(np.float32)


def parity_signals() -> dict[str, np.ndarray]:
    rng = np.random.RandomState(0)
    t = np.arange(TEN_S) / SR
    loud = 20.0 * np.sin(2 * np.pi * 440 * t) + 5.0 * rng.randn(TEN_S)
    return {
        "random": rng.uniform(-0.5, 0.5, TEN_S).astype(np.float32),
        "silence": np.zeros(TEN_S, np.float32),
        "clipped": np.clip(loud, -1.0, 1.0).astype(np.float32),
        "recording": recorded_clip(),
    }


def build_reference(size: str, seed: int):
    """openflam's HTS-AT for ``size`` with every parameter and bn0 statistic randomised."""
    from openflam.module.htsat import create_htsat_model
    from openflam.module.model import CLAPAudioCfg

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = create_htsat_model(CLAPAudioCfg(model_name=size))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in ref.named_parameters():
            if "extractor" in name:  # frozen STFT/mel buffers stay exact
                continue
            is_scale = (
                name.endswith("norm1.weight") or name.endswith("norm2.weight") or ".norm.weight" in name
            )
            spread = 0.05 if param.ndim > 1 else 0.2
            param.copy_(torch.randn(param.shape, generator=gen) * spread + (1.0 if is_scale else 0.0))
        ref.bn0.running_mean.copy_(torch.randn(64, generator=gen) * 5 - 40)
        ref.bn0.running_var.copy_(torch.rand(64, generator=gen) * 100 + 50)
    return ref.eval()


def reference_outputs(ref, waves: np.ndarray) -> dict[str, np.ndarray]:
    x = torch.from_numpy(waves)
    with torch.no_grad():
        mel = ref.logmel_extractor(ref.spectrogram_extractor(x))  # (B, 1, T, 64)
        normed = ref.bn0(mel.transpose(1, 3)).transpose(1, 3)
        out = ref({"waveform": x})
        return {
            "image_raw": ref.reshape_wav2img(mel)[:, 0].numpy(),
            "image": ref.reshape_wav2img(normed)[:, 0].numpy(),
            "frames": out["fine_grained_embedding"].numpy(),
            "global": out["embedding"].numpy(),
        }


def converted_model(ref, size: str) -> HTSAT:
    state = {"audio_branch." + k: v.numpy() for k, v in ref.state_dict().items()}
    assert openflam_audio.detect_htsat_size(state) == size
    _, used = openflam_audio.convert_htsat(state, HTSAT_CONFIGS[size])
    assert used == set(state)  # every key was consumed or deliberately dropped
    return openflam_audio.htsat_from_openflam(state)


@nnx.jit
def our_images(model: HTSAT, waves):
    raw = fe.fold_to_image(fe.stretch_time(fe.log_mel(waves)))
    return raw[..., 0], model.image(waves)[..., 0]


@nnx.jit
def our_frames(model: HTSAT, images):
    return model.encode_image(images[..., None])


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def assert_audio_parity(ref_out: dict, images_raw, images, frames, names: list[str]):
    for i, name in enumerate(names):
        # Raw dB values reach +-100; both sides carry float32 STFT/mel/stretch rounding
        # (measured up to ~2e-4 dB), so this one is relative to the image's range.
        raw_ref = ref_out["image_raw"][i]
        raw_tol = 5e-6 * np.abs(raw_ref).max()
        np.testing.assert_allclose(
            images_raw[i], raw_ref, rtol=0, atol=raw_tol, err_msg=f"{name}: image before bn0"
        )
        np.testing.assert_allclose(
            images[i], ref_out["image"][i], rtol=0, atol=1e-4, err_msg=f"{name}: image"
        )
        scale = np.abs(ref_out["frames"][i]).max()
        np.testing.assert_allclose(
            frames[i], ref_out["frames"][i], rtol=0, atol=1e-4 * scale, err_msg=f"{name}: raw frames"
        )
        np.testing.assert_allclose(
            unit(frames[i]), unit(ref_out["frames"][i]), rtol=0, atol=1e-4, err_msg=f"{name}: unit frames"
        )
        np.testing.assert_allclose(
            unit(frames[i].mean(0)), unit(ref_out["global"][i]), rtol=0, atol=1e-4, err_msg=f"{name}: global"
        )


@pytest.fixture(scope="module")
def tiny_pair():
    ref = build_reference("tiny", seed=0)
    return ref, converted_model(ref, "tiny")


def test_tiny_parity_on_ten_second_signals_and_a_five_second_clip(tiny_pair):
    ref, model = tiny_pair
    signals = parity_signals()
    names = list(signals)
    waves = np.stack([signals[n] for n in names])
    five = signals["recording"][None, : TEN_S // 2].copy()
    assert fe.num_stft_frames(five.shape[1]) == 501  # stretched 501 -> 1024, not padded
    raw10, img10 = our_images(model, jnp.asarray(waves))
    raw5, img5 = our_images(model, jnp.asarray(five))
    images = np.concatenate([np.asarray(img10), np.asarray(img5)])
    frames = np.asarray(our_frames(model, jnp.asarray(images)))
    ref10, ref5 = reference_outputs(ref, waves), reference_outputs(ref, five)
    ref_all = {k: np.concatenate([ref10[k], ref5[k]]) for k in ref10}
    raw = np.concatenate([np.asarray(raw10), np.asarray(raw5)])
    assert frames.shape == (5, 32, 768)
    assert_audio_parity(ref_all, raw, images, frames, [*names, "five_seconds"])
    # The signals are really different inputs (the test is not comparing constants).
    assert np.abs(frames[0] - frames[1]).max() > 1e-2 * np.abs(frames[0]).max()
    # The end-to-end call agrees with the two halves used above.
    direct = np.asarray(nnx.jit(lambda m, w: m(w))(model, jnp.asarray(five)))
    np.testing.assert_allclose(direct[0], frames[-1], rtol=0, atol=1e-5 * np.abs(frames[-1]).max())


def test_converter_names_the_offending_key(tiny_pair):
    ref, _ = tiny_pair
    state = {"audio_branch." + k: v.numpy() for k, v in ref.state_dict().items()}
    cfg = HTSAT_CONFIGS["tiny"]
    broken = dict(state)
    broken["audio_branch.layers.1.blocks.0.attn.qkv.weight"] = np.zeros((10, 3), np.float32)
    with pytest.raises(CheckpointError, match=r"layers\.1\.blocks\.0\.attn\.qkv\.weight has shape \(10, 3\)"):
        openflam_audio.convert_htsat(broken, cfg)
    missing = {k: v for k, v in state.items() if k != "audio_branch.norm.bias"}
    with pytest.raises(CheckpointError, match=r"missing 1 audio key\(s\): audio_branch\.norm\.bias"):
        openflam_audio.convert_htsat(missing, cfg)
    extra = {**state, "audio_branch.head.weight": np.zeros((527, 768), np.float32)}
    with pytest.raises(
        CheckpointError, match=r"unexpected 1 audio key\(s\): audio_branch\.head\.weight \(527, 768\)"
    ):
        openflam_audio.convert_htsat(extra, cfg)
    for key in (
        "audio_branch.logmel_extractor.melW",
        "audio_branch.spectrogram_extractor.stft.conv_real.weight",
        "audio_branch.layers.0.blocks.1.attn_mask",
    ):
        tampered = {**state, key: state[key] * 1.01 + 1e-3}
        with pytest.raises(CheckpointError, match=key.replace(".", r"\.") + " disagrees"):
            openflam_audio.convert_htsat(tampered, cfg)
    index_key = "audio_branch.layers.0.blocks.0.attn.relative_position_index"
    with pytest.raises(CheckpointError, match=index_key.replace(".", r"\.")):
        openflam_audio.convert_htsat({**state, index_key: state[index_key][::-1].copy()}, cfg)
    # load_htsat writes a checkpoint into an existing model in place.
    _, model = tiny_pair
    doubled = {**state, "audio_branch.norm.bias": state["audio_branch.norm.bias"] * 2}
    openflam_audio.load_htsat(model, doubled)
    np.testing.assert_array_equal(np.asarray(model.norm.bias[...]), doubled["audio_branch.norm.bias"])
    openflam_audio.load_htsat(model, state)
    np.testing.assert_array_equal(np.asarray(model.norm.bias[...]), state["audio_branch.norm.bias"])
    # Keys outside the audio prefix are the caller's business.
    tree, used = openflam_audio.convert_htsat({**state, "text_branch.x": np.zeros(1)}, cfg)
    assert "text_branch.x" not in used and tree["patch_embed"]["proj"]["kernel"].shape == (4, 4, 1, 96)
    with pytest.raises(
        CheckpointError, match=r"layers\.4\.blocks\.0\.attn\.relative_position_bias_table missing"
    ):
        openflam_audio.detect_htsat_size(
            {**state, "audio_branch.layers.4.blocks.0.norm1.weight": np.zeros(1)}
        )
    with pytest.raises(
        CheckpointError, match=r"C0=96, patch 4, depths \(2, 2, 5, 2\).*matches no HTS-AT config"
    ):
        openflam_audio.detect_htsat_size(
            {k: v for k, v in state.items() if not k.startswith("audio_branch.layers.2.blocks.5.")}
        )


@pytest.mark.slow
def test_base_parity_on_random_and_recorded_audio():
    ref = build_reference("base", seed=1)
    model = converted_model(ref, "base")
    signals = parity_signals()
    names = ["random", "recording"]
    waves = np.stack([signals[n] for n in names])
    raw, images = our_images(model, jnp.asarray(waves))
    frames = np.asarray(our_frames(model, images))
    assert frames.shape == (2, 32, 1024)
    assert_audio_parity(reference_outputs(ref, waves), np.asarray(raw), np.asarray(images), frames, names)
