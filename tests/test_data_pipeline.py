"""The Grain pipeline: per-host randomness and epochs, host-local sampling, determinism,
save/restore (also across worker counts), Grain workers, corrupt records, config entry."""

import multiprocessing
import time

import numpy as np
import pytest
from data_fixtures import materialise, synthetic_clips
from test_data_batches import FakeTokenizer

from flam_jax.audio import io as audio_io
from flam_jax.config import base_config
from flam_jax.data import batches, builders, pipeline, pools
from flam_jax.data import simulate as sim
from flam_jax.data.sampling import HostSampler
from flam_jax.errors import DataError

SHORT = sim.SimulatorConfig(num_samples=96_000, max_events=4, max_event_s=0.5)  # 2 s mixtures: fast


def records(count, corrupt=(), seconds=0.4, background_every=0):
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        wave = 0.2 * rng.standard_normal(round(seconds * 48_000)).astype(np.float32)
        audio = b"not a flac file" if i in corrupt else audio_io.encode_flac(wave)
        tags = ["ambiance"] if background_every and i % background_every == 0 else []
        out.append({"id": f"clip{i}", "audio": audio, "captions": [f"sound {i}"], "tags": tags})
    return out


def spec(groups=2, clips=2):
    return batches.SedBatchSpec(groups=groups, clips_per_group=clips, num_samples=SHORT.num_samples)


def sed(pool, **kwargs):
    kwargs.setdefault("seed", 0)
    return pipeline.sed_dataset(pool, FakeTokenizer(), spec(), SHORT, **kwargs)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def same(a, b):
    return all(x[k].tobytes() == y[k].tobytes() for x, y in zip(a, b, strict=True) for k in x)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A built flam_clips dataset (40 events, 8 backgrounds) with its index: (data_dir, pool)."""
    root = tmp_path_factory.mktemp("pipeline")
    builders.build("clips", synthetic_clips(str(root)), str(root / "tfds"))
    return str(root / "tfds"), pools.open_pool(str(root / "tfds"), "clips", "train")


def elements(pool, process_index, process_count, count, **kwargs):
    ds = pipeline.sed_elements(
        pool,
        SHORT,
        seed=kwargs.pop("seed", 0),
        process_index=process_index,
        process_count=process_count,
        **kwargs,
    )
    return [ds[i] for i in range(count)]


def test_same_seed_gives_identical_batch_bytes():
    pool = pools.RecordPool.from_records(records(12, background_every=5))
    a = take(pipeline.DataIterator(sed(pool), 0), 2)
    b = take(pipeline.DataIterator(sed(pools.RecordPool.from_records(records(12, background_every=5))), 0), 2)
    c = take(pipeline.DataIterator(sed(pool, seed=1), 0), 2)
    assert same(a, b) and not same(a, c)
    assert a[0]["labels"].shape == (4, 10, 32) and a[0]["audio"].shape == (4, 96_000)


@pytest.mark.parametrize("hosts", [2, 4])
def test_hosts_draw_different_mixtures_and_cover_each_clip_once_per_epoch(built, hosts):
    _, pool = built
    size = len(pool) // hosts
    streams = [elements(pool, p, hosts, 2 * size) for p in range(hosts)]
    sampler = [HostSampler(len(pool), 0, 0, p, hosts) for p in range(hosts)]
    for epoch in range(2):
        primaries = [sampler[p].element(epoch * size + k).primary for p in range(hosts) for k in range(size)]
        assert sorted(primaries) == list(range(len(pool)))  # every clip once per epoch
    assert [s.element(0).primary for s in sampler] != [s.element(size).primary for s in sampler]
    for i in range(2 * size):
        mixtures = [stream[i] for stream in streams]
        gains = [tuple(m.offsets_db) for m in mixtures]
        assert len(set(gains)) == hosts  # no two hosts share the draws of element i
        events = [set(m.sources) for m in mixtures]
        for a in range(hosts):
            for b in range(a + 1, hosts):
                assert not events[a] & events[b]  # host-local shards are disjoint
    backgrounds = [[m.background for m in stream] for stream in streams]
    assert len({tuple(b) for b in backgrounds}) == hosts
    for p, stream in enumerate(streams):  # the other events come from the host's own shard
        for i, mixture in enumerate(stream):
            epoch = i // size
            shard = {pool.name(c) for c in sampler[p].shard(epoch)}
            assert set(mixture.sources) <= shard
    again = elements(pool, 1, hosts, 4)  # the same host and layout: the same elements
    assert all(a.audio.tobytes() == b.audio.tobytes() for a, b in zip(again, streams[1][:4], strict=True))


def test_corpus_sampling_draws_events_from_every_clip(built):
    _, pool = built
    host = elements(pool, 0, 4, 12, sampling="host")
    corpus = elements(pool, 0, 4, 12, sampling="corpus")
    shard = {pool.name(c) for c in HostSampler(len(pool), 0, 0, 0, 4).shard(0)}
    assert all(set(m.sources) <= shard for m in host)
    assert any(not set(m.sources) <= shard for m in corpus)
    # The primary (the first event, or the background) is the same clip either way.
    sampler = HostSampler(len(pool), 0, 0, 0, 4)
    for i, (h, c) in enumerate(zip(host, corpus, strict=True)):
        primary = pool.name(sampler.element(i).primary)
        assert primary in (h.background, *h.sources[:1]) and primary in (c.background, *c.sources[:1])


def test_global_pairs_differ_between_hosts_and_cover_every_clip(built):
    _, pool = built
    tok = FakeTokenizer()
    per_host = []
    for p in range(2):
        ds = pipeline.global_dataset(
            pool, tok, 4, seed=0, num_samples=48_000, process_index=p, process_count=2
        )
        it = pipeline.DataIterator(ds, 0)
        per_host.append(np.concatenate([b["caption_ids"] for b in take(it, len(pool) // 2 // 4)]))
    names = {batches.caption_id(c) for i in range(len(pool)) for c in pool.captions(i)}
    assert set(per_host[0]) | set(per_host[1]) <= names
    assert not set(per_host[0]) & set(per_host[1])  # disjoint shards within the epoch


def test_save_and_restore_mid_epoch_continues_identically():
    pool = pools.RecordPool.from_records(records(24))
    straight = pipeline.DataIterator(sed(pool), 5)
    take(straight, 2)
    state = straight.get_state()
    expected = take(straight, 3)  # crosses the epoch boundary (24 records, 4 per batch)
    resumed = pipeline.DataIterator(sed(pools.RecordPool.from_records(records(24))), 5)
    resumed.set_state(state)
    assert same(take(resumed, 3), expected)
    with pytest.raises(DataError, match="written by a flam_jax before per-host sampling"):
        resumed.set_state(b'{"grain": {}, "failed_sources": []}')  # an older, Grain-internal state
    with pytest.raises(DataError, match="cannot read iterator state"):
        resumed.set_state(b"not json")
    other = pipeline.DataIterator(sed(pool), 5, layout=(1, 2))
    with pytest.raises(DataError, match="process 0 of 1, this is process 1 of 2"):
        other.set_state(state)


def test_orbax_checkpoint_round_trip_saved_while_workers_run(tmp_path):
    import grain
    import orbax.checkpoint as ocp

    pool = pools.RecordPool.from_records(records(10))
    make = lambda: pipeline.global_dataset(pool, FakeTokenizer(), 2, seed=0, num_samples=4800)
    it = pipeline.DataIterator(make(), 0, workers=2)
    take(it, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        manager.wait_until_finished()
    expected = take(it, 4)
    it.close()
    fresh = pipeline.DataIterator(make(), 0)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    assert same(take(fresh, 4), expected)


def _children_gone(timeout=20.0) -> bool:
    deadline = time.monotonic() + timeout
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    return not multiprocessing.active_children()


def test_two_workers_give_the_batches_of_one_and_restore_with_any_worker_count(built):
    _, pool = built
    tok = FakeTokenizer()
    make = lambda workers: pipeline.DataIterator(sed(pool), 0, workers=workers)
    reference = take(make(0), 6)
    two = make(2)
    first = take(two, 3)
    state = two.get_state()
    assert multiprocessing.active_children()  # the workers run
    two.close()
    assert _children_gone()  # and stop cleanly
    assert same(first, reference[:3])
    for workers in (0, 2, 3):  # restore the 2-worker position with another worker count
        it = make(workers)
        it.set_state(state)
        assert same(take(it, 3), reference[3:]), workers
        it.close()
    pairs = [
        take(
            pipeline.DataIterator(
                pipeline.global_dataset(pool, tok, 3, seed=0, num_samples=4800), 0, workers=w
            ),
            4,
        )
        for w in (0, 2)
    ]
    assert same(*pairs)
    assert _children_gone()


def test_corrupt_records_are_skipped_counted_and_budgeted(caplog):
    data = records(8, corrupt={3})
    it = pipeline.DataIterator(sed(pools.RecordPool.from_records(data), num_epochs=1), max_decode_errors=1)
    out = list(it)
    assert len(out) == 2 and it.decode_errors == 1 and it.failed_sources == ["clip3"]
    assert "clip3" in caplog.text
    # The failed record's caption never appears: it was replaced, not half-used.
    assert batches.caption_id("sound 3") not in np.concatenate([b["caption_ids"] for b in out])
    bad = pools.RecordPool.from_records(records(8, corrupt={1, 3}))
    with pytest.raises(DataError, match="max_decode_errors=1"):
        list(pipeline.DataIterator(sed(bad, num_epochs=1), 1))
    # Raised inside a Grain worker, it reaches the trainer as the same one-line error.
    broken = pools.RecordPool.from_records(records(4, corrupt={0, 1, 2, 3}))
    pairs = pipeline.global_dataset(broken, FakeTokenizer(), 2, seed=0, num_samples=4800)
    it = pipeline.DataIterator(pairs, 100, workers=2)
    with pytest.raises(DataError, match="records in a row failed to decode"):
        next(it)
    it.close()


def test_synthetic_backgrounds_are_warned_about_and_counted(tmp_path, caplog):
    folder = synthetic_clips(str(tmp_path), events=6, backgrounds=0)
    builders.build("clips", folder, tmp_path / "tfds")
    config = base_config()
    config.data.dir = str(tmp_path / "tfds")
    config.data.sed_clips = 2
    with caplog.at_level("INFO"):
        it = pipeline.sed_iterator(config, FakeTokenizer(), groups=1, process_index=0, process_count=1)
    warnings = [r for r in caplog.records if "background tag" in r.getMessage()]
    assert len(warnings) == 1 and "none of the 6 clips" in warnings[0].getMessage()
    next(it)
    assert it.pop_stats() == {"decode_errors": 0.0, "synthetic_background_fraction": 1.0}
    assert it.pop_stats() == {"decode_errors": 0.0}  # counted since the last call
    config.data.background_tags = "event"  # every clip is a background now
    config.data.pool_cache_mb = 1.0
    tagged = pipeline.sed_iterator(config, FakeTokenizer(), groups=1, process_index=0, process_count=1)
    next(tagged)
    assert tagged.pop_stats()["synthetic_background_fraction"] == 0.0


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


def test_resuming_on_another_host_count_continues_the_epoch():
    count, batch = 48, 12  # the job's batch; 2 hosts take 6 each, then 3 hosts take 4

    def iterator(index, hosts):
        sampler = HostSampler(count, 5, 0, index, hosts)
        stream = pipeline.Stream(
            sampler,
            lambda i: sampler.element(i).primary,
            batch // hosts,
            lambda primaries: (primaries, {"errors": [f"bad{index}"] if index == 0 else []}),
        )
        return pipeline.DataIterator(stream, 10, layout=(index, hosts))

    old = [iterator(p, 2) for p in range(2)]
    seen = [clip for it in old for _ in range(3) for clip in next(it)]  # 3 steps: 36 of 48 clips
    saved = [it.get_state() for it in old]
    new = [iterator(p, 3) for p in range(3)]
    for it in new:
        it.restore_at_step(3, saved)
    rest = [clip for it in new for clip in next(it)]  # the 12 clips left in the epoch, once each
    assert sorted(seen + rest) == list(range(count))
    assert all(it.failed_sources == ["bad0"] for it in new)  # the old hosts' failures are kept
    after = [clip for it in new for clip in next(it)]  # then the next epoch begins
    assert len(set(after)) == batch
    restored = iterator(1, 3)
    restored.set_state(new[1].get_state())  # the new layout's own state restores one to one
    assert next(restored) == next(new[1])
