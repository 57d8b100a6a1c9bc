"""The evaluation runner on tiny fixtures in each benchmark's layout, with fake models.

``EnergyFLAM`` scores a frame by its loudness, so on fixtures whose events are the loud
parts a correct pipeline (decoding, 10 s windowing, frame timing, labels) must reach a
frame AUROC of 1; any misalignment shows up as a lower value.
"""

import json
import os
import types

import numpy as np
import pytest
import soundfile

from flam_jax.cli import evaluate as evaluate_cli
from flam_jax.errors import DataError, InputError
from flam_jax.evals import runner
from flam_jax.evals.benchmarks import BENCHMARKS, get_benchmark, open_source, read_items
from flam_jax.evals.hook import frame_auroc_hook, mixture_queries, simulate_mixtures, validation_hook
from flam_jax.evals.sed import frame_auroc

RATE = 16000


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class EnergyFLAM:
    """FLAM API stand-in: frame direction encodes loudness; every text points at "loud"."""

    def embed_audio(self, wave):
        wave = np.asarray(wave)
        assert wave.shape[1:] == (480000,) and wave.dtype == np.float32
        rms = np.sqrt(np.mean(wave.reshape(len(wave), 32, 15000) ** 2, axis=-1))
        angle = np.clip(rms * 20, 0, np.pi / 2)
        frames = np.stack([np.sin(angle), np.cos(angle)], -1)
        return types.SimpleNamespace(frames=frames, global_=_unit(frames.mean(1) + 1e-9))

    def embed_text(self, texts):
        self.seen_texts = [*getattr(self, "seen_texts", []), *texts]
        rng = [np.random.default_rng(abs(hash(t)) % 2**32) for t in texts]
        emb = _unit(
            np.array(
                [
                    [1.0, 0.0] if "sound of" not in t else r.normal(size=2)
                    for t, r in zip(texts, rng, strict=True)
                ]
            )
        )
        return types.SimpleNamespace(
            texts=list(texts), emb=emb, alpha=np.full(len(texts), 10.0), beta=np.full(len(texts), -5.0)
        )

    def frame_scores(self, audio, text, method="unbiased"):
        cos = np.einsum("bfd,nd->bnf", audio.frames, text.emb)
        if method == "cosine":
            return (1 + cos) / 2
        return 1 / (1 + np.exp(-(text.alpha[None, :, None] * cos + text.beta[None, :, None])))


def _tone(seconds, loud_spans, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.001 * rng.standard_normal(len(t))
    for on, off in loud_spans:
        sel = (t >= on) & (t < off)
        wave[sel] += 0.5 * np.sin(2 * np.pi * 440 * t[sel])
    return wave.astype(np.float32)


def _write(folder, name, wave):
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, wave, RATE)


def _strong_fixture(root, audioset_columns=False):
    """DCASE layout (or AudioSet-strong column names): a 10 s clip with two events, a clip
    without events, and a 25 s recording (three 10 s windows, the last one padded)."""
    folder = os.path.join(root, "strong_as" if audioset_columns else "strong")
    clips = {
        "a.wav": (10.0, [(1.0, 4.0), (6.0, 8.5)]),
        "b.wav": (10.0, []),
        "long.wav": (25.0, [(2.0, 3.0), (21.0, 24.0)]),
    }
    head = (
        "segment_id\tstart_time_seconds\tend_time_seconds\tlabel"
        if audioset_columns
        else "filename\tonset\toffset\tevent_label"
    )
    lines = [head]
    for k, (name, (seconds, spans)) in enumerate(clips.items()):
        _write(folder, f"audio/test/{name}", _tone(seconds, spans, k))
        label = "/m/09x0r" if audioset_columns else "Speech"  # AudioSet labels are MIDs
        lines += [f"{name}\t{a}\t{b}\t{label}" for a, b in spans] or [f"{name}\t\t\t"]
    with open(os.path.join(folder, "test.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if audioset_columns:
        with open(os.path.join(folder, "mid_to_display_name.tsv"), "w") as f:
            f.write("/m/09x0r\tSpeech\n/m/0dgw9r\tHuman sounds\n")
    return folder


@pytest.mark.parametrize(("benchmark", "audioset_columns"), [("desed", False), ("audioset-strong", True)])
def test_sed_benchmark_end_to_end(tmp_path, benchmark, audioset_columns):
    folder = _strong_fixture(str(tmp_path), audioset_columns)
    out = tmp_path / "out"
    model = EnergyFLAM()
    result = runner.evaluate(
        model, benchmark, folder, out_dir=str(out), batch_size=2, cache_dir=str(tmp_path / "tfds")
    )
    assert model.seen_texts == ["speech"]  # MIDs are named through mid_to_display_name.tsv
    m = result["metrics"]
    assert result["split"] == "test" and m["clips"] == 1 + 1 + 3  # the 25 s clip is 3 windows
    assert m["events"] == 4 and m["classes"] == 1
    assert m["frame_auroc"] == pytest.approx(1.0)  # loud frames are exactly the event frames
    assert 0 < m["psds1"] <= 1 and 0 < m["psds2"] <= 1
    assert m["psds1_alpha_st0"] >= m["psds1"]  # no penalty on the spread across classes
    for key in ("intersection_f1_macro", "event_f1_macro", "segment_f1_macro", "mpauc"):
        assert 0 <= m[key] <= 1
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["frame_auroc"] == pytest.approx(m["frame_auroc"])
    assert "| frame_auroc |" in (out / "metrics.md").read_text()
    for png in ("roc.png", "f1_vs_threshold.png", "activation_maps.png"):
        assert (out / png).stat().st_size > 1000


def test_reader_keeps_events_and_windows_cut_them(tmp_path):
    folder = _strong_fixture(str(tmp_path))
    source, split = open_source(get_benchmark("maestro"), folder, cache_dir=str(tmp_path / "tfds"))
    items = {item.id: item for item in read_items(source)}
    assert split == "test" and set(items) == {"a.wav", "b.wav", "long.wav"}
    assert items["a.wav"].events == [(1.0, 4.0, "Speech"), (6.0, 8.5, "Speech")]
    assert items["b.wav"].events == []
    long = items["long.wav"]
    assert long.num_samples == 25 * 48000 and len(long.audio()) == 25 * 48000
    assert len(runner.sed_window_starts(long.num_samples)) == 3
    assert runner.window_events(long.events, 0) == [(2.0, 3.0, "Speech")]
    assert runner.window_events(long.events, 2) == [(1.0, 4.0, "Speech")]
    windows = runner.sed_windows(long.audio())
    assert len(windows) == 3 and all(w.shape == (480000,) for w in windows)
    assert not windows[2][5 * 48000 :].any()  # zero padding after the recording ends
    assert len(runner.sed_window_starts(int(10.3 * 48000))) == 1  # a 0.3 s tail is dropped
    # The folder the raw copy was built into is itself a valid --data-dir.
    for name in ("desed", "urbansed", "audioset-strong"):  # the same strong layout
        built, _ = open_source(get_benchmark(name), str(tmp_path / "tfds"))
        assert len(built) == 3
    assert not (tmp_path / "tfds" / ".flam_tfds").exists()


def _pairs_fixture(root, layout):
    folder = os.path.join(root, layout)
    captions = {
        "loud": ["a loud tone", "a beep", "a steady tone", "an electronic beep", "a tone sounds"],
        "quiet": ["near silence", "a quiet room", "faint hiss", "nothing happens", "soft noise"],
        "mixed": [
            "a tone then silence",
            "a short beep",
            "a beep in a quiet room",
            "tone",
            "silence and a tone",
        ],
    }
    spans = {"loud": [(0, 10)], "quiet": [], "mixed": [(0, 3)]}
    if layout == "audiocaps":
        rows, k = ["audiocap_id,youtube_id,start_time,caption"], 0
        for name, caps in captions.items():
            _write(folder, f"audio/test/{name}_30.wav", _tone(10.0, spans[name]))
            for cap in caps:
                rows.append(f"{k},{name},30,{cap}")
                k += 1
        table = "test.csv"
    else:
        rows = ["file_name,caption_1,caption_2,caption_3,caption_4,caption_5"]
        for name, caps in captions.items():
            _write(folder, f"evaluation/{name}.wav", _tone(22.0, spans[name]))  # Clotho clips run 15-30 s
            rows.append(",".join([f"{name}.wav", *caps]))
        table = "clotho_captions_evaluation.csv"
    with open(os.path.join(folder, table), "w") as f:
        f.write("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("benchmark", ["audiocaps", "clotho"])
def test_retrieval_benchmarks(tmp_path, benchmark):
    folder = _pairs_fixture(str(tmp_path), benchmark)
    result = runner.evaluate(
        EnergyFLAM(), benchmark, folder, out_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "tfds")
    )
    m = result["metrics"]
    assert m["clips"] == 3 and m["captions"] == 15
    for key in ("t2a_R@1", "t2a_R@5", "a2t_R@1", "a2t_mAP@10", "t2a_mAP@10"):
        assert 0 <= m[key] <= 1
    assert m["t2a_R@5"] == 1.0  # only 3 clips
    # Every caption embeds to the same vector here, so ties are broken by caption order.
    assert m["a2t_R@1"] == pytest.approx(1 / 3) and m["a2t_R@10"] == pytest.approx(2 / 3)
    assert (tmp_path / "out" / "metrics.md").exists()


def _classification_fixture(root, layout):
    folder = os.path.join(root, layout)
    rows = []
    classes = ["dog_bark", "rain", "siren"]
    for k in range(6):
        label, fold = k % 3, 1 + k % 2
        if layout == "esc50":
            name = f"{fold}-{k}-A-{label}.wav"
            _write(folder, f"audio/{name}", _tone(5.0, [(0, 5)] if label else []))
            rows.append(f"{name},{fold},{label},{classes[label]},False,{k},A")
        else:
            name = f"{k}-{label}-0-0.wav"
            _write(folder, f"audio/fold{fold}/{name}", _tone(4.0, [(0, 4)] if label else []))
            rows.append(f"{name},{k},0,4,1,{fold},{label},{classes[label]}")
    if layout == "esc50":
        path, head = "meta/esc50.csv", "filename,fold,target,category,esc10,src_file,take"
    else:
        path, head = "metadata/UrbanSound8K.csv", "slice_file_name,fsID,start,end,salience,fold,classID,class"
    os.makedirs(os.path.dirname(os.path.join(folder, path)), exist_ok=True)
    with open(os.path.join(folder, path), "w") as f:
        f.write("\n".join([head, *rows]) + "\n")
    return folder


@pytest.mark.parametrize(("benchmark", "layout"), [("esc50", "esc50"), ("us8k", "urbansound8k")])
def test_zeroshot_benchmarks(tmp_path, benchmark, layout):
    folder = _classification_fixture(str(tmp_path), layout)
    result = runner.evaluate(
        EnergyFLAM(), benchmark, folder, template="a sound of {}", cache_dir=str(tmp_path / "tfds")
    )
    m = result["metrics"]
    assert m["clips"] == 6 and m["classes"] == 3 and m["template"] == "a sound of {}"
    assert 0 <= m["accuracy"] <= m["top5"] == 1.0


def test_simulated_benchmark_and_validation_hook(tmp_path):
    folder = tmp_path / "clips"
    entries = []
    for k, (name, caption, spans, tags) in enumerate(
        [
            ("bg.wav", "street ambiance", [(0, 12)], ["ambiance"]),
            ("beep.wav", "a beep", [(0, 1.5)], []),
            ("tone.wav", "a long tone", [(0, 3)], []),
            ("chirp.wav", "a chirp", [(0, 0.8)], []),
        ]
    ):
        seconds = 12.0 if tags else max(b for _, b in spans)
        _write(str(folder), name, _tone(seconds, spans, k) * (0.05 if tags else 1.0))
        entries.append(json.dumps({"path": name, "captions": [caption], "tags": tags, "split": "test"}))
    (folder / "manifest.jsonl").write_text("\n".join(entries) + "\n")
    result = runner.evaluate(
        EnergyFLAM(), "simulated", str(folder), mixtures=4, seed=3, cache_dir=str(tmp_path / "tfds")
    )
    m = result["metrics"]
    assert m["mixtures"] == 4 and m["clips"] == 4 and 1 <= m["classes"] <= 3
    assert 0.5 < m["frame_auroc"] <= 1.0  # events are louder than the background

    # The hook on the same kind of mixtures equals frame_auroc on directly computed scores.
    from flam_jax.data.pools import RecordPool

    pool = RecordPool.from_records(
        open_source(get_benchmark("simulated"), str(folder), cache_dir=str(tmp_path / "tfds"))[0]
    )
    mixtures = simulate_mixtures(pool, 3, seed=5)
    queries, labels = mixture_queries(mixtures)
    model = EnergyFLAM()

    def score_fn(audio, texts):
        return model.frame_scores(model.embed_audio(audio), model.embed_text(texts))

    hook = frame_auroc_hook(score_fn, mixtures, batch_size=2)
    direct = frame_auroc(score_fn(np.stack([x.audio for x in mixtures]), queries), labels)
    assert hook["frame_auroc_micro"] == pytest.approx(direct["micro"])

    import jax
    import jax.numpy as jnp
    from flax import nnx

    class TinyModule(nnx.Module):  # FlamModel's calling convention, same scores as EnergyFLAM
        def __init__(self):
            self.w = nnx.Param(jnp.eye(2))

        def embed_audio(self, wave):
            rms = jnp.sqrt(jnp.mean(wave.reshape(wave.shape[0], 32, 15000) ** 2, -1))
            angle = jnp.clip(rms * 20, 0, jnp.pi / 2)
            frames = jnp.stack([jnp.sin(angle), jnp.cos(angle)], -1) @ self.w[...]
            return frames, frames.mean(1)

        def embed_text(self, ids, mask):
            n = ids.shape[0]
            return jnp.tile(jnp.array([[1.0, 0.0]]), (n, 1)), jnp.full((n,), 10.0), jnp.full((n,), -5.0)

        def frame_scores(self, frames, emb, alpha, beta):
            cos = jnp.einsum("bfd,nd->bnf", frames, emb)
            return jax.nn.sigmoid(alpha[None, :, None] * cos + beta[None, :, None])

    tokenizer = types.SimpleNamespace(
        encode=lambda texts: (np.zeros((len(texts), 4), np.int32), np.ones((len(texts), 4), np.int32))
    )
    validate = validation_hook(mixtures, tokenizer, batch_size=2)
    module = TinyModule()
    out = validate(module, 10)
    assert out["frame_auroc_micro"] == pytest.approx(hook["frame_auroc_micro"], abs=1e-6)
    module.w[...] = jnp.eye(2) * 0.5  # new parameters, same structure: no new trace or compile
    again = validate(module, 20)
    assert again["frame_auroc_micro"] == pytest.approx(out["frame_auroc_micro"], abs=1e-6)
    assert validate.scores._cache_size() == 1 and validate.embed_text._cache_size() == 1


def test_bad_input_is_one_line_error(tmp_path, capsys):
    with pytest.raises(InputError):
        get_benchmark("nope")
    with pytest.raises(DataError):
        runner.evaluate(EnergyFLAM(), "desed", str(tmp_path / "missing"))
    assert (
        evaluate_cli.main(["--model", str(tmp_path), "--benchmark", "nope", "--data-dir", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: unknown benchmark") and err.count("\n") == 1
    assert set(BENCHMARKS) == {
        "desed",
        "urbansed",
        "audioset-strong",
        "maestro",
        "audiocaps",
        "clotho",
        "esc50",
        "us8k",
        "audiogrounding",
        "simulated",
    }


def test_cli_writes_report(tmp_path, monkeypatch, capsys):
    """``flam-evaluate`` end to end, with FLAM.load answering an EnergyFLAM."""
    loaded = []
    loader = types.SimpleNamespace(load=lambda path: loaded.append(path) or EnergyFLAM())
    monkeypatch.setattr(evaluate_cli, "FLAM", loader)
    folder = _classification_fixture(str(tmp_path), "esc50")
    out = tmp_path / "report"
    argv = ["--model", "EXPORT", "--benchmark", "esc50", "--data-dir", folder, "--out", str(out)]
    assert evaluate_cli.main([*argv, "--cache-dir", str(tmp_path / "tfds"), "--batch-size", "4"]) == 0
    assert loaded == ["EXPORT"]
    printed = capsys.readouterr().out
    assert "| accuracy |" in printed and f"report written to {out}" in printed
    assert json.loads((out / "metrics.json").read_text())["metrics"]["clips"] == 6


def test_label_names_files(tmp_path):
    from flam_jax.data.builders.ontology import label_names

    assert label_names(str(tmp_path)) == {}
    (tmp_path / "class_labels_indices.csv").write_text(
        'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n'
    )
    assert label_names(str(tmp_path)) == {"/m/09x0r": "Speech", "/m/05zppz": "Male speech, man speaking"}
    with pytest.raises(DataError):
        label_names(str(tmp_path), str(tmp_path / "missing.tsv"))
