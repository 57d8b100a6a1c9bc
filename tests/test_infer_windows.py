"""Long audio: windowing, padding and averaging onto one 3.2 Hz timeline (fake scorer and real model)."""

import numpy as np
import pytest
from infer_fixtures import SR, build_random_model, tokenizer, tone

from flam_jax import timeline as win
from flam_jax.errors import InputError
from flam_jax.infer.events import extract_events

F = 32
FRAME = 15000  # samples per frame at 48 kHz


def tone_scorer(windows: np.ndarray) -> np.ndarray:
    """A fake model: per window, frame score = share of loud samples in the frame ([W, 1, F])."""
    loud = np.abs(windows) > 0.05
    return loud.reshape(windows.shape[0], 1, F, FRAME).mean(-1)


def test_window_geometry():
    hop = win.hop_samples(5.0, F)
    assert hop == 240000
    assert win.window_starts(480000, hop) == [0]
    assert win.window_starts(480001, hop) == [0, 240000]
    assert win.window_starts(40 * SR, hop) == [0, 240000, 480000, 720000, 960000, 1200000, 1440000]
    assert win.total_frames(40 * SR, F) == 128
    assert win.total_frames(int(12.5 * SR) + 1, F) == 41  # a frame that starts before the end counts
    for bad in (0.0, -5.0, 0.3, 10.5):
        with pytest.raises(InputError, match="hop"):
            win.hop_samples(bad, F)


@pytest.mark.parametrize("hop_s", [5.0, 2.5, 10.0])
def test_planted_event_found_within_one_frame(hop_s):
    duration, onset, length = 40.0, 23.4, 2.0
    wave = np.zeros(int(duration * SR), np.float32)
    start = int(onset * SR)
    wave[start : start + int(length * SR)] = tone(length)
    scores = win.score_timeline(wave, tone_scorer, win.hop_samples(hop_s, F))
    assert scores.shape == (1, 128)
    events = extract_events(scores, ["tone"], frame_hop_s=0.3125, duration_s=duration, threshold=0.5)
    assert len(events[0]) == 1
    event = events[0][0]
    assert abs(event.onset - onset) <= 0.3125 and abs(event.offset - (onset + length)) <= 0.3125
    # Overlapping windows agree on a stationary scorer: the average equals a single pass.
    direct = np.abs(wave) > 0.05
    expected = np.pad(direct, (0, 128 * FRAME - direct.size)).reshape(128, FRAME).mean(-1)
    np.testing.assert_allclose(scores[0], expected, atol=1e-12)


def test_overlaps_are_averaged_and_padding_frames_dropped():
    # A scorer that returns each window's index: frames covered by windows 0 and 1 average 0.5.
    def index_scorer(windows):
        return np.broadcast_to(
            np.arange(windows.shape[0], dtype=float)[:, None, None], (windows.shape[0], 1, F)
        )

    num_samples = int(13.0 * SR)
    scores = win.score_timeline(np.ones(num_samples, np.float32), index_scorer, win.hop_samples(5.0, F))
    assert scores.shape == (1, 42)  # ceil(13 / 0.3125) frames, the padded rest dropped
    np.testing.assert_array_equal(scores[0, :16], 0.0)  # [0, 5) s: window 0 only
    np.testing.assert_array_equal(scores[0, 16:32], 0.5)  # [5, 10) s: windows 0 and 1
    np.testing.assert_array_equal(scores[0, 32:], 1.0)  # [10, 13) s: window 1 only


def test_last_window_is_zero_padded_not_stretched():
    wave = np.arange(1, 12 * SR + 1, dtype=np.float32)
    starts = win.window_starts(wave.size, win.hop_samples(5.0, F))
    cut = win.cut_windows(wave, starts)
    assert starts == [0, 240000]
    np.testing.assert_array_equal(cut[1, : 7 * SR], wave[240000:])
    np.testing.assert_array_equal(cut[1, 7 * SR :], 0.0)


@pytest.fixture(scope="module")
def flam():
    from flam_jax.infer.api import FLAM

    model, cfg = build_random_model()
    return FLAM(model, cfg, tokenizer(), max_batch=1)  # one audio compilation for the whole module


def test_real_model_ten_second_file_is_the_single_window(flam):
    wave = np.random.default_rng(1).normal(0, 0.1, 10 * SR).astype(np.float32)
    text = flam.embed_text(["a dog barking", "rain"])
    timeline = flam.score(wave, text)
    single = flam.frame_scores(flam.embed_audio(wave), text)[0]
    assert timeline.scores.shape == (2, 32) and timeline.frame_rate_hz == 3.2
    np.testing.assert_array_equal(timeline.scores, single.astype(np.float64))


def test_real_model_long_file_averages_window_scores(flam):
    rng = np.random.default_rng(2)
    wave = rng.normal(0, 0.1, int(17.3 * SR)).astype(np.float32)
    text = flam.embed_text(["a siren", "a dog barking"])
    timeline = flam.score(wave, text, hop_s=5.0)
    assert timeline.scores.shape == (2, 56)
    # By hand: windows at 0, 5, 10 s, the last zero-padded; each scored as its own clip.
    padded = np.zeros(20 * SR, np.float32)
    padded[: wave.size] = wave
    starts = (0, 5, 10)
    per_window = [
        flam.frame_scores(flam.embed_audio(padded[s * SR : (s + 10) * SR]), text)[0] for s in starts
    ]
    acc, count = np.zeros((2, 64)), np.zeros(64)
    for i, scores in enumerate(per_window):
        acc[:, 16 * i : 16 * i + 32] += scores
        count[16 * i : 16 * i + 32] += 1
    np.testing.assert_allclose(timeline.scores, (acc / count)[:, :56], atol=1e-5)
    # Resampling: the same recording at 16 kHz, stereo, gives nearly the same timeline.
    import soxr

    low = soxr.resample(wave, SR, 16000)
    stereo = np.stack([low, low], axis=1)
    again = flam.score(stereo, text, sample_rate=16000)
    assert again.scores.shape == timeline.scores.shape
    assert np.abs(again.scores - timeline.scores).max() < 0.05


def test_mixed_lengths_share_compilations(flam):
    text = flam.embed_text(["a siren", "a dog barking"])
    flam.score(np.zeros(10 * SR, np.float32), text)
    audio, scores = flam._audio_fn._cache_size(), flam._score_fn._cache_size()
    rng = np.random.default_rng(4)
    for seconds in (3.0, 12.7, 21.1, 10.0):
        flam.score(rng.normal(0, 0.1, int(seconds * SR)).astype(np.float32), text)
    # _cache_size is private jax API; it exists in 0.10 and 0.11 (checked by this test).
    assert flam._audio_fn._cache_size() == audio and flam._score_fn._cache_size() == scores


def test_bad_arrays(flam):
    with pytest.raises(InputError, match="no samples"):
        flam.score(np.zeros(0, np.float32), ["x"])
    with pytest.raises(InputError, match="NaN"):
        flam.score(np.full(1000, np.nan, np.float32), ["x"])
    with pytest.raises(InputError, match="floating"):
        flam.score(np.zeros(1000, np.int16), ["x"])
    with pytest.raises(InputError, match="empty"):
        flam.score(np.zeros(1000, np.float32), ["x", " "])
    with pytest.raises(InputError, match="hop"):
        flam.score(np.zeros(1000, np.float32), ["x"], hop_s=3.0)
