"""The band-limit augmentation (data.band_limit): what it removes, what it keeps, and that
it leaves the pipeline's elements untouched when off."""

import numpy as np
import pytest
from test_data_batches import FakeTokenizer
from test_data_pipeline import SHORT, records

from flam_jax.config import base_config, validate
from flam_jax.data import augment, pipeline, pools
from flam_jax.errors import ConfigError
from flam_jax.timeline import SAMPLE_RATE


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return np.sin(2 * np.pi * hz * t).astype(np.float32)


def test_low_pass_removes_what_is_above_the_cutoff_and_keeps_what_is_below():
    both = tone(2000.0) + tone(6000.0)
    out = augment.low_pass(both, 4000.0)
    assert out.dtype == np.float32 and out.shape == both.shape
    np.testing.assert_allclose(out, tone(2000.0), atol=1e-4)
    # Inside the roll-off the tone is attenuated, not cut: half-way down, half the amplitude.
    middle = augment.low_pass(tone(3750.0), 4000.0)
    assert abs(np.abs(middle).max() - 0.5) < 0.01


def test_band_limit_draws_nothing_when_off_and_always_cuts_at_one():
    wave = np.random.default_rng(1).standard_normal(SAMPLE_RATE).astype(np.float32)
    rng = np.random.default_rng(7)
    assert augment.band_limit(wave, 0.0, rng) is wave
    assert rng.random() == np.random.default_rng(7).random()  # the stream was not advanced
    spectrum = np.abs(np.fft.rfft(augment.band_limit(wave, 1.0, rng)))
    freqs = np.fft.rfftfreq(wave.size, 1.0 / SAMPLE_RATE)
    assert spectrum[freqs > max(augment.CUTOFFS_HZ)].max() < 1e-3 * spectrum.max()


def test_band_limited_mixtures_are_the_plain_ones_low_passed_with_the_same_labels():
    pool = pools.RecordPool.from_records(records(12, background_every=5))

    def mixtures(band_limit):
        ds = pipeline.sed_dataset(
            pool, FakeTokenizer(), pipeline.batches.SedBatchSpec(1, 1), SHORT, seed=0, band_limit=band_limit
        ).elements()
        return [ds[i] for i in range(6)]

    plain, cut = mixtures(0.0), mixtures(1.0)
    for a, b in zip(plain, cut, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.captions == b.captions
        # Each is one of the cutoffs applied to the very same mixture.
        errors = [np.abs(augment.low_pass(a.audio, hz) - b.audio).max() for hz in augment.CUTOFFS_HZ]
        assert min(errors) < 1e-6


def test_band_limit_outside_zero_to_one_is_refused():
    c = base_config()
    c.data.band_limit = 1.5
    with pytest.raises(ConfigError, match=r"data.band_limit must be in \[0, 1\]"):
        validate(c)
