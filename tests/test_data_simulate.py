"""The mixture simulator: exact frame labels, overlap cap, fragments/repeats, determinism."""

import numpy as np
import pytest

from flam_jax.data import pools
from flam_jax.data import simulate as sim

RATE = 48_000
FRAME_S = 10.0 / 32


def tone(seconds, freq=1000.0, amplitude=0.5):
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def expected_labels(intervals_s, min_overlap=0.5):
    """Frame labels from the rule, computed from exact interval overlaps."""
    fractions = np.zeros(32)
    for start, end in intervals_s:
        for k in range(32):
            lo, hi = k * FRAME_S, (k + 1) * FRAME_S
            fractions[k] += max(0.0, min(hi, end) - max(lo, start)) / FRAME_S
    # The test's times keep every frame clear of the threshold, so window rounding cannot matter.
    assert np.all(np.abs(fractions - min_overlap) > 0.06), fractions
    return (fractions >= min_overlap).astype(np.uint8)


def silent_background(cfg):
    return np.zeros(cfg.num_samples, dtype=np.float32)


def test_frame_labels_follow_known_onsets():
    cfg = sim.SimulatorConfig()
    gap = np.concatenate([tone(1.1), np.zeros(RATE, np.float32), tone(0.6)])  # sound, 1 s silence, sound
    events = [
        sim.make_event(tone(2.0), "a", onset=1 * RATE, level_db=-20, cfg=cfg),
        sim.make_event(tone(0.9, freq=3000), "b", onset=round(4.1 * RATE), level_db=-30, cfg=cfg),
        sim.make_event(gap, "c", onset=6 * RATE, level_db=-25, cfg=cfg),
    ]
    _, labels = sim.render(silent_background(cfg), events, cfg)
    assert labels.shape == (3, 32) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[0], expected_labels([(1.0, 3.0)]))
    np.testing.assert_array_equal(labels[1], expected_labels([(4.1, 5.0)]))
    np.testing.assert_array_equal(labels[2], expected_labels([(6.0, 7.1), (8.1, 8.7)]))


def test_frame_labels_follow_levels_in_the_final_mixture():
    cfg = sim.SimulatorConfig()
    quiet = [sim.make_event(tone(3.0), "quiet", onset=RATE, level_db=-68, cfg=cfg)]
    silent = [sim.make_event(tone(3.0), "silent", onset=RATE, level_db=-75, cfg=cfg)]
    loud = [sim.make_event(tone(1.0, amplitude=1.0), "loud", onset=6 * RATE, level_db=0.0, cfg=cfg)]
    _, labels = sim.render(silent_background(cfg), quiet + silent, cfg)
    assert labels[0].sum() > 0 and labels[1].sum() == 0
    # The loud event forces the peak limiter (about -4 dB), which pushes -68 dB below -70 dB.
    audio, labels = sim.render(silent_background(cfg), quiet + loud, cfg)
    assert np.abs(audio).max() == pytest.approx(cfg.peak_limit, rel=1e-5)
    assert labels[0].sum() == 0 and labels[1].sum() > 0
    # A stricter frame rule turns the 60%-covered edge frames negative.
    strict = sim.SimulatorConfig(min_overlap=0.9)
    event = [sim.make_event(tone(2.0), "a", onset=1 * RATE, level_db=-20, cfg=strict)]
    _, labels = sim.render(silent_background(strict), event, strict)
    np.testing.assert_array_equal(labels[0], expected_labels([(1.0, 3.0)], min_overlap=0.9))


def make_pool(rng, events=40, backgrounds=2, silent_background=False, seconds=(0.5, 4.0)):
    clips = [
        pools.Clip(tone(rng.uniform(*seconds), freq=rng.uniform(300, 4000)), [f"event {i}", f"other {i}"])
        for i in range(events)
    ]
    for i in range(backgrounds):
        audio = np.zeros(3 * RATE, np.float32) if silent_background else 0.1 * tone(3.0, 150.0)
        clips.append(pools.Clip(audio, [f"background {i}"], ("Ambiance",), f"bg{i}"))
    return pools.InMemoryPool(clips)


def concurrency(spans, length=480_000):
    count = np.zeros(length + 1, np.int32)
    for event in spans:
        for a, b in event:
            count[a] += 1
            count[b] -= 1
    return np.cumsum(count)[:length]


@pytest.mark.parametrize("cap", [1, 3])
def test_overlap_cap(cap):
    pool = make_pool(np.random.default_rng(0), seconds=(2.0, 6.0))
    cfg = sim.SimulatorConfig(min_events=10, max_events=10, max_overlap=cap)
    peaks = []
    for index in range(12):
        mixture = sim.simulate_index(pool, 3, index, cfg)
        peaks.append(concurrency(mixture.spans).max())
        assert len(mixture.captions) == len(mixture.labels) == len(mixture.spans) >= 1
    assert max(peaks) == cap  # the cap is reached and never exceeded


def test_background_is_an_ambiance_clip_or_noise():
    cfg = sim.SimulatorConfig(max_events=2)
    mixture = sim.simulate_index(make_pool(np.random.default_rng(0)), 0, 0, cfg)
    assert mixture.background in ("bg0", "bg1")
    no_background = make_pool(np.random.default_rng(0), backgrounds=0)
    assert sim.simulate_index(no_background, 0, 0, cfg).background == "noise"


def test_fragments_split_one_clip_into_separated_pieces():
    pool = make_pool(np.random.default_rng(1), silent_background=True, seconds=(3.0, 4.0))
    cfg = sim.SimulatorConfig(min_events=1, max_events=1, fragment_prob=1.0, repeat_prob=0.0)
    counts = set()
    for index in range(10):
        mixture = sim.simulate_index(pool, 0, index, cfg)
        (spans,) = mixture.spans
        counts.add(len(spans))
        lengths = [b - a for a, b in spans]
        gaps = [spans[k + 1][0] - spans[k][1] for k in range(len(spans) - 1)]
        assert all(g >= 0.2 * RATE - 1 for g in gaps)
        assert sum(lengths) <= 4.0 * RATE  # the pieces come from one clip of <= 4 s
        for k in range(len(spans) - 1):  # frames fully inside a gap are negative
            lo, hi = spans[k][1] / RATE, spans[k + 1][0] / RATE
            inside = [f for f in range(32) if f * FRAME_S >= lo and (f + 1) * FRAME_S <= hi]
            assert mixture.labels[0, inside].sum() == 0
    assert counts <= {2, 3} and len(counts) == 2


def test_repeats_play_the_same_segment_again():
    pool = make_pool(np.random.default_rng(2), silent_background=True, seconds=(0.5, 2.0))
    cfg = sim.SimulatorConfig(min_events=1, max_events=1, fragment_prob=0.0, repeat_prob=1.0)
    counts = set()
    for index in range(10):
        mixture = sim.simulate_index(pool, 0, index, cfg)
        (spans,) = mixture.spans
        counts.add(len(spans))
        (a0, b0), *rest = spans
        for a, b in rest:
            assert b - a == b0 - a0
            np.testing.assert_array_equal(mixture.audio[a:b], mixture.audio[a0:b0])
        assert mixture.labels[0].sum() > 0
    assert counts == {2, 3}


def test_same_seed_and_index_give_identical_mixtures():
    pool = make_pool(np.random.default_rng(0))
    cfg = sim.SimulatorConfig()
    a, b = sim.simulate_index(pool, 7, 11, cfg), sim.simulate_index(pool, 7, 11, cfg)
    assert a.audio.tobytes() == b.audio.tobytes() and a.captions == b.captions
    assert a.labels.tobytes() == b.labels.tobytes()
    c = sim.simulate_index(pool, 8, 11, cfg)
    assert c.audio.tobytes() != a.audio.tobytes()


def test_primary_clip_is_always_used():
    pool = make_pool(np.random.default_rng(0))
    cfg = sim.SimulatorConfig()
    assert sim.simulate_index(pool, 0, 5, cfg).sources[0] == pool.name(5)
    background_index = len(pool) - 1
    assert sim.simulate_index(pool, 0, background_index, cfg).background == pool.name(background_index)
