"""LAION-CLAP and HTS-AT checkpoints convert into starting points that compute what
laion_clap computes (issue 24).

laion_clap 1.1.7's own CLAP is built offline with random, spread weights
(``clap_oracle``), saved the way its training saves it, converted by
``flam-convert-clap`` and opened with ``FLAM.load``. Tolerance (fp32, CPU): 1e-4 on
unit-norm embeddings, as for openflam.
"""

import json
import warnings

import numpy as np
import pytest
import torch
from clap_oracle import (
    audio_outputs,
    build_clap,
    fusion_audio_keys,
    save_htsat_release,
    save_training_checkpoint,
    text_embeddings,
)
from flax import nnx
from openflam_oracle import CAPTIONS, parity_clips, write_bpe_files

from flam_jax.cli.convert_clap import main as convert_main
from flam_jax.errors import InputError, ModelLoadError
from flam_jax.infer.api import FLAM

EMB_TOL = 1e-4


def _load(export):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = FLAM.load(export)
    return model, [str(w.message) for w in caught]


class Converted:
    """laion_clap's CLAP, its checkpoint, and our FLAM converted from it."""

    def __init__(self, tmp, audio_size, text_layers):
        self.tokenizer_dir = write_bpe_files(str(tmp / "tokenizer"))
        self.ref = build_clap(audio_size, text_layers)
        self.checkpoint = save_training_checkpoint(self.ref, str(tmp / "clap.pt"))
        self.export = str(tmp / "export")
        argv = ["--checkpoint", self.checkpoint, "--tokenizer-dir", self.tokenizer_dir, "--out", self.export]
        assert convert_main(argv) == 0
        self.ours, self.warnings = _load(self.export)

    def check_audio(self, wave):
        ref = audio_outputs(self.ref, wave)
        ours = self.ours.embed_audio(wave)
        assert ours.frames.shape == ref["frames"].shape == (wave.shape[0], 32, 512)
        np.testing.assert_allclose(ours.frames, ref["frames"], atol=EMB_TOL, rtol=0)
        np.testing.assert_allclose(ours.global_, ref["global"], atol=EMB_TOL, rtol=0)

    def check_text(self):
        ref = text_embeddings(self.ref, CAPTIONS, self.tokenizer_dir)
        ours = self.ours.embed_text(CAPTIONS)
        np.testing.assert_allclose(ours.emb, ref, atol=EMB_TOL, rtol=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        converted = Converted(tmp_path_factory.mktemp("clap_tiny"), "tiny", text_layers=2)
    converted.summary = out.getvalue()
    return converted


def test_tiny_converts_to_a_starting_point_without_per_text_heads(tiny):
    config = json.loads(open(f"{tiny.export}/config.json").read())
    assert config["untrained"] == ["bias_head", "scale_head"]
    assert config["model"]["audio_size"] == "tiny" and config["model"]["text_tower"] == "roberta-tiny"
    from safetensors.numpy import load_file

    stored = load_file(f"{tiny.export}/params.safetensors")
    assert not any(k.startswith(("scale_head", "bias_head")) for k in stored)
    torch_state = tiny.ref.state_dict()
    np.testing.assert_array_equal(stored["logit_scale"], torch_state["logit_scale_a"].numpy())
    assert any("scale_head" in w and "cosine" in w for w in tiny.warnings)
    # FLAM.load gave the absent heads the model's own initial values (α ≈ 10, β ≈ −8).
    text = tiny.ours.embed_text(CAPTIONS)
    assert np.all(np.abs(np.log(text.alpha) - np.log(10.0)) < 1.0) and np.all(np.abs(text.beta + 8.0) < 1.0)
    # Frame scores that read those heads are refused; the cosine ones are what it can give.
    audio = tiny.ours.embed_audio(parity_clips()["random"])
    with pytest.raises(InputError, match="bias_head were never trained.*use method 'cosine'"):
        tiny.ours.frame_scores(audio, text)
    assert tiny.ours.frame_scores(audio, text, method="cosine").shape == (1, len(CAPTIONS), 32)
    left_out = (
        "left out 14 tensors (audio_branch.head, audio_branch.tscam_conv, audio_transform, logit_scale_t"
    )
    assert left_out in tiny.summary and "text_branch.embeddings.position_ids, text_transform)" in tiny.summary


def test_tiny_audio_embeddings_match_laion_clap(tiny):
    tiny.check_audio(np.stack(list(parity_clips().values())))


def test_tiny_text_embeddings_match_laion_clap(tiny):
    tiny.check_text()


@pytest.mark.slow
def test_base_full_size_matches_laion_clap(tmp_path):
    """HTSAT-base + roberta-base, the size FLAM starts from."""
    pair = Converted(tmp_path, "base", text_layers=12)
    assert (pair.ours.model_config.audio_size, pair.ours.model_config.text_tower) == ("base", "roberta-base")
    pair.check_audio(np.stack(list(parity_clips().values()))[:2])
    pair.check_text()


def test_an_htsat_release_checkpoint_becomes_the_audio_tower(tiny, tmp_path, capsys):
    """The HTS-AT release layout (32 kHz filterbank) → our audio tower, checked against
    laion_clap's same tower at 48 kHz (the way LAION-CLAP starts from it)."""
    ckpt = save_htsat_release(tiny.ref, str(tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"), sample_rate=32000)
    export = str(tmp_path / "htsat")
    assert convert_main(["--checkpoint", ckpt, "--text-tower", "roberta-tiny", "--out", export]) == 0
    line = capsys.readouterr().out
    assert "HTS-AT audio tower, HTS-AT tiny, text tower roberta-tiny" in line and "32 kHz" in line
    assert "left out 4 tensors (sed_model.head, sed_model.tscam_conv)" in line
    config = json.loads(open(f"{export}/config.json").read())
    assert "text" in config["untrained"] and "audio" not in config["untrained"]
    ours, caught = _load(export)
    assert any("text" in w for w in caught)
    with pytest.raises(InputError, match="text and text_projection were never trained"):
        ours.embed_text(["a dog"])
    wave = np.stack(list(parity_clips().values()))[:2]
    ref = audio_outputs(tiny.ref, wave)
    features = np.asarray(nnx.jit(lambda model, x: model.audio(x))(ours.model, wave))
    scale = float(np.abs(ref["features"]).max())
    np.testing.assert_allclose(features, ref["features"], atol=1e-4 * scale, rtol=0)
    np.testing.assert_allclose(features.mean(axis=1), ref["pooled"], atol=1e-4 * scale, rtol=0)
    with pytest.raises(ModelLoadError, match="starting point"):
        from flam_jax.export.stablehlo import export_stablehlo

        export_stablehlo(export)


# ----------------------------------------------------------------------------- bad input


def _state(tiny):
    from flam_jax.export.clap_layout import _numpy_data

    with torch.serialization.safe_globals(_numpy_data()):
        return torch.load(tiny.checkpoint, weights_only=True)


def _convert_error(tmp_path, capsys, checkpoint, *extra):
    rc = convert_main(["--checkpoint", checkpoint, "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    return err


def test_fusion_pann_and_stray_keys_are_one_line_errors(tiny, tmp_path, capsys):
    base = _state(tiny)
    fusion = fusion_audio_keys()
    assert fusion and all(".fusion_model." in k or ".mel_conv" in k for k in fusion)
    torch.save({"state_dict": {**base["state_dict"], **fusion}}, tmp_path / "fusion.pt")
    assert "is a fusion model" in _convert_error(tmp_path, capsys, str(tmp_path / "fusion.pt"))
    cases = {
        "stray": ("module.audio_branch.extra_layer.weight", "unexpected 1 audio key"),
        "stray_text": ("module.text_branch.extra.weight", "unexpected keys: text_branch.extra.weight"),
    }
    for name, (key, message) in cases.items():
        state = dict(base["state_dict"], **{key: torch.zeros(3)})
        path = str(tmp_path / f"{name}.pt")
        torch.save({"state_dict": state}, path)
        assert message in _convert_error(tmp_path, capsys, path, "--tokenizer-dir", tiny.tokenizer_dir), name
    pann = {"module.audio_branch.conv_block1.conv1.weight": torch.zeros(64, 1, 3, 3)}
    torch.save({"state_dict": pann}, tmp_path / "pann.pt")
    assert "PANN audio branch" in _convert_error(tmp_path, capsys, str(tmp_path / "pann.pt"))
    missing = {k: v for k, v in base["state_dict"].items() if k != "module.audio_projection.2.bias"}
    torch.save({"state_dict": missing}, tmp_path / "missing.pt")
    err = _convert_error(
        tmp_path, capsys, str(tmp_path / "missing.pt"), "--tokenizer-dir", tiny.tokenizer_dir
    )
    assert "1 missing keys: audio_projection.2.bias" in err


class TrainingArgs:
    """An arbitrary object in a checkpoint, which only --allow-pickle reads."""


def test_kind_mismatch_and_pickles_are_refused_with_the_way_out(tiny, tmp_path, capsys):
    err = _convert_error(tmp_path, capsys, tiny.checkpoint, "--kind", "htsat")
    assert "is a clap checkpoint, not htsat" in err
    err = _convert_error(tmp_path, capsys, tiny.checkpoint, "--text-tower", "roberta-base")
    assert "--text-tower is for HTS-AT checkpoints" in err

    state = _state(tiny)
    state["args"] = TrainingArgs()  # a pickled object, as some training scripts save
    torch.save(state, tmp_path / "pickled.pt")
    err = _convert_error(tmp_path, capsys, str(tmp_path / "pickled.pt"))
    assert "weights-only" in err and "--allow-pickle" in err
    trusted = ["--out", str(tmp_path / "trusted"), "--allow-pickle"]
    rc = convert_main(
        ["--checkpoint", str(tmp_path / "pickled.pt"), "--tokenizer-dir", tiny.tokenizer_dir, *trusted]
    )
    assert rc == 0


def test_an_untrained_list_naming_no_module_is_refused(tiny, tmp_path):
    import os

    folder = tmp_path / "edited"
    folder.mkdir()
    for name in ("params.safetensors", "tokenizer"):
        os.symlink(f"{tiny.export}/{name}", folder / name)
    config = json.loads(open(f"{tiny.export}/config.json").read())
    (folder / "config.json").write_text(json.dumps(dict(config, untrained=["scale_heads", "bias_head"])))
    with pytest.raises(ModelLoadError, match="untrained 'scale_heads' is not a module of this model"):
        FLAM.load(str(folder))


def test_an_htsat_filterbank_of_another_rate_is_refused(tiny, tmp_path, capsys):
    # LAION's 48 kHz HTS-AT (HTSAT-fullset-imagenet-map=0.467.ckpt) stores our own filterbank.
    ckpt48 = save_htsat_release(tiny.ref, str(tmp_path / "HTSAT_48k.ckpt"), sample_rate=48000)
    out = ["--text-tower", "roberta-tiny", "--out", str(tmp_path / "htsat48")]
    assert convert_main(["--checkpoint", ckpt48, *out]) == 0
    assert "mel filterbank made for 48 kHz" in capsys.readouterr().out
    ckpt = save_htsat_release(tiny.ref, str(tmp_path / "HTSAT_16k.ckpt"), sample_rate=16000)
    assert "logmel_extractor.melW disagrees" in _convert_error(tmp_path, capsys, ckpt)


@pytest.mark.slow
def test_flam_train_starts_from_the_converted_clap(tiny, tmp_path):
    """A real flam-train run (1 step) from the LAION-CLAP export: everything but the
    per-text heads is loaded, and those start fresh."""
    import os
    import subprocess
    import sys

    from data_fixtures import synthetic_clips

    from flam_jax.data import builders

    builders.build("clips", synthetic_clips(str(tmp_path), events=12, backgrounds=3), str(tmp_path / "tfds"))
    workdir = tmp_path / "run"
    overrides = {
        "data.dir": tmp_path / "tfds",
        "model.audio_size": "tiny",
        "model.text_tower": "roberta-tiny",
        "model.text_weights": "",
        "model.tokenizer": f"{tiny.export}/tokenizer",
        "model.context_length": 77,
        "train.init_from": tiny.export,
        "optim.frozen": "",
        "train.steps": 1,
        "train.ckpt_every": 1,
    }
    cmd = [sys.executable, "-m", "flam_jax.cli.train", "--config=experiments/cpu_demo.py:tiny"]
    cmd += [f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items())]
    env = dict(os.environ, XLA_FLAGS="")  # one CPU device, as a user's run here has
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "fresh 8 (bias_head 4, scale_head 4); unused in the file 0" in run.stdout
    report = json.loads((workdir / "init_report.json").read_text())
    assert {name.split("/")[0] for name in report["fresh"]} == {"scale_head", "bias_head"}
    assert len(report["loaded"]) == 223 and report["unused"] == {}


def test_an_htsat_checkpoint_in_a_bucket_converts_into_the_bucket(tiny, tmp_path, capsys):
    """gs:// on both sides, through the path layer, against the local GCS server."""
    from gcs_emulator import BUCKET, emulator

    from flam_jax import paths

    ckpt = save_htsat_release(tiny.ref, str(tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"))
    with emulator():
        remote = f"gs://{BUCKET}/ckpt/HTSAT_AudioSet_Saved_1.ckpt"
        paths.write_bytes(remote, open(ckpt, "rb").read())
        out = f"gs://{BUCKET}/exports/htsat"
        assert convert_main(["--checkpoint", remote, "--text-tower", "roberta-tiny", "--out", out]) == 0
        assert f"wrote {out}: HTS-AT audio tower" in capsys.readouterr().out
        config = json.loads(paths.read_text(f"{out}/config.json"))
        assert config["source"] == f"HTS-AT checkpoint {remote}" and "text" in config["untrained"]
        assert paths.isfile(f"{out}/params.safetensors")
