"""flam-detect and flam-search end to end on generated audio, and every bad-input path.

The CLIs run in-process (their ``main(argv)``); ``FLAM.load`` is memoised per export
directory so the compiled functions are shared between calls (loading itself is exercised
by the first call and by the bad-model cases, which bypass the cache).
"""

import json
import os
import shutil

import numpy as np
import pytest
import soundfile
from infer_fixtures import SR, make_export, tone, write_wav

from flam_jax.cli import detect, search
from flam_jax.infer import search as search_lib

QUERIES = ["a beeping tone", "a dog barking"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export") / "model")


@pytest.fixture(autouse=True)
def shared_model(monkeypatch):
    from flam_jax.infer.api import FLAM

    original = FLAM.load.__func__
    cache = shared_model.cache

    def load(cls, export_dir, max_batch=8):
        key = os.path.abspath(export_dir)
        if key not in cache:
            cache[key] = original(cls, export_dir)
        cache[key].max_batch = max_batch  # only read at call time
        return cache[key]

    monkeypatch.setattr(FLAM, "load", classmethod(load))


shared_model.cache = {}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    """A 12.5 s stereo 44.1 kHz WAV with a tone at 3-5 s, a 4 s mono 16 kHz FLAC, junk files."""
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    long = rng.normal(0, 0.01, int(12.5 * 44100)).astype(np.float32)
    long[3 * 44100 : 5 * 44100] += tone(2.0, rate=44100)
    soundfile.write(str(root / "long.wav"), np.stack([long, 0.5 * long], axis=1), 44100)
    os.makedirs(root / "sub")
    soundfile.write(
        str(root / "sub" / "short.flac"), rng.normal(0, 0.05, 4 * 16000).astype(np.float32), 16000
    )
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (root / "notes.txt").write_text("not audio")
    return root


def _run(main, argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_detect_end_to_end(export, audio_dir, tmp_path, capsys):
    js, png = tmp_path / "out.json", tmp_path / "plot.png"
    files = [audio_dir / "long.wav", audio_dir / "sub" / "short.flac", audio_dir / "corrupt.wav"]
    argv = [
        *files,
        "--model",
        export,
        "-q",
        QUERIES[0],
        "-q",
        QUERIES[1],
        "--threshold",
        "0.5",
        "--batch-size",
        1,
    ]
    code, out, err = _run(detect.main, [*argv, "--json", js, "--plot", png, "--median", "3"], capsys)
    assert code == 1  # one of three files failed
    assert "corrupt.wav" in err and "1 of 3 files failed" in err
    assert out.splitlines()[0].split() == ["file", "query", "onset", "offset", "peak"]
    doc = json.load(open(js))
    assert set(doc) == {"frame_rate_hz", "results"} and doc["frame_rate_hz"] == 3.2
    assert [r["audio"] for r in doc["results"]] == [str(f) for f in files[:2]]
    for result, duration in zip(doc["results"], (12.5, 4.0), strict=True):
        assert set(result) == {"audio", "duration_s", "queries"}
        assert result["duration_s"] == pytest.approx(duration, abs=1e-4)
        assert [q["text"] for q in result["queries"]] == QUERIES
        for q in result["queries"]:
            assert set(q) == {"text", "frame_scores", "events"}
            assert len(q["frame_scores"]) == int(np.ceil(duration / 0.3125))  # the whole file
            assert all(0.0 <= s <= 1.0 for s in q["frame_scores"])
            for e in q["events"]:
                assert set(e) == {"onset", "offset", "score"}
                assert 0 <= e["onset"] < e["offset"] <= duration and e["score"] > 0.5
    # The table lists exactly the JSON's events.
    rows = out.splitlines()[1:]
    n_events = sum(len(q["events"]) for r in doc["results"] for q in r["queries"])
    assert len([r for r in rows if r != "(no events)"]) == n_events
    for i in range(2):
        assert (tmp_path / f"plot-{i}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The JSON's scores are the API's: the same model and file through FLAM.detect.
    from flam_jax.infer.api import FLAM

    api = FLAM.load(export, max_batch=1).detect(str(files[0]), QUERIES, threshold=0.5)
    np.testing.assert_allclose(
        api.timeline.scores, np.array([q["frame_scores"] for q in doc["results"][0]["queries"]]), atol=1e-6
    )

    # A single file, a query file, one plot path as given.
    qfile = tmp_path / "queries.txt"
    qfile.write_text("# comment\n\nrain on a roof\n")
    argv = [
        files[1],
        "--model",
        export,
        "-q",
        "wind",
        "--queries-file",
        qfile,
        "--plot",
        png,
        "--batch-size",
        1,
    ]
    code, out, err = _run(detect.main, argv, capsys)
    assert code == 0 and err == ""
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_detect_bad_input(export, audio_dir, tmp_path, capsys):
    good = audio_dir / "long.wav"
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    silent = write_wav(tmp_path / "zero.wav", np.zeros(0, np.float32))
    corrupt_model = tmp_path / "corrupt_model"
    shutil.copytree(export, corrupt_model)
    with open(corrupt_model / "params.safetensors", "r+b") as f:
        f.truncate(1000)
    cases = [
        ([tmp_path / "absent.wav", "--model", export, "-q", "x"], "not found"),
        ([empty, "--model", export, "-q", "x"], "empty.wav"),
        ([silent, "--model", export, "-q", "x"], "no samples"),
        ([audio_dir / "corrupt.wav", "--model", export, "-q", "x"], "cannot decode"),
        ([audio_dir / "notes.txt", "--model", export, "-q", "x"], "notes.txt"),
        ([good, "--model", export, "-q", "  "], "query 1 is empty"),
        ([good, "--model", export], "no queries"),
        ([good, "--model", export, "--queries-file", tmp_path / "nope.txt"], "queries file not found"),
        ([good, "--model", tmp_path / "no_model", "-q", "x"], "export directory not found"),
        ([good, "--model", corrupt_model, "-q", "x"], "params.safetensors"),
        ([good, "--model", audio_dir, "-q", "x"], "not an export directory"),
        ([good, "--model", export, "-q", "x", "--median", "2"], "--median"),
        ([good, "--model", export, "-q", "x", "--hop", "3"], "hop"),
        ([good, "--model", export, "-q", "x", "--batch-size", "0"], "--batch-size"),
    ]
    for argv, message in cases:
        code, out, err = _run(detect.main, argv, capsys)
        assert code == 2, (argv, out, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (argv, err)
    # Every file of a batch failing: each listed, exit 2.
    code, _, err = _run(detect.main, [empty, audio_dir / "corrupt.wav", "--model", export, "-q", "x"], capsys)
    assert code == 2 and "2 of 2 files failed" in err and "empty.wav" in err and "corrupt.wav" in err


def test_search_index_resume_and_query(export, audio_dir, tmp_path, capsys):
    index = tmp_path / "index"
    code, out, err = _run(
        search.main, ["index", audio_dir, "--model", export, "--out", index, "--batch-size", 1], capsys
    )
    assert code == 1 and "indexed 2 files (0 already done)" in out
    assert "1 files could not be read" in err and "corrupt.wav" in err and "notes.txt" not in err
    assert "indexing" in err  # the progress bar
    entries = search_lib.read_manifest(str(index))
    assert sorted(entries) == ["corrupt.wav", "long.wav", os.path.join("sub", "short.flac")]
    item = np.load(index / entries["long.wav"]["item"])
    assert item["frames"].shape == (2, 32, 512) and list(item["starts"]) == [0, 480000]

    # Resume: a new file is added, finished ones are skipped, the bad one is retried, and a
    # line torn by a kill mid-write is ignored.
    with open(index / "manifest.jsonl", "a") as f:
        f.write('{"path": "x.wav", "item": "items/00')
    soundfile.write(str(audio_dir / "a_late.wav"), tone(2.0, freq=440), SR)
    try:
        code, out, err = _run(
            search.main, ["index", audio_dir, "--model", export, "--out", index, "--batch-size", 1], capsys
        )
    finally:
        os.remove(audio_dir / "a_late.wav")
    assert code == 1 and "indexed 1 files (2 already done)" in out
    assert np.load(index / "globals.npy").shape == (3, 512)

    code, out, err = _run(search.main, ["query", index, "a beeping tone", "--top", "2", "--json"], capsys)
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 2 and hits[0]["score"] >= hits[1]["score"]
    # Ranking is by the global cosine: recompute it from the model.
    from flam_jax.infer.api import FLAM

    model = FLAM.load(export)
    text = model.embed_text(["a beeping tone"]).emb[0]
    cosines = {}
    for path in ("long.wav", "a_late.wav", os.path.join("sub", "short.flac")):
        emb = np.load(index / search_lib.read_manifest(str(index))[path]["item"])["global_"]
        cosines[os.path.join(str(audio_dir), path)] = float(emb @ text)
    best = sorted(cosines, key=cosines.get, reverse=True)[:2]
    assert [h["path"] for h in hits] == best
    for h in hits:
        assert h["score"] == pytest.approx(cosines[h["path"]], abs=1e-5)
        assert 0 <= h["onset"] < h["offset"]
    code, out, _ = _run(search.main, ["query", index, "a dog", "--top", "5"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 4  # header + 3 files


def test_console_entry_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [
        sys.executable,
        "-m",
        "flam_jax.cli.detect",
        "x.wav",
        "--model",
        str(tmp_path / "nope"),
        "-q",
        "a",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: export directory not found: {tmp_path / 'nope'}"]


def test_search_bad_input(export, tmp_path, capsys):
    cases = [
        (
            ["index", tmp_path / "absent", "--model", export, "--out", tmp_path / "i"],
            "audio folder not found",
        ),
        (["query", tmp_path / "absent", "dog"], "not a flam-search index"),
        (["query", tmp_path, "  "], "empty"),
    ]
    for argv, message in cases:
        code, _, err = _run(search.main, argv, capsys)
        assert code == 2 and err.startswith("error: ") and message in err, (argv, err)


def test_long_audio_has_one_global_embedding_in_api_evaluator_and_search(export, tmp_path):
    """The FLAM API, flam-evaluate and flam-search embed a recording the same way (timeline's
    global rule): a 40 s file, one with a 7.5 s tail, and a 4 s clip."""
    from flam_jax import timeline
    from flam_jax.evals.benchmarks import Item
    from flam_jax.evals.runner import global_embeddings
    from flam_jax.infer.api import FLAM
    from flam_jax.infer.search import build_index, read_manifest

    model = FLAM.load(export)
    rng = np.random.default_rng(3)
    folder = tmp_path / "audio"
    folder.mkdir()
    waves = {}
    for name, seconds in (("forty", 40.0), ("tail", 37.5), ("short", 4.0)):
        waves[name] = rng.normal(0, 0.05, int(seconds * SR)).astype(np.float32)
        write_wav(folder / f"{name}.wav", waves[name])
    items = [Item(id=n, audio=lambda w=w: w, num_samples=w.size) for n, w in waves.items()]
    evaluator = global_embeddings(model, items, batch_size=4, progress=False)
    build_index(str(folder), export, str(tmp_path / "index"), progress=False, model=model)
    manifest = read_manifest(str(tmp_path / "index"))
    for i, (name, wave) in enumerate(waves.items()):
        api = model.embed_windows(str(folder / f"{name}.wav")).global_
        stored = np.load(tmp_path / "index" / manifest[f"{name}.wav"]["item"])["global_"]
        # The rule itself: the full windows (or the repeated clip), their mean direction.
        direct = model.embed_audio(timeline.global_windows(wave)).global_
        expected = timeline.mean_direction(direct)
        for what, got in (("api", api), ("evaluator", evaluator[i]), ("search", stored)):
            np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=f"{name}: {what}")
    assert len(timeline.global_window_starts(waves["tail"].size)) == 4  # the last ends at 37.5 s
