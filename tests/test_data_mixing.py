"""Several sources, one run: ``data.sed_sources`` / ``data.global_sources`` draw by weight."""

import numpy as np
import pytest
import soundfile
from data_fixtures import synthetic_clips
from test_data_batches import FakeTokenizer

from flam_jax.config import base_config, validate
from flam_jax.data import builders, mixing, pipeline
from flam_jax.data import simulate as sim
from flam_jax.data.pools import Clip, InMemoryPool
from flam_jax.errors import ConfigError

SHORT = sim.SimulatorConfig(num_samples=96_000, max_events=6, max_event_s=0.3)  # 2 s mixtures: fast
RATE = 48_000


def _pool(prefix, events, backgrounds, tag="ambiance"):
    rng = np.random.default_rng(len(prefix) + events)
    clips = [
        Clip(
            0.3 * np.sin(np.arange(RATE // 4) * (0.05 + 0.01 * i)).astype(np.float32),
            [f"{prefix} {i}"],
            (),
            f"{prefix}{i}",
        )
        for i in range(events)
    ]
    clips += [
        Clip((0.05 * rng.standard_normal(RATE)).astype(np.float32), ["rain"], (tag,), f"{prefix}-bg{i}")
        for i in range(backgrounds)
    ]
    return InMemoryPool(clips, background_tags=tag)


def test_the_slot_layout_gives_every_clip_a_slot_and_each_source_its_weight():
    a, b = _pool("a", 40, 0), _pool("b", 4, 3)
    pool = mixing.WeightedPool([(a, 0.8), (b, 0.2)], ["a", "b"])
    # Events: L = max(40 / 0.8, 4 / 0.2) = 50 -> a 40 slots, b 10 (its 4 clips 2 or 3 times
    # each); backgrounds only b has, 3 slots.
    assert len(pool) == 53 and len(pool.event_indices) == 50 and len(pool.background_indices) == 3
    names = [pool.name(i) for i in pool.event_indices]
    assert sorted(set(names)) == sorted({f"a{i}" for i in range(40)} | {f"b{i}" for i in range(4)})
    counts = [names.count(f"b{i}") for i in range(4)]
    assert sum(counts) == 10 and max(counts) - min(counts) <= 1
    assert {pool.source_of(i) for i in pool.background_indices} == {"b"}
    assert all(pool.is_background(i) for i in pool.background_indices)
    # The global stream weights every readable clip together.
    glob = mixing.WeightedPool([(a, 0.5), (b, 0.5)], ["a", "b"], stream="global")
    assert len(glob) == 80 and sum(glob.source_of(i) == "b" for i in range(80)) == 40


def test_the_simulator_draws_events_by_source_weight():
    a, b = _pool("a", 30, 2), _pool("b", 6, 2, tag="soundscape")
    pool = mixing.WeightedPool([(a, 0.8), (b, 0.2)], ["a", "b"])
    elements = pipeline.sed_elements(pool, SHORT, seed=3)
    sources = []
    backgrounds = set()
    for i in range(240):
        mixture = elements[i]
        sources += [name[0] for name in mixture.sources]
        backgrounds.add(mixture.background)
    share = sources.count("b") / len(sources)
    sigma = np.sqrt(0.2 * 0.8 / len(sources))
    assert len(sources) > 600 and abs(share - 0.2) < 4 * sigma, (share, len(sources))
    # Backgrounds come from both sources (each has some), under each one's own tag.
    assert {name.split("-")[0] for name in backgrounds} == {"a", "b"}


def test_sources_parse_and_bad_ones_are_one_line_errors():
    got = mixing.parse_sources("captioned/webdataset:0.8:ambiance|soundscape; clips:0.2", "data.sed_sources")
    assert got == [
        mixing.Source("captioned/webdataset", 0.8, "ambiance,soundscape"),
        mixing.Source("clips", 0.2, ""),
    ]
    assert mixing.parse_sources(" ", "k") == []
    config = base_config()
    for spec, message in (
        ("clips", r"data\.sed_sources: 'clips' is not DATASET:WEIGHT"),
        ("clips:heavy", r"the weight of clips is not a number \('heavy'\)"),
        ("clips:0", "the weight of clips must be positive"),
        ("clips:1; clips:2", "a dataset is listed twice"),
    ):
        config.data.sed_sources = spec
        with pytest.raises(ConfigError, match=message):
            validate(config)


def test_two_built_datasets_feed_one_sed_and_one_global_stream(tmp_path):
    data_dir = str(tmp_path / "tfds")
    builders.build("clips", synthetic_clips(str(tmp_path), events=12, backgrounds=2), data_dir)
    strong_root = tmp_path / "strong"
    (strong_root / "audio").mkdir(parents=True)
    soundfile.write(strong_root / "audio" / "x.flac", np.full(RATE, 0.2, np.float32), RATE)
    (strong_root / "train.tsv").write_text("filename\tonset\toffset\tevent_label\nx.flac\t0.1\t0.5\tDog\n")
    builders.build("strong", str(strong_root), data_dir)
    config = base_config()
    config.data.dir = data_dir
    config.data.sed_clips, config.data.global_batch = 2, 2
    config.data.sed_sources = "clips:1"
    pool = pipeline.training_pool(config, "sed")
    assert isinstance(pool, mixing.WeightedPool) and pool.names == ["clips"]
    batch = next(pipeline.sed_iterator(config, FakeTokenizer(), groups=1, process_index=0, process_count=1))
    assert batch["audio"].shape == (2, 480_000) and batch["labels"].sum() > 0
    # The validation hook simulates from the first SED source, under that source's tags.
    config.data.sed_sources, config.train.eval_split = "clips:1:event; strong:1", "train"
    assert pipeline.hook_pool(config).background_tags == frozenset({"event"})
    config.data.sed_sources = "clips:1"
    config.data.global_sources = "clips:0.5; strong:0.5"
    glob = pipeline.training_pool(config, "global")
    assert {glob.source_of(i) for i in range(len(glob))} == {"clips", "strong"}
    assert sum(glob.source_of(i) == "strong" for i in range(len(glob))) == len(glob) // 2
    assert next(pipeline.global_iterator(config, FakeTokenizer(), process_index=0, process_count=1))[
        "audio"
    ].shape == (
        2,
        480_000,
    )
    config.data.sed_sources = "clips:0.5; strong:0.5"
    with pytest.raises(ConfigError, match="strong is annotated"):
        pipeline.training_pool(config, "sed")
