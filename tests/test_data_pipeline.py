"""The Grain pipeline: determinism, host sharding, save/restore mid-epoch, corrupt records."""

import numpy as np
import pytest
from data_fixtures import materialise
from test_data_batches import FakeTokenizer

from flam_jax.audio import io as audio_io
from flam_jax.config import base_config
from flam_jax.data import batches, builders, pipeline
from flam_jax.data import simulate as sim
from flam_jax.errors import DataError

SHORT = sim.SimulatorConfig(
    num_samples=48_000, window=300, max_events=3, max_event_s=0.5
)  # 1 s mixtures: fast


def records(count, corrupt=(), seconds=0.4, background_every=0):
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        wave = 0.2 * rng.standard_normal(round(seconds * 48_000)).astype(np.float32)
        audio = b"not a flac file" if i in corrupt else audio_io.encode_flac(wave)
        tags = ["ambiance"] if background_every and i % background_every == 0 else []
        out.append({"id": f"clip{i}", "audio": audio, "captions": [f"sound {i}"], "tags": tags})
    return out


def spec(groups=2, clips=2, num_samples=48_000):
    return batches.SedBatchSpec(groups=groups, clips_per_group=clips, num_samples=num_samples)


def sed(pool, **kwargs):
    kwargs.setdefault("seed", 0)
    return pipeline.sed_dataset(pool, FakeTokenizer(), spec(), SHORT, **kwargs)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def same(a, b):
    return all(x[k].tobytes() == y[k].tobytes() for x, y in zip(a, b, strict=True) for k in x)


def test_same_seed_gives_identical_batch_bytes():
    pool = pipeline.RecordPool(records(12, background_every=5))
    a = take(pipeline.DataIterator(sed(pool), 0), 2)
    b = take(pipeline.DataIterator(sed(pipeline.RecordPool(records(12, background_every=5))), 0), 2)
    c = take(pipeline.DataIterator(sed(pool, seed=1), 0), 2)
    assert same(a, b) and not same(a, c)
    assert a[0]["labels"].shape == (4, 10, 32) and a[0]["audio"].shape == (4, 48_000)


def test_host_shards_are_disjoint_and_complete():
    count = 11
    pool = sim.InMemoryPool([sim.Clip(np.ones(10, np.float32), [f"c{i}"]) for i in range(count)])
    seen = []
    for process in range(2):
        ds = pipeline._indices(len(pool), seed=3, process_index=process, process_count=2, num_epochs=1)
        seen.append([int(i) for i in ds])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(count))
    assert abs(len(seen[0]) - len(seen[1])) <= 1
    # Both processes use the same permutation, so each shard is a strided slice of it.
    everything = [int(i) for i in pipeline._indices(count, 3, 0, 1, 1)]
    assert seen[0] == everything[0::2] and seen[1] == everything[1::2]
    # Later epochs are reshuffled, and the shards stay disjoint and complete in each.
    two = [[int(i) for i in pipeline._indices(10, 3, p, 2, 2)] for p in range(2)]
    epoch1, epoch2 = two[0][:5] + two[1][:5], two[0][5:] + two[1][5:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(10))
    assert two[0][:5] != two[0][5:]


def test_save_and_restore_mid_epoch_continues_identically():
    pool = pipeline.RecordPool(records(24))
    straight = pipeline.DataIterator(sed(pool), 5)
    take(straight, 2)
    state = straight.get_state()
    expected = take(straight, 3)  # crosses the epoch boundary (24 records, 4 per batch)
    resumed = pipeline.DataIterator(sed(pipeline.RecordPool(records(24))), 5)
    resumed.set_state(state)
    assert same(take(resumed, 3), expected)


def test_orbax_checkpoint_round_trip(tmp_path):
    import grain
    import orbax.checkpoint as ocp

    pool = pipeline.RecordPool(records(10))
    it = pipeline.DataIterator(pipeline.global_dataset(pool, FakeTokenizer(), 2, seed=0, num_samples=4800), 0)
    take(it, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        manager.wait_until_finished()
    expected = take(it, 4)
    fresh = pipeline.DataIterator(
        pipeline.global_dataset(pool, FakeTokenizer(), 2, seed=0, num_samples=4800), 0
    )
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    assert same(take(fresh, 4), expected)


def test_corrupt_records_are_skipped_counted_and_budgeted(caplog):
    data = records(8, corrupt={3})
    it = pipeline.DataIterator(sed(pipeline.RecordPool(data), num_epochs=1), max_decode_errors=1)
    out = list(it)
    assert len(out) == 2 and it.decode_errors == 1 and it.failed_sources == ["clip3"]
    assert "clip3" in caplog.text
    # The failed record's caption never appears: it was replaced, not half-used.
    assert batches.caption_id("sound 3") not in np.concatenate([b["caption_ids"] for b in out])
    over = pipeline.DataIterator(sed(pipeline.RecordPool(records(8, corrupt={1, 3})), num_epochs=1), 1)
    with pytest.raises(DataError, match="max_decode_errors=1"):
        list(over)


def test_iterators_from_config_read_the_built_clips(tmp_path):
    folder = materialise("clips", tmp_path)
    builders.build("clips", folder, tmp_path / "tfds")
    config = base_config()
    config.data.dir = str(tmp_path / "tfds")
    config.data.sed_clips = 4
    config.data.global_batch = 2
    sed_it = pipeline.sed_iterator(config, FakeTokenizer(), groups=2, process_index=0, process_count=1)
    batch = next(sed_it)
    assert batch["audio"].shape == (4, 480_000) and batch["labels"].shape == (4, 10, 32)
    assert batch["text_tokens"].shape == (20, 8) and batch["audio_mask"].all()
    assert batch["labels"].sum() > 0
    glob = next(pipeline.global_iterator(config, FakeTokenizer(), process_index=0, process_count=1))
    assert glob["audio"].shape == (2, 480_000) and glob["caption_ids"].shape == (2,)
    config.data.sed_clips = 3
    with pytest.raises(Exception, match="split evenly"):
        pipeline.sed_iterator(config, FakeTokenizer(), groups=2, process_index=0, process_count=1)


def test_strong_recordings_feed_the_sed_batch_with_annotated_labels(tmp_path):
    folder = materialise("strong", tmp_path)
    builders.build("strong", folder, tmp_path / "tfds")
    config = base_config()
    config.data.dir = str(tmp_path / "tfds")
    config.data.sed_dataset = "strong"
    config.data.sed_clips = 2
    it = pipeline.sed_iterator(
        config, FakeTokenizer(), groups=1, process_index=0, process_count=1, num_epochs=1
    )
    (batch,) = list(it)
    ids = batch["caption_ids"]
    row = 0 if batch["labels"][0].sum() else 1  # the clip with events (the fixture clips are 10 s: no crop)
    dog = int(np.flatnonzero(ids == batches.caption_id("dog"))[0])
    bell = int(np.flatnonzero(ids == batches.caption_id("alarm bell ringing"))[0])
    frame = 10 / 32
    expected_dog = [(min((k + 1) * frame, 1.25) - max(k * frame, 0.5)) / frame >= 0.5 for k in range(32)]
    expected_bell = [(min((k + 1) * frame, 4.5) - max(k * frame, 2.0)) / frame >= 0.5 for k in range(32)]
    np.testing.assert_array_equal(batch["labels"][row, dog], np.array(expected_dog, np.uint8))
    np.testing.assert_array_equal(batch["labels"][row, bell], np.array(expected_bell, np.uint8))
    assert batch["labels"][1 - row].sum() == 0 and batch["text_mask"].sum() == 2
