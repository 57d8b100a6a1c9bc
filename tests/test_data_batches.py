"""SED and global batch assembly: shared-caption labels, budgets, padding, determinism."""

import numpy as np
import pytest

from flam_jax.data import batches as B
from flam_jax.data import pools
from flam_jax.data import simulate as sim


class FakeTokenizer:
    """Characters -> ids, fixed length 8; enough to check the wiring."""

    length = 8

    def encode(self, texts):
        ids = np.zeros((len(texts), self.length), np.int32)
        mask = np.zeros((len(texts), self.length), np.int32)
        for i, text in enumerate(texts):
            codes = [1, *(ord(c) % 500 + 2 for c in text[: self.length - 1])]
            ids[i, : len(codes)] = codes
            mask[i, : len(codes)] = 1
        return ids, mask


def frames(*on):
    row = np.zeros(32, np.uint8)
    row[list(on)] = 1
    return row


def mixture(captions, rows, fill=0.0):
    return sim.Mixture(
        audio=np.full(480_000, fill, np.float32),
        captions=list(captions),
        labels=np.stack(rows).astype(np.uint8),
        spans=[[(0, 1)] for _ in captions],
        sources=["src"] * len(captions),
        background="noise",
    )


def test_shared_captions_are_one_text_positive_wherever_they_sound():
    m0 = mixture(["Dog barking", "car horn", "dog  barking."], [frames(1, 2), frames(5), frames(9)])
    m1 = mixture(["dog barking", "rain"], [frames(20), frames(0, 31)])
    spec = B.SedBatchSpec(groups=1, clips_per_group=2, texts_per_clip=5)
    batch = B.sed_batch([m0, m1], FakeTokenizer(), spec)
    ids = batch["caption_ids"]
    assert batch["text_mask"].tolist() == [True, True, True] + [False] * 7
    dog = int(np.flatnonzero(ids == B.caption_id("dog barking"))[0])
    rain = int(np.flatnonzero(ids == B.caption_id("Rain"))[0])
    horn = int(np.flatnonzero(ids == B.caption_id("car horn"))[0])
    labels = batch["labels"]
    assert labels.shape == (2, 10, 32) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels[0, dog], frames(1, 2, 9))  # two events, one caption
    np.testing.assert_array_equal(labels[1, dog], frames(20))  # the same text, the other clip
    np.testing.assert_array_equal(labels[0, rain], frames())
    np.testing.assert_array_equal(labels[1, rain], frames(0, 31))
    np.testing.assert_array_equal(labels[1, horn], frames())
    assert labels[:, 3:].sum() == 0 and np.all(ids[3:] == B.PAD_CAPTION_ID)
    assert batch["audio_mask"].all() and batch["text_tokens"].shape == (10, 8)
    # Padding slots hold a real (masked) text, never an all-masked row.
    assert np.all(batch["text_attention"].sum(1) >= 1)


def test_other_captions_of_a_sounding_clip_are_positive_too():
    from flam_jax.evals.hook import mixture_queries

    m0 = mixture(["a cymbal", "rain"], [frames(3, 4), frames(0)])
    m0.synonyms = [("a cymbal", "a hi-hat cymbal"), ("rain",)]
    m1 = mixture(["a hi-hat cymbal"], [frames(7)])  # no synonyms known: its caption only
    spec = B.SedBatchSpec(groups=1, clips_per_group=2, texts_per_clip=5)
    batch = B.sed_batch([m0, m1], FakeTokenizer(), spec)
    hihat = int(np.flatnonzero(batch["caption_ids"] == B.caption_id("a hi-hat cymbal"))[0])
    cymbal = int(np.flatnonzero(batch["caption_ids"] == B.caption_id("a cymbal"))[0])
    np.testing.assert_array_equal(batch["labels"][0, hihat], frames(3, 4))
    np.testing.assert_array_equal(batch["labels"][1, hihat], frames(7))
    np.testing.assert_array_equal(batch["labels"][1, cymbal], frames())
    # Evaluation queries: every caption of a sounding clip, each positive where it sounds.
    queries, labels = mixture_queries([m0, m1])
    assert queries == ["a cymbal", "a hi-hat cymbal", "rain"]
    np.testing.assert_array_equal(labels[0, 1], frames(3, 4))
    np.testing.assert_array_equal(labels[1, 0], frames())


def test_simulated_events_carry_every_caption_of_their_clip():
    pool = pools.InMemoryPool([pools.Clip(np.full(24_000, 0.3, np.float32), ["a cymbal", "a hi-hat cymbal"])])
    m = sim.simulate(pool, np.random.default_rng(0), sim.SimulatorConfig(max_events=1), primary=0)
    assert m.synonyms == [("a cymbal", "a hi-hat cymbal")] and m.event_captions(0)[0] == m.captions[0]


def test_groups_are_self_contained_blocks():
    m = [
        mixture(["a"], [frames(0)], 0.1),
        mixture(["b"], [frames(1)], 0.2),
        mixture(["b"], [frames(2)], 0.3),
        mixture(["c"], [frames(3)], 0.4),
    ]
    spec = B.SedBatchSpec(groups=2, clips_per_group=2, texts_per_clip=2)
    batch = B.sed_batch(m, FakeTokenizer(), spec)
    ids = batch["caption_ids"].reshape(2, 4)
    assert set(ids[0][:2]) == {B.caption_id("a"), B.caption_id("b")}
    assert set(ids[1][:2]) == {B.caption_id("b"), B.caption_id("c")}
    # Row 2 (block 1) refers to block 1's texts: "b" sits in block 1's own slot.
    j = int(np.flatnonzero(ids[1] == B.caption_id("b"))[0])
    np.testing.assert_array_equal(batch["labels"][2, j], frames(2))
    np.testing.assert_allclose(batch["audio"][:, 0], [0.1, 0.2, 0.3, 0.4])


def test_text_budget_takes_captions_round_robin():
    m0 = mixture(["a1", "a2", "a3"], [frames(0)] * 3)
    m1 = mixture(["b1", "b2"], [frames(1)] * 2)
    spec = B.SedBatchSpec(groups=1, clips_per_group=2, texts_per_clip=1)
    batch = B.sed_batch([m0, m1], FakeTokenizer(), spec)
    assert batch["caption_ids"].tolist() == [B.caption_id("a1"), B.caption_id("b1")]


def test_short_batches_are_padded_and_masked():
    spec = B.SedBatchSpec(groups=2, clips_per_group=2)
    batch = B.sed_batch([mixture(["a"], [frames(0)])], FakeTokenizer(), spec)
    assert batch["audio_mask"].tolist() == [True, False, False, False]
    assert batch["labels"][1:].sum() == 0 and batch["text_mask"].sum() == 1
    shapes = {k: v.shape for k, v in batch.items()}
    assert shapes["audio"] == (4, 480_000) and shapes["labels"] == (4, 10, 32)
    assert shapes["text_tokens"] == (20, 8) and shapes["caption_ids"] == (20,)


def test_simulated_batches_are_deterministic():
    rng = np.random.default_rng(0)
    clips = [pools.Clip(0.1 * rng.standard_normal(48_000).astype(np.float32), [f"e{i}"]) for i in range(20)]
    pool = pools.InMemoryPool(clips)
    cfg = sim.SimulatorConfig(max_events=4)
    spec = B.SedBatchSpec(groups=2, clips_per_group=2)

    def batch(seed):
        mixtures = [sim.simulate_index(pool, seed, i, cfg) for i in range(4)]
        return B.sed_batch(mixtures, FakeTokenizer(), spec)

    a, b, c = batch(1), batch(1), batch(2)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert a["audio"].tobytes() != c["audio"].tobytes()


def test_caption_ids_normalise_and_are_int32():
    assert B.caption_id("A dog  barks.") == B.caption_id("a dog barks")
    assert B.caption_id("a dog barks") != B.caption_id("a cat meows")
    assert 1 <= B.caption_id("x") < 2**31


def test_crop_or_loop():
    rng = np.random.default_rng(0)
    long = np.arange(600_000, dtype=np.float32)
    crop = B.crop_or_loop(long, rng)
    assert crop.shape == (480_000,) and np.all(np.diff(crop) == 1)  # one contiguous crop
    short = np.arange(100_000, dtype=np.float32)
    looped = B.crop_or_loop(short, rng)
    assert looped.shape == (480_000,)
    assert np.all((looped[1:] - looped[:-1] == 1) | (looped[1:] == 0))  # wraps only to the start
    pairs = [B.Pair(crop, "a dog"), B.Pair(looped, "rain")]
    batch = B.global_batch(pairs, FakeTokenizer())
    assert batch["audio"].shape == (2, 480_000) and batch["caption_ids"].dtype == np.int32
    with pytest.raises(Exception, match="no samples"):
        B.crop_or_loop(np.zeros(0, np.float32), rng)


def _layout(batch):
    return {name: (array.shape, array.dtype) for name, array in batch.items()}


def _host_rows(fields, hosts):
    """One host's share of a step's layout: its rows of every field's leading dimension."""
    return {name: ((shape[0] // hosts, *shape[1:]), dtype) for name, (shape, dtype) in fields.items()}


def test_pipeline_batches_have_exactly_the_layout_of_train_fields(tmp_path):
    """The real pipelines give the fields, shapes and dtypes of ``train_fields``, which the
    compile-only inputs, the stand-in batches and the step benchmark are built from: a
    field added to the assembly or to the layout alone fails here."""
    from data_fixtures import materialise

    from flam_jax.config import base_config
    from flam_jax.data import builders, pipeline

    builders.build("clips", materialise("clips", tmp_path), tmp_path / "tfds")
    config = base_config()
    config.data.dir = str(tmp_path / "tfds")
    config.data.sed_clips, config.data.global_batch = 4, 2
    expected = B.train_fields(config, sed_groups=2, text_length=FakeTokenizer.length)
    assert sorted(expected) == ["global", "sed"]
    for hosts in (1, 2):
        layout = {"process_index": 0, "process_count": hosts}  # a host reads its own rows
        sed = pipeline.sed_iterator(config, FakeTokenizer(), groups=2 // hosts, **layout)
        glob = pipeline.global_iterator(config, FakeTokenizer(), **layout)
        assert _layout(next(sed)) == _host_rows(expected["sed"], hosts)
        assert _layout(next(glob)) == _host_rows(expected["global"], hosts)


def test_standin_batches_have_the_layout_of_train_fields():
    import train_standins as st

    config = st.tiny_config()
    sizes = {"text_length": st.TEXT_LEN, "num_samples": st.SAMPLES, "frames": st.FRAMES}
    expected = B.train_fields(config, sed_groups=config.data.sed_groups, **sizes)
    for index, hosts in ((0, 1), (1, 2)):
        batch = st._host_batch(0, config, index, hosts, 0.0)
        assert sorted(batch) == sorted(expected)
        for part, fields in expected.items():
            assert _layout(batch[part]) == _host_rows(fields, hosts)
