"""Each TFDS builder round-trips its fixture; audio IO decodes every format to 48 kHz mono."""

import sys

import numpy as np
import pytest
from data_fixtures import audio_list, materialise

from flam_jax.audio import io as audio_io
from flam_jax.data import builders
from flam_jax.errors import AudioDecodeError, DataError


def durations(name):
    return {path: seconds for path, seconds, _, corrupt in audio_list(name) if not corrupt}


def check_audio(record, seconds):
    wave = audio_io.decode_audio(record["audio"], source=record["id"])
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == record["num_samples"]
    assert abs(len(wave) - seconds * 48_000) <= 2 + 0.001 * seconds * 48_000  # mp3 adds padding
    assert 0.05 < np.abs(wave).max() <= 1.0


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def records(source):
    return [source[i] for i in range(len(source))]


def test_clips_builder_round_trips_and_skips_corrupt_files(tmp_path):
    folder = materialise("clips", tmp_path)
    builders.build("clips", folder, tmp_path / "tfds")
    train = records(builders.load("clips", tmp_path / "tfds", "train"))
    valid = records(builders.load("clips", tmp_path / "tfds", "validation"))
    assert sorted(text(r["id"]) for r in train) == ["bell.flac", "dog.wav", "rain.ogg"]  # broken.wav skipped
    assert [text(r["id"]) for r in valid] == ["horn.mp3"]
    seconds = durations("clips")
    by_id = {text(r["id"]): r for r in train + valid}
    for key, record in by_id.items():
        check_audio(record, seconds[key])
    assert [text(c) for c in by_id["bell.flac"]["captions"]] == ["a bell rings", "church bell"]
    assert [text(t) for t in by_id["rain.ogg"]["tags"]] == ["ambiance"]
    assert text(by_id["dog.wav"]["licence"]) == "CC0"
    assert "tensorflow" not in sys.modules


def test_strong_builder_round_trips_events(tmp_path):
    folder = materialise("strong", tmp_path)
    builders.build("strong", folder, tmp_path / "tfds")
    train = {text(r["id"]): r for r in records(builders.load("strong", tmp_path / "tfds", "train"))}
    events = train["clip1.wav"]["events"]
    np.testing.assert_allclose(events["onset"], [0.5, 2.0])
    np.testing.assert_allclose(events["offset"], [1.25, 4.5])
    assert [text(c) for c in events["caption"]] == ["dog", "alarm bell ringing"]
    assert len(train["clip2.wav"]["events"]["onset"]) == 0  # a clip without events
    (valid,) = records(builders.load("strong", tmp_path / "tfds", "validation"))
    check_audio(valid, 10.0)


@pytest.mark.parametrize("layout", ["audiocaps", "clotho"])
def test_pairs_builder_round_trips(tmp_path, layout):
    folder = materialise(layout, tmp_path)
    builders.build("pairs", folder, tmp_path / "tfds", config=layout)
    train = records(builders.load("pairs", tmp_path / "tfds", "train", config=layout))
    (test,) = records(builders.load("pairs", tmp_path / "tfds", "test", config=layout))
    if layout == "audiocaps":
        assert len(train) == 2
        assert len(test["captions"]) == 3  # the test clip's rows are grouped
        check_audio(test, 3.0)
    else:
        (clip,) = train
        assert text(clip["id"]) == "birds morning.wav" and len(clip["captions"]) == 5
        check_audio(clip, 2.5)


@pytest.mark.parametrize("layout", ["esc50", "urbansound8k"])
def test_classification_builder_round_trips(tmp_path, layout):
    folder = materialise(layout, tmp_path)
    builders.build("classification", folder, tmp_path / "tfds", config=layout)
    rows = {
        text(r["id"]): r for r in records(builders.load("classification", tmp_path / "tfds", "test", layout))
    }
    if layout == "esc50":
        assert rows["2-100648-A-43.wav"]["fold"] == 2 and rows["2-100648-A-43.wav"]["label_id"] == 43
        assert text(rows["1-100038-A-14.wav"]["caption"]) == "chirping birds"
    else:
        assert len(rows) == 3 and rows["102305-6-0-0.wav"]["fold"] == 1
        assert text(rows["100032-3-0-0.wav"]["label"]) == "dog_bark"
        check_audio(rows["100263-2-0-117.wav"], 4.0)


def test_builder_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="unknown dataset kind"):
        builders.build("nope", tmp_path, tmp_path)
    with pytest.raises(DataError, match="needs --config"):
        builders.build("pairs", tmp_path, tmp_path)
    with pytest.raises(DataError, match="not built"):
        builders.load("clips", tmp_path / "empty", "train")


def test_decode_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC not really")
    with pytest.raises(AudioDecodeError, match="bad.flac"):
        audio_io.load_audio(str(bad))
    with pytest.raises(AudioDecodeError, match="not found"):
        audio_io.load_audio(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioDecodeError, match="record-7"):
        audio_io.decode_audio(b"garbage", source="record-7")


def test_a_weighting_matches_the_standard_curve():
    from scipy import signal

    sos = audio_io.a_weighting_sos()
    _, h = signal.sosfreqz(sos, worN=[100.0, 1000.0, 4000.0], fs=48_000)
    # IEC 61672 table: -19.1, 0.0, +1.0 dB.
    np.testing.assert_allclose(20 * np.log10(np.abs(h)), [-19.1, 0.0, 1.0], atol=0.2)


def test_build_dataset_command(tmp_path, capsys):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "data", "build_dataset.py")
    spec = importlib.util.spec_from_file_location("build_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = materialise("esc50", tmp_path)
    assert (
        module.main(
            [
                "--kind=classification",
                "--config=esc50",
                f"--manual-dir={folder}",
                f"--data-dir={tmp_path / 'tfds'}",
            ]
        )
        == 0
    )
    assert "test: 2 examples" in capsys.readouterr().out
    assert module.main(["--kind=clips", f"--manual-dir={tmp_path / 'nope'}", "--data-dir=x"]) == 2
    assert "error: manual directory not found" in capsys.readouterr().err
