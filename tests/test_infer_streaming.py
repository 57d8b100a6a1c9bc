"""Long audio streamed from a file: the same results as the in-memory path, memory that does
not grow with the file, the same one-line decode errors; and two input checks (audio
shorter than one frame, a [samples, channels] array given to ``embed_audio``).

The window cutter and the running frame sums are checked against the whole-array rules of
``flam_jax.timeline`` on small windows (every edge case, quickly); the API on a random demo
model (``infer_fixtures``), streamed path against array.
"""

import tracemalloc
import warnings

import numpy as np
import pytest
import soundfile
from infer_fixtures import SR, build_random_model, tokenizer, write_wav

from flam_jax import timeline as tl
from flam_jax.audio.io import AudioStream, load_audio
from flam_jax.errors import AudioDecodeError, FlamWarning, InputError
from flam_jax.infer.api import FLAM

QUERIES = ["a dog barking", "rain on a roof"]


# --------------------------------------------------------------------------- the stream rules


def _push_all(cutter, wave, block):
    cuts = []
    for lo in range(0, wave.size, block):
        cuts += cutter.push(wave[lo : lo + block])
        # The memory claim itself: between pushes at most one window of audio is held.
        assert cutter._buffer.size <= cutter.window
    return cuts + cutter.finish()


@pytest.mark.parametrize("window,hop", [(64, 16), (64, 64), (64, 48), (60, 8)])
def test_cutter_gives_the_whole_array_windows(window, hop):
    """Every length around the edges (shorter than a window, exactly one, tails that do and
    do not fall on either grid) and block sizes from 1 sample to more than a window."""
    rng = np.random.default_rng(0)
    for n in [*range(1, 3 * window + 2), 5 * window + 7]:
        wave = rng.normal(size=n).astype(np.float32)
        frame_starts = tl.window_starts(n, hop, window)
        global_starts = tl.global_window_starts(n, window)
        for block in (1, 5, window - 1, window + 3, 1000):
            cuts = [
                (c.start, c.samples.copy(), c.frame, c.global_)
                for c in _push_all(tl.WindowCutter(hop, window), wave, block)
            ]
            frames = [c for c in cuts if c[2]]
            assert [c[0] for c in frames] == frame_starts, (n, block)
            np.testing.assert_array_equal(
                np.stack([c[1] for c in frames]), tl.cut_windows(wave, frame_starts, window)
            )
            globals_ = [c for c in cuts if c[3]]
            assert [c[0] for c in globals_] == global_starts, (n, block)
            np.testing.assert_array_equal(np.stack([c[1] for c in globals_]), tl.global_windows(wave, window))
            # A window is cut once: a frame window that is also a global one carries both flags.
            assert len({(c[0], c[2]) for c in cuts}) == len(cuts)
        # One rule alone cuts only its own windows, the same ones.
        only_globals = _push_all(tl.WindowCutter(hop, window, frames=False), wave, 7)
        assert [c.start for c in only_globals] == global_starts and all(c.global_ for c in only_globals)
        only_frames = _push_all(tl.WindowCutter(hop, window, globals_=False), wave, 7)
        assert [c.start for c in only_frames] == frame_starts and not any(c.global_ for c in only_frames)


def test_cutter_misuse():
    cutter = tl.WindowCutter(4, 8)
    with pytest.raises(InputError, match="empty"):
        cutter.finish()
    with pytest.raises(InputError, match="finished"):
        cutter.push(np.zeros(3, np.float32))
    with pytest.raises(InputError, match="hop"):
        tl.WindowCutter(9, 8)


def test_frame_score_sum_is_average_windows():
    rng = np.random.default_rng(1)
    window, frames, hop = 64, 8, 16
    for n in (5, 64, 65, 200, 333):
        starts = tl.window_starts(n, hop, window)
        scores = rng.random((len(starts), 3, frames)).astype(np.float32)
        sums = tl.FrameScoreSum(frames, window, capacity=1)  # grows several times
        for start, row in zip(starts, scores, strict=True):
            sums.add(start, row)
        np.testing.assert_array_equal(sums.result(n), tl.average_windows(scores, starts, n, window))


# --------------------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """25 s at 48 kHz (float samples), 25.3 s stereo 16-bit at 44.1 kHz, 4 s 16 kHz FLAC."""
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(2)
    out = {name: str(root / f) for name, f in (("48k", "a48.wav"), ("44k", "a44.wav"), ("16k", "a16.flac"))}
    soundfile.write(out["48k"], rng.normal(0, 0.1, 25 * SR).astype(np.float32), SR, subtype="FLOAT")
    stereo = rng.normal(0, 0.1, (int(25.3 * 44100), 2)).astype(np.float32)
    soundfile.write(out["44k"], stereo, 44100, subtype="PCM_16")
    soundfile.write(out["16k"], rng.normal(0, 0.1, 4 * 16000).astype(np.float32), 16000)
    return out


@pytest.mark.parametrize("name", ["48k", "44k", "16k"])
def test_stream_is_load_audio_in_pieces(files, name):
    """Mixing per block and soxr's streaming resampler give load_audio's samples exactly
    (block edges change nothing: soxr's one-shot call runs the same stream)."""
    for block in (1000, 44100, 1 << 16):
        with AudioStream(files[name], block_frames=block) as stream:
            pieces = list(stream.blocks())
            expected = stream.expected_samples
        whole = load_audio(files[name])
        np.testing.assert_array_equal(np.concatenate(pieces), whole)
        assert abs(expected - whole.size) <= 1  # the header's length, up to the resampler's rounding


def test_decode_errors_are_load_audio_s(tmp_path):
    """Each bad file fails streamed with load_audio's one-line message, naming the file."""
    rng = np.random.default_rng(3)
    good = rng.normal(0, 0.1, 5 * SR).astype(np.float32)
    soundfile.write(str(tmp_path / "whole.flac"), good, SR)
    data = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "truncated.flac").write_bytes(data[: len(data) // 2])  # fails mid-stream
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (tmp_path / "notes.txt").write_text("not audio")
    write_wav(tmp_path / "silent.wav", np.zeros(0, np.float32))
    bad = good.copy()
    bad[3 * SR] = np.inf
    soundfile.write(str(tmp_path / "inf.wav"), bad, SR, subtype="FLOAT")
    names = ["absent.wav", "truncated.flac", "empty.wav", "corrupt.wav", "notes.txt", "silent.wav", "inf.wav"]
    for name in names:
        path = str(tmp_path / name)
        with pytest.raises(AudioDecodeError) as old:
            load_audio(path)
        with pytest.raises(AudioDecodeError) as new:
            with AudioStream(path) as stream:
                for _ in stream.blocks():
                    pass
        assert str(new.value) == str(old.value) and path in str(new.value) and "\n" not in str(new.value)


# --------------------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def flam():
    model, cfg = build_random_model()
    # max_batch 4: 25.3 s at hop 5 is a full batch and a padded one; 25 s at hop 10 one padded.
    return FLAM(model, cfg, tokenizer(), max_batch=4)


@pytest.fixture(scope="module")
def text(flam):
    return flam.embed_text(QUERIES)


# Measured: 0.0 for every file and hop (the streamed path runs the same batches on the same
# samples); 1e-6 is the bar the issue sets.
TOL = 1e-6


@pytest.mark.parametrize(
    "name,hop_s", [("48k", 5.0), ("48k", 10.0), ("44k", 5.0), ("44k", 10.0), ("16k", 5.0)]
)
def test_streamed_path_equals_in_memory(flam, text, files, name, hop_s):
    path = files[name]
    wave = load_audio(path)  # an array takes the in-memory path
    streamed, whole = flam.score(path, text, hop_s=hop_s), flam.score(wave, text, hop_s=hop_s)
    assert streamed.scores.shape == whole.scores.shape == (2, tl.total_frames(wave.size, 32))
    assert streamed.duration_s == whole.duration_s and streamed.source == path
    np.testing.assert_allclose(streamed.scores, whole.scores, rtol=0, atol=TOL)
    streamed, whole = flam.embed_windows(path, hop_s=hop_s), flam.embed_windows(wave, hop_s=hop_s)
    assert streamed.starts == whole.starts and streamed.num_samples == whole.num_samples == wave.size
    np.testing.assert_allclose(streamed.frames, whole.frames, rtol=0, atol=TOL)
    np.testing.assert_allclose(streamed.global_, whole.global_, rtol=0, atol=TOL)
    if hop_s == 5.0:
        np.testing.assert_allclose(flam.global_embedding(path), flam.global_embedding(wave), rtol=0, atol=TOL)


def _write_long(path, seconds: int) -> str:
    """A 16-bit mono 48 kHz WAV written a second at a time (the test itself holds no wave)."""
    rng = np.random.default_rng(seconds)
    with soundfile.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as f:
        for _ in range(seconds):
            f.write(rng.normal(0, 0.1, SR).astype(np.float32))
    return str(path)


def _peak_traced_mb(fn) -> float:
    """Peak memory traced (numpy's allocations included) while ``fn`` runs, in MB."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return (tracemalloc.get_traced_memory()[1] - base) / 1e6
    finally:
        tracemalloc.stop()


def test_streamed_memory_does_not_grow_with_length(flam, text, tmp_path):
    """2 min vs 6 min: the streamed path's peak stays put (buffer, one batch, the timeline);
    the in-memory path's grows by at least the decoded wave (46 MB more here)."""
    short, long = _write_long(tmp_path / "short.wav", 120), _write_long(tmp_path / "long.wav", 360)
    flam.score(short, text, hop_s=10.0)  # compile outside the measurement
    streamed = {p: _peak_traced_mb(lambda p=p: flam.score(p, text, hop_s=10.0)) for p in (short, long)}
    whole = {
        p: _peak_traced_mb(lambda p=p: flam.score(load_audio(p), text, hop_s=10.0)) for p in (short, long)
    }
    wave_growth = (360 - 120) * SR * 4 / 1e6
    assert streamed[long] - streamed[short] < 2.0, streamed
    assert streamed[long] < 40.0, streamed  # 4 windows of batch, 2 of buffer, a read block
    assert whole[long] - whole[short] > wave_growth, whole


def test_shorter_than_a_frame_has_no_events_and_one_warning(flam, text, tmp_path):
    for samples in (1, 14999):
        path = write_wav(tmp_path / f"tiny{samples}.wav", np.full(samples, 0.5, np.float32))
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            found = flam.detect(path, text, threshold=0.0)  # a threshold every frame passes
        assert found.events == [] and found.events_per_query == [[], []]
        assert found.timeline.scores.shape == (2, 1)
        assert len(seen) == 1 and issubclass(seen[0].category, FlamWarning)
        message = str(seen[0].message)
        assert path in message and "shorter than one frame" in message and "\n" not in message
    # One whole frame is long enough: events as usual, no warning.
    path = write_wav(tmp_path / "frame.wav", np.full(15000, 0.5, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlamWarning)
        assert len(flam.detect(path, text, threshold=0.0).events) == 2


def test_channels_last_array_is_named(flam):
    stereo = np.zeros((480000, 2), np.float32)
    for rate in (None, 44100):
        with pytest.raises(InputError, match=r"looks like \[samples, channels\]") as err:
            flam.embed_audio(stereo, sample_rate=rate)
        assert "(480000, 2)" in str(err.value) and "[B, samples]" in str(err.value)
    # A batch of clips that are simply too short keeps its message.
    with pytest.raises(InputError, match="2 samples, shorter than the minimum 513"):
        flam.embed_audio(np.zeros((4, 2), np.float32))


def test_a_bucket_file_streams_through_the_path_layer(flam, text, files, tmp_path, monkeypatch):
    """gs:// (the local GCS emulator): the same timeline as the local file, fetched whole or
    (past ``paths.WHOLE_OBJECT_BYTES``) streamed, and the same errors as load_audio, the
    bucket path named."""
    import io

    from gcs_emulator import BUCKET, emulator

    from flam_jax import paths

    with emulator():
        remote = f"gs://{BUCKET}/streaming/a44.wav"
        paths.write_bytes(remote, open(files["44k"], "rb").read())
        local = flam.score(files["44k"], text).scores
        assert isinstance(paths.open_remote(remote), io.BytesIO)  # one request, not one per read
        np.testing.assert_array_equal(flam.score(remote, text).scores, local)
        monkeypatch.setattr(paths, "WHOLE_OBJECT_BYTES", 1000)
        assert not isinstance(paths.open_remote(remote), io.BytesIO)
        np.testing.assert_array_equal(flam.score(remote, text).scores, local)
        corrupt = f"gs://{BUCKET}/streaming/corrupt.wav"
        paths.write_bytes(corrupt, b"RIFF\x00\x00\x00\x00WAVEjunk")
        for path in (corrupt, f"gs://{BUCKET}/streaming/absent.wav"):
            with pytest.raises(AudioDecodeError) as old:
                load_audio(path)
            with pytest.raises(AudioDecodeError) as new:
                flam.score(path, text)
            assert str(new.value) == str(old.value) and path in str(new.value)
