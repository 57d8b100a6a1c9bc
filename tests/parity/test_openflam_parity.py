"""Converted openflam checkpoints compute what openflam computes (FLAM_SPEC §11 validation).

openflam's own FLAM is built with random weights (offline), its state dict saved as a
.pth, converted by ``flam-convert-openflam`` and opened with ``FLAM.load``. Tolerances
(fp32, CPU): 1e-4 on unit-norm embeddings, 1e-3 on scores.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from openflam_oracle import (
    CAPTIONS,
    build_openflam,
    parity_clips,
    save_state_dict,
    short_clip,
    write_bpe_files,
)
from safetensors.numpy import load_file, save_file

from flam_jax.cli.convert_openflam import main as convert_main
from flam_jax.errors import CheckpointError, InputError, ModelLoadError
from flam_jax.infer.api import FLAM

EMB_TOL = 1e-4
SCORE_TOL = 1e-3


class Pair:
    """openflam wrapper + our FLAM converted from its state dict."""

    def __init__(self, tmp, audio_size, text_layers):
        tokenizer_dir = write_bpe_files(str(tmp / "tokenizer"))
        self.ref = build_openflam(audio_size, text_layers, tokenizer_dir)
        self.pth = save_state_dict(self.ref, str(tmp / "flam.pth"))
        self.export = str(tmp / "export")
        rc = convert_main(["--checkpoint", self.pth, "--tokenizer-dir", tokenizer_dir, "--out", self.export])
        assert rc == 0
        self.ours = FLAM.load(self.export)

    @torch.no_grad()
    def ref_audio(self, wave):
        x = torch.from_numpy(wave)
        return (
            self.ref.get_local_audio_features(x).numpy(),
            self.ref.get_global_audio_features(x).numpy(),
        )

    @torch.no_grad()
    def ref_text(self, texts):
        pooled = self.ref.get_text_branch_output(texts)
        emb = self.ref.get_text_features(texts).numpy()
        alpha = self.ref.get_per_text_logit_scale(pooled).numpy()
        beta = self.ref.get_per_text_logit_bias(pooled).numpy()
        return emb, alpha, beta


def _check_audio(pair, wave):
    frames, global_ = pair.ref_audio(wave)
    ours = pair.ours.embed_audio(wave)
    assert ours.frames.shape == frames.shape and ours.global_.shape == global_.shape
    np.testing.assert_allclose(ours.frames, frames, atol=EMB_TOL, rtol=0)
    np.testing.assert_allclose(ours.global_, global_, atol=EMB_TOL, rtol=0)
    return ours


def _check_text(pair):
    emb, alpha, beta = pair.ref_text(CAPTIONS)
    ours = pair.ours.embed_text(CAPTIONS)
    np.testing.assert_allclose(ours.emb, emb, atol=EMB_TOL, rtol=0)
    np.testing.assert_allclose(ours.alpha, alpha, rtol=1e-4, atol=0)
    np.testing.assert_allclose(ours.beta, beta, atol=1e-4, rtol=0)
    return ours


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return Pair(tmp_path_factory.mktemp("tiny"), "tiny", text_layers=2)


def test_tiny_export_shapes_and_config(tiny):
    assert tiny.ours.model_config.audio_size == "tiny"
    assert tiny.ours.model_config.text_tower == "roberta-tiny"
    assert tiny.ours.num_frames == 32


def test_tiny_log_mel_image(tiny):
    clips = parity_clips()
    wave = np.stack(list(clips.values()))
    branch = tiny.ref.model.audio_branch
    with torch.no_grad():
        x = branch.logmel_extractor(branch.spectrogram_extractor(torch.from_numpy(wave)))
        x = branch.bn0(x.transpose(1, 3)).transpose(1, 3)
        ref = branch.reshape_wav2img(x).numpy()[:, 0]  # (B, 256, 256)
    ours = np.asarray(tiny.ours.model.audio.image(wave))[..., 0]
    # bn0 divides dB values by ~sqrt(running_var) >= 7: 1e-3 is a few fp32 ulps of the dB input.
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)


def test_tiny_audio_embeddings(tiny):
    wave = np.stack(list(parity_clips().values()))
    _check_audio(tiny, wave)


def test_tiny_short_clip_is_stretched_like_openflam(tiny):
    _check_audio(tiny, short_clip()[None])


def test_tiny_text_embeddings_and_heads(tiny):
    ours = _check_text(tiny)
    assert not np.allclose(ours.alpha, ours.alpha[0])  # the heads really depend on the text


@pytest.mark.parametrize("method", ["unbiased", "approximate"])
def test_tiny_frame_scores(tiny, method):
    wave = np.stack(list(parity_clips().values()))
    with torch.no_grad():
        ref = tiny.ref.get_local_similarity(
            torch.from_numpy(wave), CAPTIONS, method=method, cross_product=True
        )
    ours = tiny.ours.frame_scores(tiny.ours.embed_audio(wave), tiny.ours.embed_text(CAPTIONS), method=method)
    assert ours.shape == (4, len(CAPTIONS), 32)
    np.testing.assert_allclose(ours, ref.numpy(), atol=SCORE_TOL, rtol=0)


@pytest.mark.slow
def test_v1_base_full_size(tmp_path):
    """The released architecture (HTS-AT base + roberta-base): every output, one pass each."""
    from openflam.hook import get_approximate_framewise_act_map, get_unbiased_framewise_act_map

    pair = Pair(tmp_path, "base", text_layers=12)
    assert (pair.ours.model_config.audio_size, pair.ours.model_config.text_tower) == ("base", "roberta-base")
    wave = np.stack(list(parity_clips().values()))
    ours_audio = _check_audio(pair, wave)
    ours_text = _check_text(pair)
    ref_frames = torch.from_numpy(pair.ref_audio(wave)[0])
    emb, alpha, beta = (torch.from_numpy(x) for x in pair.ref_text(CAPTIONS))
    refs = {
        "unbiased": get_unbiased_framewise_act_map(ref_frames, emb, alpha, beta, cross_product=True),
        "approximate": get_approximate_framewise_act_map(ref_frames, emb, alpha, cross_product=True),
    }
    for method, ref in refs.items():
        ours = pair.ours.frame_scores(ours_audio, ours_text, method=method)
        np.testing.assert_allclose(ours, ref.numpy(), atol=SCORE_TOL, rtol=0, err_msg=method)


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def tiny_state(tiny):
    from flam_jax.export.clap_layout import model_config_for, read_torch_state

    state = read_torch_state(tiny.pth)
    return state, model_config_for(state)


def test_converter_lists_unexpected_and_missing_keys(tiny_state):
    from flam_jax.export.from_openflam import convert_state

    state, cfg = tiny_state
    extra = dict(state, **{"text_branch.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"1 unexpected keys: text_branch\.extra\.weight"):
        convert_state(extra, cfg)
    missing = {k: v for k, v in state.items() if k not in ("text_projection.2.bias", "logit_scale_a")}
    with pytest.raises(CheckpointError, match=r"2 missing keys: logit_scale_a, text_projection\.2\.bias"):
        convert_state(missing, cfg)
    audio_missing = {k: v for k, v in state.items() if k != "audio_branch.norm.weight"}
    with pytest.raises(CheckpointError, match=r"audio_branch\.norm\.weight"):
        convert_state(audio_missing, cfg)


def test_converter_names_key_and_shape_on_mismatch(tiny_state):
    from flam_jax.export.from_openflam import convert_state

    state, cfg = tiny_state
    bad = dict(state, **{"fc_per_text_logit_bias.2.weight": np.zeros((2, 768), np.float32)})
    with pytest.raises(CheckpointError, match=r"fc_per_text_logit_bias\.2\.weight has shape \(2, 768\)"):
        convert_state(bad, cfg)
    aed = dict(state, aed_logit_scale=np.asarray(0.5, np.float32))
    with pytest.raises(CheckpointError, match="aed_logit_scale"):
        convert_state(aed, cfg)


class NotTensors:
    """An arbitrary pickled object, which the weights-only loader must refuse."""


def test_converter_cli_errors(tmp_path, capsys):
    missing = convert_main(["--checkpoint", str(tmp_path / "none.pth"), "--out", str(tmp_path / "x")])
    assert missing == 2 and "checkpoint not found" in capsys.readouterr().err
    torch.save({"a": NotTensors()}, tmp_path / "pickled.pth")
    rc = convert_main(["--checkpoint", str(tmp_path / "pickled.pth"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: cannot read") and "weights-only" in err and err.count("\n") == 1
    torch.save({"a": torch.zeros(2)}, tmp_path / "foreign.pth")
    rc = convert_main(["--checkpoint", str(tmp_path / "foreign.pth"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "no HTS-AT audio branch" in capsys.readouterr().err


def _copy_export(tiny, tmp_path):
    out = tmp_path / "export"
    shutil.copytree(tiny.export, out)
    return out


def test_load_rejects_missing_or_corrupt_exports(tiny, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        FLAM.load(str(tmp_path / "absent"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        FLAM.load(str(tmp_path))

    corrupt = _copy_export(tiny, tmp_path / "corrupt")
    (corrupt / "params.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot read"):
        FLAM.load(str(corrupt))

    partial = _copy_export(tiny, tmp_path / "partial")
    weights = load_file(partial / "params.safetensors")
    del weights["bias_head.fc2.bias"]
    save_file(weights, partial / "params.safetensors")
    with pytest.raises(ModelLoadError, match=r"1 missing keys: bias_head\.fc2\.bias"):
        FLAM.load(str(partial))

    wrong = _copy_export(tiny, tmp_path / "wrong")
    config = json.loads((wrong / "config.json").read_text())
    config["model"]["audio_size"] = "base"
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"missing keys: audio\.layers\.2\.blocks\.10\."):
        FLAM.load(str(wrong))
    config["model"]["audio_size"] = "tiny"
    config["model"]["embed_dim"] = 256
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"audio_projection\.fc1\.bias has shape \(512,\)"):
        FLAM.load(str(wrong))
    config["model"]["colour"] = "blue"
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="colour"):
        FLAM.load(str(wrong))


def test_save_roundtrip_and_bad_queries(tiny, tmp_path):
    tiny.ours.save(str(tmp_path / "again"))
    again = FLAM.load(str(tmp_path / "again"))
    np.testing.assert_array_equal(again.embed_text(CAPTIONS[:2]).emb, tiny.ours.embed_text(CAPTIONS[:2]).emb)
    with pytest.raises(InputError, match="empty"):
        tiny.ours.embed_text(["a dog", ""])
    with pytest.raises(InputError, match="longer than 10 s"):
        tiny.ours.embed_audio(np.zeros(480001, np.float32))
    with pytest.raises(InputError, match="NaN"):
        tiny.ours.embed_audio(np.full(48000, np.nan, np.float32))
    with pytest.raises(InputError, match="sample rate"):
        tiny.ours.embed_audio(np.zeros(48000, np.float32), sample_rate=0)  # 16 kHz is resampled now
