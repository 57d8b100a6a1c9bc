"""The corpus readers (``flam_captioned``): each gives what the manifest builder gives for
the same clips, cuts long recordings, and skips, counts and names bad items.

Fixtures are written by the real producers: webdataset's ``TarWriter``, ``datasets``
(parquet and ``save_to_disk``), WavCaps-layout JSON, FSD50K-layout CSVs.
"""

import io
import json
import os
import tarfile

import datasets
import numpy as np
import pytest
import soundfile
import webdataset

from flam_jax.data import builders
from flam_jax.data.builders import common
from flam_jax.errors import DataError

RATE = 44_100
# name: (seconds, captions, tags)
CLIPS = {
    "dog": (1.5, ["a dog barks", "barking"], ["animal"]),
    "rain": (3.0, ["steady rain"], ["ambiance"]),
    "bell": (0.8, ["a bell rings"], []),
    "engine": (25.3, ["an engine idles"], ["vehicle"]),  # cut into 10 s, 10 s and 5.3 s
}


def _flac(seconds: float, k: int) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = (0.3 * np.sin(2 * np.pi * 180.0 * (k + 1) * t)).astype(np.float32)
    out = io.BytesIO()
    soundfile.write(out, wave, RATE, format="FLAC")
    return out.getvalue()


AUDIO = {name: _flac(seconds, k) for k, (name, (seconds, _, _)) in enumerate(CLIPS.items())}


def text(value):
    return value.decode() if isinstance(value, bytes) else value


def _records(kind, data_dir, split="train", config=None):
    source = builders.load(kind, data_dir, split, config)
    return [source[i] for i in range(len(source))]


def _content(record) -> tuple:
    """What a clip is, independent of how the reader names it."""
    return (
        bytes(record["audio"]),
        int(record["num_samples"]),
        tuple(text(c) for c in record["captions"]),
        tuple(text(t) for t in record["tags"]),
        text(record["source"]),
        text(record["licence"]),
    )


@pytest.fixture(scope="module")
def manifest_records(tmp_path_factory):
    """The same short clips through the manifest builder (``flam_clips``)."""
    root = tmp_path_factory.mktemp("manifest")
    with open(root / "manifest.jsonl", "w") as f:
        for name, (seconds, captions, tags) in CLIPS.items():
            if seconds <= 10:
                (root / f"{name}.flac").write_bytes(AUDIO[name])
                f.write(json.dumps({"path": f"{name}.flac", "captions": captions, "tags": tags}) + "\n")
    builders.build("clips", str(root), str(root / "tfds"))
    return {_content(r) for r in _records("clips", str(root / "tfds"))}


def _short(records):
    return {
        _content(r)
        for r in records
        if text(r["recording"]) in ("", text(r["id"])) and "#" not in text(r["id"])
    }


def _check_cut(records, prefix):
    pieces = sorted(
        (r for r in records if text(r["id"]).startswith(prefix + "#")), key=lambda r: r["start_s"]
    )
    assert [text(r["id"]) for r in pieces] == [f"{prefix}#{k}" for k in range(3)]
    assert [float(r["start_s"]) for r in pieces] == [0.0, 10.0, 20.0]
    assert [int(r["num_samples"]) for r in pieces] == [480_000, 480_000, round(5.3 * 48_000)]
    assert {text(r["recording"]) for r in pieces} == {prefix}
    assert all([text(c) for c in r["captions"]] == ["an engine idles"] for r in pieces)


def _write_shard(path, samples):
    with webdataset.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)


def test_webdataset_shards_match_the_manifest_and_cut_long_recordings(tmp_path, manifest_records):
    folder = tmp_path / "wds"
    (folder / "validation").mkdir(parents=True)
    samples = [
        {"__key__": name, "flac": AUDIO[name], "json": {"text": captions, "tags": tags}}
        for name, (_, captions, tags) in CLIPS.items()
    ]
    _write_shard(folder / "shard-000.tar", samples[:2])
    _write_shard(folder / "shard-001.tar", samples[2:])
    # Bad members: audio without a caption, a caption without audio, an undecodable clip.
    _write_shard(
        folder / "validation" / "bad.tar",
        [
            {"__key__": "mute", "flac": AUDIO["bell"], "json": {"tags": ["x"]}},
            {"__key__": "ghost", "json": {"text": "nothing to hear"}},
            {"__key__": "noise", "flac": b"not a flac file", "json": {"text": ["static"]}},
            {"__key__": "fine", "wav": _wav(), "txt": "a short beep\n"},
        ],
    )
    builder = builders.build("captioned", str(folder), str(tmp_path / "tfds"), "webdataset", max_errors=3)
    train = _records("captioned", str(tmp_path / "tfds"), "train", "webdataset")
    assert _short(train) == manifest_records
    assert {text(r["id"]) for r in train if "#" not in text(r["id"])} == {
        "shard-000/dog",
        "shard-000/rain",
        "shard-001/bell",
    }
    _check_cut(train, "shard-001/engine")
    (fine,) = _records("captioned", str(tmp_path / "tfds"), "validation", "webdataset")
    assert text(fine["id"]) == "bad/fine" and [text(c) for c in fine["captions"]] == ["a short beep"]
    summary = builder.skips.summary()
    assert summary.splitlines()[0] == "skipped 3: 1 no caption, 1 no audio member, 1 undecodable"
    for name in ("bad/mute: no caption", "bad/ghost: no audio member", "bad/noise: undecodable"):
        assert name in summary
    # The index records where each piece begins.
    index = builders.open_index("captioned/webdataset", str(tmp_path / "tfds"), "train")
    starts = {index.id(i): index.start_s(i) for i in range(len(index))}
    assert starts["shard-001/engine#2"] == 20.0 and starts["shard-000/dog"] == 0.0


def _wav() -> bytes:
    out = io.BytesIO()
    soundfile.write(out, np.full(8000, 0.2, np.float32), 16_000, format="WAV")
    return out.getvalue()


def test_past_max_errors_the_build_stops_and_leaves_nothing_built(tmp_path):
    folder = tmp_path / "wds"
    folder.mkdir()
    _write_shard(
        folder / "a.tar",
        [
            {"__key__": "ok", "flac": AUDIO["dog"], "json": {"text": "a dog barks"}},
            {"__key__": "b1", "flac": b"junk", "json": {"text": "x"}},
            {"__key__": "b2", "json": {"text": "y"}},
        ],
    )
    with pytest.raises(DataError, match=r"more than 1 items skipped \(the last: a/b2: no audio member\)"):
        builders.build("captioned", str(folder), str(tmp_path / "tfds"), "webdataset", max_errors=1)
    with pytest.raises(DataError, match="is not built"):
        builders.load("captioned", str(tmp_path / "tfds"), "train", "webdataset")
    # A shard that is not a tar file is a one-line error naming it.
    (folder / "b.tar").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match=r"webdataset shard .*b\.tar is unreadable"):
        builders.build("captioned", str(folder), str(tmp_path / "tfds2"), "webdataset", max_errors=5)


def _hf_table(names, with_bad_row=False):
    rows = {
        "id": list(names),
        "audio": [{"bytes": AUDIO[n], "path": f"{n}.flac"} for n in names],
        "caption": [CLIPS[n][1][0] for n in names],
    }
    if with_bad_row:
        rows["id"].append("silent")
        rows["audio"].append({"bytes": None, "path": None})
        rows["caption"].append("no sound here")
    return datasets.Dataset.from_dict(rows).cast_column("audio", datasets.Audio(decode=False))


def test_huggingface_parquet_and_saved_datasets_match_the_manifest(tmp_path, manifest_records):
    short = [n for n, (s, _, _) in CLIPS.items() if s <= 10]
    parquet = tmp_path / "parquet" / "data"
    parquet.mkdir(parents=True)
    _hf_table(short, with_bad_row=True).to_parquet(str(parquet / "train-00000-of-00001.parquet"))
    _hf_table(["engine"]).to_parquet(str(parquet / "test-00000-of-00001.parquet"))
    builder = builders.build("captioned", str(tmp_path / "parquet"), str(tmp_path / "tfds"), "huggingface")
    train = _records("captioned", str(tmp_path / "tfds"), "train", "huggingface")
    expected = {(a, n, c[:1], (), "", "") for a, n, c, _, _, _ in manifest_records}
    assert {_content(r) for r in train} == expected
    assert {text(r["id"]) for r in train} == {f"train/{n}" for n in short}
    assert builder.skips.summary().splitlines()[1].startswith("  train/silent: no audio in row")
    _check_cut(_records("captioned", str(tmp_path / "tfds"), "test", "huggingface"), "test/engine")
    # save_to_disk's layout: one folder per split of arrow streams.
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": _hf_table(short), "validation": _hf_table(["bell"])}).save_to_disk(
        str(saved)
    )
    builders.build("captioned", str(saved), str(tmp_path / "tfds_saved"), "huggingface")
    again = _records("captioned", str(tmp_path / "tfds_saved"), "train", "huggingface")
    assert {_content(r) for r in again} == {_content(r) for r in train}
    (bell,) = _records("captioned", str(tmp_path / "tfds_saved"), "validation", "huggingface")
    assert text(bell["id"]) == "validation/bell"


AUDIO_48K = {n: common.examples([(n, data, {})], "t").__next__()[1]["audio"] for n, data in AUDIO.items()}


def test_wavcaps_json_and_audio_match_the_manifest(tmp_path, manifest_records):
    folder = tmp_path / "wavcaps"
    (folder / "audio" / "fsd_final").mkdir(parents=True)
    entries = []
    for k, (name, (seconds, captions, _)) in enumerate(CLIPS.items()):
        (folder / "audio" / "fsd_final" / f"{1000 + k}.flac").write_bytes(AUDIO[name])
        entries.append({"id": str(1000 + k), "caption": captions[0], "duration": seconds, "license": "CC0"})
    entries.append({"id": "77", "caption": "a file that is not there"})
    entries.append({"id": "78", "caption": ""})
    (folder / "fsd_final.json").write_text(json.dumps({"num_captions_per_audio": 1, "data": entries}))
    builder = builders.build("captioned", str(folder), str(tmp_path / "tfds"), "wavcaps")
    train = _records("captioned", str(tmp_path / "tfds"), "train", "wavcaps")
    # The manifest's records with the one caption WavCaps gives, its licence and source.
    expected = {(a, n, c[:1], (), "wavcaps/fsd_final", "CC0") for a, n, c, _, _, _ in manifest_records}
    assert _short(train) == expected
    _check_cut(train, "fsd_final/1003")
    assert "skipped 2: 1 no audio file, 1 no caption" == builder.skips.summary().splitlines()[0]


def test_fsd50k_layout_gives_labels_as_captions(tmp_path):
    folder = tmp_path / "fsd50k"
    truth = folder / "FSD50K.ground_truth"
    truth.mkdir(parents=True)
    (folder / "FSD50K.dev_audio").mkdir()
    (folder / "FSD50K.eval_audio").mkdir()
    (truth / "dev.csv").write_text(
        'fname,labels,mids,split\n1,"Bark,Dog,Animal","/m/05tny_,/m/0bt9lr,/m/0jbk",train\n'
        "2,Rain,/m/06mb1,val\n"
    )
    (truth / "eval.csv").write_text('fname,labels,mids\n3,"Church_bell,Bell","/m/03w41f,/m/0395lw"\n')
    for fname, name in (("1", "dog"), ("2", "rain"), ("3", "bell")):
        part = "eval" if fname == "3" else "dev"
        soundfile.write(
            folder / f"FSD50K.{part}_audio" / f"{fname}.wav", *soundfile.read(io.BytesIO(AUDIO[name]))
        )
    builders.build("captioned", str(folder), str(tmp_path / "tfds"), "fsd50k")
    (dog,) = _records("captioned", str(tmp_path / "tfds"), "train", "fsd50k")
    assert [text(c) for c in dog["captions"]] == ["bark", "dog", "animal"]
    assert [text(t) for t in dog["tags"]] == ["Bark", "Dog", "Animal"] and text(dog["source"]) == "fsd50k"
    (rain,) = _records("captioned", str(tmp_path / "tfds"), "validation", "fsd50k")
    (bell,) = _records("captioned", str(tmp_path / "tfds"), "test", "fsd50k")
    assert text(rain["id"]) == "2" and [text(c) for c in bell["captions"]] == ["church bell", "bell"]
    assert bytes(dog["audio"]) == AUDIO_48K["dog"] and bytes(bell["audio"]) == AUDIO_48K["bell"]


def _strong_folder(tmp_path, names_file: str | None):
    folder = tmp_path / "strong"
    (folder / "audio").mkdir(parents=True)
    (folder / "audio" / "Yabc_30000.flac").write_bytes(AUDIO["dog"])
    (folder / "train.tsv").write_text(
        "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n"
        "Yabc_30000\t0.1\t0.9\t/m/05tny_\nYabc_30000\t0.5\t1.2\t/m/0jbk\n"
    )
    if names_file == "ontology.json":
        ontology = [{"id": "/m/05tny_", "name": "Bark"}, {"id": "/m/0jbk", "name": "Animal"}]
        (folder / "ontology.json").write_text(json.dumps(ontology))
    elif names_file == "partial.tsv":
        (folder / "mid_to_display_name.tsv").write_text("/m/05tny_\tBark\n")
    return folder


def test_audioset_strong_mids_are_named_by_the_ontology(tmp_path):
    folder = _strong_folder(tmp_path, "ontology.json")
    builders.build("strong", str(folder), str(tmp_path / "tfds"))
    (clip,) = _records("strong", str(tmp_path / "tfds"))
    assert [text(c) for c in clip["events"]["caption"]] == ["bark", "animal"]
    assert [text(c) for c in clip["events"]["label"]] == ["/m/05tny_", "/m/0jbk"]  # labels keep the MID


@pytest.mark.parametrize(
    ("names_file", "message"),
    [
        ("partial.tsv", r"train\.tsv: MID /m/0jbk is not in the label name file$"),
        (None, r"train\.tsv: label /m/05tny_ is an AudioSet MID; put ontology\.json or mid_to_display_name"),
    ],
)
def test_a_mid_without_a_name_is_a_one_line_error(tmp_path, names_file, message):
    folder = _strong_folder(tmp_path, names_file)
    with pytest.raises(DataError, match=message) as err:
        builders.build("strong", str(folder), str(tmp_path / "tfds"))
    assert "\n" not in str(err.value)


def test_the_cut_rule():
    rate = 48_000
    assert common.pieces(10 * rate) == [(0, 10 * rate)]
    assert common.pieces(25 * rate) == [(0, 10 * rate), (10 * rate, 10 * rate), (20 * rate, 5 * rate)]
    # A last piece under a second is dropped.
    assert common.pieces(20 * rate + rate // 2) == [(0, 10 * rate), (10 * rate, 10 * rate)]


def test_tar_members_are_grouped_by_webdataset_keys(tmp_path):
    from flam_jax.data.builders import tar_shards

    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (
            ("dir/a.flac", b"1"),
            ("dir/a.json", b"{}"),
            ("dir/b.c.flac", b"2"),
            ("b.txt", b"t"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    got = [(key, sorted(parts)) for key, parts in tar_shards._samples(str(path))]
    assert got == [("dir/a", ["flac", "json"]), ("dir/b", ["c.flac"]), ("b", ["txt"])]
    assert os.path.getsize(path) > 0


def _all_columns(data_dir, dataset, split):
    kind, _, config = dataset.partition("/")
    records = [
        (text(r["id"]), _content(r), float(r["start_s"])) for r in _records(kind, data_dir, split, config)
    ]
    index = builders.open_index(dataset, data_dir, split)
    columns = [
        (
            index.id(i),
            index.clip_captions(i),
            int(index.num_samples[i]),
            index.start_s(i),
            index.clip_levels(i).tobytes(),
        )
        for i in range(len(index))
    ]
    return records, columns


def _twelve_clips_and_a_junk_one(folder):
    folder.mkdir()
    samples = [
        {"__key__": f"{name}{k}", "flac": AUDIO[name], "json": {"text": CLIPS[name][1]}}
        for k in range(3)
        for name in CLIPS
    ]
    samples.insert(4, {"__key__": "junk", "flac": b"junk", "json": {"text": "x"}})
    _write_shard(folder / "a.tar", samples[:7])
    _write_shard(folder / "b.tar", samples[7:])
    return folder


def test_a_parallel_build_equals_the_single_process_one(tmp_path):
    folder = _twelve_clips_and_a_junk_one(tmp_path / "wds")
    one = builders.build("captioned", str(folder), str(tmp_path / "one"), "webdataset")
    many = builders.build("captioned", str(folder), str(tmp_path / "many"), "webdataset", workers=2)
    assert _all_columns(str(tmp_path / "one"), "captioned/webdataset", "train") == _all_columns(
        str(tmp_path / "many"), "captioned/webdataset", "train"
    )
    assert one.skips.summary() == many.skips.summary() and "a/junk: undecodable" in many.skips.summary()


def test_a_beam_build_on_the_direct_runner_equals_the_single_process_one(tmp_path):
    folder = _twelve_clips_and_a_junk_one(tmp_path / "wds")
    builders.build("captioned", str(folder), str(tmp_path / "one"), "webdataset")
    builders.build(
        "captioned", str(folder), str(tmp_path / "beam"), "webdataset", beam=["--runner=DirectRunner"]
    )
    assert _all_columns(str(tmp_path / "one"), "captioned/webdataset", "train") == _all_columns(
        str(tmp_path / "beam"), "captioned/webdataset", "train"
    )
    # Past max_errors the pipeline fails and nothing is marked built.
    with pytest.raises(Exception, match=r"1 items skipped, more than 0"):
        builders.build(
            "captioned",
            str(folder),
            str(tmp_path / "stopped"),
            "webdataset",
            beam=["--runner=DirectRunner"],
            max_errors=0,
        )
    with pytest.raises(DataError, match="is not built"):
        builders.load("captioned", str(tmp_path / "stopped"), "train", "webdataset")
    with pytest.raises(DataError, match="a Beam build reads the captioned kind's corpora, not 'clips'"):
        builders.build("clips", str(folder), str(tmp_path / "x"), beam=["--runner=DirectRunner"])


def test_the_build_command_prints_what_it_skipped(tmp_path, capsys):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "data", "build_dataset.py")
    spec = importlib.util.spec_from_file_location("build_dataset", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = _twelve_clips_and_a_junk_one(tmp_path / "wds")
    args = [
        "--kind=captioned",
        "--config=webdataset",
        f"--manual-dir={folder}",
        f"--data-dir={tmp_path / 'tfds'}",
    ]
    assert module.main([*args, "--workers=2"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1: 1 undecodable\n  a/junk: undecodable" in out and "train: 18 examples" in out
    assert module.main([*args[:3], f"--data-dir={tmp_path / 'other'}", "--max-errors=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than 0 items skipped (the last: a/junk: undecodable" in err
