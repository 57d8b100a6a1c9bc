"""The metadata index and the pools over it: written by every builder, resumable, opened
without touching audio, refused in one line when missing, stale or mismatched; span
decoding, the byte-bounded cache and the level-based labels."""

import io
import json
import os
import shutil

import numpy as np
import pytest
import soundfile
from data_fixtures import materialise, synthetic_clips

from flam_jax.audio import io as audio_io
from flam_jax.cli import index as index_command
from flam_jax.cli import train as train_main
from flam_jax.config import base_config
from flam_jax.data import builders, pipeline, pools
from flam_jax.data import index as index_lib
from flam_jax.data import simulate as sim
from flam_jax.errors import AudioDecodeError, DataError


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("index")
    builders.build("clips", synthetic_clips(str(root), events=12, backgrounds=3), str(root / "tfds"))
    return str(root / "tfds")


def fresh_copy(built, tmp_path) -> str:
    data_dir = str(tmp_path / "tfds")
    shutil.copytree(built, data_dir)
    pools._OPEN.clear()
    return data_dir


def test_every_builder_writes_an_index_that_describes_its_records(tmp_path):
    for kind, config, fixture in (
        ("clips", None, "clips"),
        ("strong", None, "strong"),
        ("pairs", "clotho", "clotho"),
        ("classification", "esc50", "esc50"),
    ):
        folder = materialise(fixture, tmp_path / kind)
        builder = builders.build(kind, folder, tmp_path / "tfds", config)
        dataset = f"{kind}/{config}" if config else kind
        for split in builder.info.splits:
            source = builders.load(kind, tmp_path / "tfds", split, config)
            index = builders.open_index(dataset, tmp_path / "tfds", split)
            assert len(index) == len(source) > 0
            for i in range(len(source)):
                record = source[i]
                wave = audio_io.decode_audio(record["audio"])
                assert index.id(i) == record["id"].decode()
                assert index.clip_captions(i) == index_lib.record_captions(record)
                assert index.num_samples[i] == len(wave) == record["num_samples"]
                np.testing.assert_array_equal(index.clip_levels(i), index_lib.window_levels(wave))
    clips = builders.open_index("clips", tmp_path / "tfds", "train")
    assert [clips.id(i) for i in range(len(clips)) if clips.background[i]] == ["rain.ogg"]
    assert sorted(t for i in range(len(clips)) for t in clips.clip_tags(i)) == ["ambiance", "animal"]


def test_levels_are_the_a_weighted_power_of_each_window():
    wave = 0.3 * np.random.default_rng(0).standard_normal(1500).astype(np.float32)
    levels = index_lib.window_levels(wave, window=600).astype(np.float64)
    weighted = audio_io.a_weight(wave).astype(np.float64)
    expected = [np.sum(weighted[k * 600 : (k + 1) * 600] ** 2) / 600 for k in range(3)]  # last: 300 of 600
    np.testing.assert_allclose(10 ** (levels / 10), expected, rtol=2e-3)  # float16 dB


class AudioAccess(Exception):
    pass


class NoAudio:
    """A record source whose records raise when their audio is read."""

    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        record = dict(self.source[i])
        audio = record.pop("audio")
        return _Guarded(record, audio)


class _Guarded(dict):
    def __init__(self, record, audio):
        super().__init__(record)
        self._audio = audio

    def __getitem__(self, key):
        if key == "audio":
            raise AudioAccess("audio was read")
        return super().__getitem__(key)


def test_pool_start_up_reads_the_index_and_never_audio(built, tmp_path, monkeypatch):
    data_dir = fresh_copy(built, tmp_path)
    real_load = builders.load
    monkeypatch.setattr(builders, "load", lambda *a, **k: NoAudio(real_load(*a, **k)))
    config = base_config()
    config.data.dir = data_dir
    config.data.sed_clips = 2
    config.data.global_batch = 2
    from test_data_batches import FakeTokenizer

    sed_it = pipeline.sed_iterator(config, FakeTokenizer(), groups=1, process_index=0, process_count=1)
    glob_it = pipeline.global_iterator(config, FakeTokenizer(), process_index=0, process_count=1)
    pool = pipeline.open_pool(config, "clips", "train")
    assert len(pool) == 15 and len(pool.background_indices) == 3 and pool.captions(0)
    assert pool.powers(0).size and pool.num_samples(0) > 0
    assert pipeline.open_pool(config, "clips", "train") is pool  # one pool for both pipelines
    with pytest.raises(AudioAccess):  # audio is read by the first mixture, not before
        next(sed_it)
    with pytest.raises(AudioAccess):
        next(glob_it)


def test_missing_stale_and_mismatched_indexes_are_one_line_errors(built, tmp_path):
    data_dir = fresh_copy(built, tmp_path)
    builder_dir = os.path.join(data_dir, "flam_clips", "1.0.0")
    directory = os.path.join(builder_dir, "index", "train")
    command = f"flam-index --data-dir={data_dir} --dataset=clips --split=train"
    saved = str(tmp_path / "saved")
    shutil.copytree(directory, saved)

    def reopen():
        pools._OPEN.clear()
        return pools.open_pool(data_dir, "clips", "train")

    shutil.rmtree(directory)
    with pytest.raises(DataError, match="has no metadata index; write it with " + command) as err:
        reopen()
    assert "\n" not in str(err.value)

    def edit(change):
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(saved, directory)
        change()

    def set_meta(**values):
        path = os.path.join(directory, "meta.json")
        with open(path) as f:
            meta = json.load(f)
        meta.update(values)
        with open(path, "w") as f:
            json.dump(meta, f)

    def drop_last_clip():
        index = index_lib.read_index(directory)
        rows = index_lib._Rows()
        for i in range(len(index) - 1):
            rows.add_wave(
                index.id(i), index.clip_captions(i), index.clip_tags(i), "x", np.zeros(600, np.float32), 600
            )
        shutil.rmtree(directory)
        index_lib.write_columns(index_lib._columns(rows, dict(index.meta, count=len(index) - 1)), directory)

    def swap_ids():
        ids = np.load(os.path.join(directory, "ids.bytes.npy"))
        np.save(os.path.join(directory, "ids.bytes.npy"), ids[::-1].copy())

    cases = [
        (drop_last_clip, "is stale: it lists 14 clips, the records hold 15"),
        (lambda: set_meta(num_bytes=1), "is stale: its num_bytes is 1"),
        (swap_ids, "does not match its records: record 0 is"),
        (lambda: set_meta(version=99), "is not a flam_jax index of version 1"),
        (lambda: os.remove(os.path.join(directory, "levels.npy")), "is incomplete: levels.npy is missing"),
    ]
    for change, message in cases:
        edit(change)
        with pytest.raises(DataError, match=message) as err:
            reopen()
        assert "\n" not in str(err.value)
        if "stale" in message or "match" in message:
            assert command in str(err.value)
    edit(lambda: None)
    assert len(reopen()) == 15


def test_flam_train_on_a_dataset_without_index_exits_2_naming_the_command(built, tmp_path, capsys):
    data_dir = fresh_copy(built, tmp_path)
    shutil.rmtree(os.path.join(data_dir, "flam_clips", "1.0.0", "index"))
    code = train_main.main(
        [
            "flam-train",
            "--config=experiments/cpu_demo.py:tiny",
            f"--workdir={tmp_path / 'run'}",
            f"--config.data.dir={data_dir}",
            "--config.data.sed_clips=8",  # the tests' 8 fake devices
            "--config.data.global_batch=8",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: dataset clips/train in ") and "write it with flam-index" in err[0]


def test_index_command_resumes_an_interrupted_scan(built, tmp_path, capsys):
    data_dir = fresh_copy(built, tmp_path)
    shutil.rmtree(os.path.join(data_dir, "flam_clips", "1.0.0", "index"))
    source = builders.load("clips", data_dir, "train")
    reads = []

    class Interrupting:
        def __init__(self, fail_at):
            self.fail_at = fail_at

        def __len__(self):
            return len(source)

        def __getitem__(self, i):
            if i == self.fail_at:
                raise KeyboardInterrupt  # the user pressed ^C in the middle of chunk 2
            reads.append(i)
            return source[i]

    directory = str(tmp_path / "index" / "train")
    meta = {"dataset": "clips", "split": "train"}
    with pytest.raises(KeyboardInterrupt):
        index_lib.build_index(lambda: Interrupting(9), directory, meta, chunk=4, progress=False)
    assert sorted(os.listdir(directory + ".partial")) == ["000000.npz", "000001.npz"]
    assert not os.path.exists(directory)  # no half-written index is ever opened
    reads.clear()
    index = index_lib.build_index(lambda: Interrupting(-1), directory, meta, chunk=4, progress=False)
    assert reads == list(range(8, 15))  # only the unfinished chunks are read again
    assert not os.path.exists(directory + ".partial")
    whole = index_lib.build_index(lambda: source, str(tmp_path / "whole"), meta, chunk=100, progress=False)
    for attr in ("num_samples", "readable", "background", "levels", "level_ranges", "caption_ranges"):
        np.testing.assert_array_equal(getattr(index, attr), getattr(whole, attr))
    assert [index.id(i) for i in range(15)] == [whole.id(i) for i in range(15)]
    # The command writes it in place (two processes), after which the pool opens.
    argv = ["--data-dir", data_dir, "--dataset", "clips", "--workers", "2", "--chunk", "5"]
    assert index_command.main(argv) == 0
    assert "clips/train: 15 clips indexed" in capsys.readouterr().out
    assert len(pools.open_pool(data_dir, "clips", "train")) == 15
    assert index_command.main(["--data-dir", str(tmp_path / "nothing"), "--dataset", "clips"]) == 2
    assert "is not built" in capsys.readouterr().err


def test_an_undecodable_record_is_indexed_as_unreadable():
    good = audio_io.encode_flac(np.zeros(4800, np.float32))
    records = [
        {"id": "a", "audio": good, "captions": ["x"]},
        {"id": "b", "audio": b"junk", "captions": ["y"]},
    ]
    pool = pools.RecordPool.from_records(records)
    assert pool.readable(0) and not pool.readable(1)
    assert list(pool.event_indices) == [0]  # never drawn as another event
    with pytest.raises(AudioDecodeError, match="b did not decode when its index was written"):
        pool.read(1)


def test_spans_decode_exactly_what_soundfile_decodes():
    rng = np.random.default_rng(0)
    wave = (0.3 * rng.standard_normal(150_000)).astype(np.float32)
    data = audio_io.encode_flac(wave)
    reference, _ = soundfile.read(io.BytesIO(data), dtype="float32")
    np.testing.assert_array_equal(audio_io.decode_audio(data), reference)
    for start, length in [(0, None), (1000, 500), (100_000, 40_000), (140_000, 50_000), (149_999, 1)]:
        expected = reference[start : None if length is None else start + length]
        np.testing.assert_array_equal(audio_io.decode_span(data, start, length), expected)
    with pytest.raises(AudioDecodeError, match="truncated"):
        audio_io.decode_span(data[: len(data) // 2], 0, None, source="half.flac")
    with pytest.raises(AudioDecodeError, match="x.flac"):
        audio_io.decode_span(b"fLaC" + bytes(100), 0, None, source="x.flac")
    # Other formats and rates take the general path (decoded whole, resampled).
    buffer = io.BytesIO()
    soundfile.write(buffer, wave[:44_100], 44_100, format="WAV")
    assert len(audio_io.decode_span(buffer.getvalue(), 0, None)) == 48_000


class CountingPool(pools.InMemoryPool):
    def __init__(self, clips, **kwargs):
        super().__init__(clips, **kwargs)
        self.decoded = []

    def _decode(self, i, start, length):
        wave = super()._decode(i, start, length)
        self.decoded.append((i, len(wave)))
        return wave


def test_cache_is_bounded_in_megabytes_and_keeps_recent_clips():
    clips = [pools.Clip(np.full(262_144, i, np.float32), [f"c{i}"]) for i in range(4)]  # 1 MiB each
    pool = CountingPool(clips, cache_mb=2.5)
    for i in (0, 1, 2, 0):
        pool.read(i, 10, 200_000)
    assert pool.cache_bytes == 2 * 2**20 and len(pool.decoded) == 4  # 0 was evicted by 2
    pool.read(2, 0, 10)  # a short span of a cached clip: no decode
    pool.read(3, 0, 10)  # a short span of another: only the span is decoded
    assert pool.decoded[-1] == (3, 10) and len(pool.decoded) == 5
    assert pools.InMemoryPool(clips, cache_mb=0.5).read(0).size == 262_144  # too big to cache


def test_mixtures_decode_only_the_background_crop_and_the_placed_events():
    rng = np.random.default_rng(0)
    clips = [pools.Clip(0.2 * rng.standard_normal(480_000).astype(np.float32), [f"e{i}"]) for i in range(30)]
    clips.append(
        pools.Clip(0.05 * rng.standard_normal(3 * 480_000).astype(np.float32), ["bed"], ["ambiance"])
    )
    pool = CountingPool(clips)
    cfg = sim.SimulatorConfig(min_events=10, max_events=10)  # ten 8 s events, at most 3 at once
    for index in range(4):
        pool.decoded.clear()
        mixture = sim.simulate_index(pool, 0, index, cfg)
        assert len(mixture.captions) == 3  # only three 8 s events fit under the overlap cap
        assert len(pool.decoded) == 4  # the background and the three placed events
        assert (30, 480_000) in pool.decoded  # the 10 s crop of the 30 s background, not all of it


def exact_labels(pool, plan, onset, cfg):
    """Frame labels of one planned event, A-weighting its faded pieces exactly."""
    event = sim._realise(pool, plan, onset, cfg)
    for piece in event.pieces:
        weighted = audio_io.a_weight(pool.read(plan.index))  # the filter runs from the clip's start
        a = plan.start + next(p[0] for p in plan.pieces if p[2] == piece.offset)
        segment = weighted[a : a + len(piece.audio)]
        fade = sim._fade(np.ones(len(segment), np.float32), round(cfg.fade_s * cfg.sample_rate))
        _, piece.power = sim._window_power(segment * fade, onset + piece.offset, cfg.window)
    return sim.render(np.zeros(cfg.num_samples, np.float32), [event], cfg)[1][0]


def test_level_based_labels_match_exact_a_weighting():
    rng = np.random.default_rng(3)
    clips = []
    for i in range(24):  # bursts with silences and fades: the hard case for window edges
        wave = np.zeros(round(rng.uniform(0.5, 9.5) * 48_000), np.float32)
        for _ in range(4):
            a = int(rng.integers(0, len(wave) - 4800))
            b = min(len(wave), a + int(rng.integers(2400, 96_000)))
            wave[a:b] = rng.uniform(0.01, 0.5) * rng.standard_normal(b - a)
        clips.append(pools.Clip(wave, [f"burst {i}"]))
    pool = pools.InMemoryPool(clips)
    cfg = sim.SimulatorConfig(fragment_prob=0.3, repeat_prob=0.3)
    agree = total = 0
    for i in range(60):
        plan = sim._plan_event(pool, i % len(clips), np.random.default_rng(i), cfg)
        onset = sim._place(plan, np.zeros(cfg.windows, np.int32), np.random.default_rng(i), cfg)
        event = sim._realise(pool, plan, onset, cfg)
        ours = sim.render(np.zeros(cfg.num_samples, np.float32), [event], cfg)[1][0]
        exact = exact_labels(pool, plan, onset, cfg)
        agree += int((ours == exact).sum())
        total += ours.size
    assert agree / total >= 0.999, agree / total


def test_open_file_limit_is_raised_to_cover_the_shards(caplog):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        pools.allow_open_files(300)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 300
        pools.allow_open_files(250)  # never lowered
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 300
        if hard != resource.RLIM_INFINITY:
            pools.allow_open_files(hard + 1)
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
            assert f"ulimit -n {hard + 1}" in caplog.text
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
