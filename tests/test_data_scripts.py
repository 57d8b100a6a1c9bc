"""The data preparation scripts: tokenizer training and the demo corpus's caption/split logic."""

import importlib.util
import os

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..")


def script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "data", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_tokenizer_on_a_manifest_and_a_csv(tmp_path, capsys):
    from flam_jax.data.tokenizers import load_tokenizer

    fixtures = os.path.join(os.path.dirname(__file__), "fixtures")
    corpus = tmp_path / "extra.txt"
    words = ["dog", "cat", "bird", "rain", "engine", "door", "bell", "horn", "water", "wind"]
    rng = np.random.default_rng(0)
    corpus.write_text("\n".join(" ".join(rng.choice(words, 4)) for _ in range(300)))
    module = script("train_tokenizer")
    code = module.main(
        [
            f"--corpus={fixtures}/clips/manifest.jsonl",
            f"--corpus={fixtures}/clotho/clotho_captions_development.csv",
            f"--corpus={corpus}",
            f"--out={tmp_path / 'tok'}",
            "--vocab-size=60",
        ]
    )
    assert code == 0 and "trained on 312 captions" in capsys.readouterr().out
    tokenizer = load_tokenizer(str(tmp_path / "tok" / "spm.model"), context_length=12)
    ids, mask = tokenizer.encode(["A dog barks", "rain and wind", "bell"])
    assert ids.shape == (3, 12) and ids.dtype == np.int32
    assert mask[0].sum() >= 4 and mask[2].sum() == 3  # BOS, one piece, EOS
    assert ids[0, 0] == 2 and np.all(ids[mask == 0] == 0)
    assert module.main([f"--corpus={tmp_path / 'missing.txt'}", f"--out={tmp_path}"]) == 2


def fake_tree(root):
    """A tiny unpacked-package tree: sonic-pi-like files, a DEP-5 copyright, an opensfx.cat."""
    import struct

    import soundfile

    tone = (0.3 * np.sin(np.arange(4800) / 48_000 * 2 * np.pi * 440)).astype(np.float32)
    sonic = root / "sonic-pi-samples"
    samples = sonic / "usr/share/sonic-pi/etc/samples"
    samples.mkdir(parents=True)
    for name in ["drum_snare_hard", "drum_snare_soft", "tabla_ke1", "vinyl_hiss", "unknown_thing"]:
        soundfile.write(samples / f"{name}.flac", tone, 48_000)
    doc = sonic / "usr/share/doc/sonic-pi-samples"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Files: *\nLicense: MIT\n\nFiles: etc/samples/drum_*.flac\nLicense: CC0\n\n"
        "Files: etc/samples/vinyl_hiss.flac\nLicense: CC-BY-4.0\n"
    )
    minetest = root / "minetest-data" / "usr/share/games/minetest/sounds"
    minetest.mkdir(parents=True)
    for take in (1, 2, 3):
        soundfile.write(minetest / f"env_sounds_water.{take}.ogg", tone, 48_000)
    cat_dir = root / "openttd-opensfx" / "usr/share/games/openttd/baseset/opensfx"
    cat_dir.mkdir(parents=True)
    buffer = __import__("io").BytesIO()
    soundfile.write(buffer, tone, 48_000, format="WAV")
    wav = buffer.getvalue()
    titles = [
        b'"Heavy wind". Original "wind1.wav" by "Anton". License: Creative Commons Attribution 3.0.\0',
        b'"Wind". Original "wind1.wav" by "Anton". License: Creative Commons Attribution 3.0 Unported.\0',
        b'"Cow". Original "moo.wav" by "X". License: Creative Commons Zero 1.0.\0',
    ]
    records = [bytes([len(t)]) + t + wav for t in titles]
    offset = 8 * len(records)
    table, body = b"", b""
    for record in records:
        table += struct.pack("<II", (offset + len(body)) | 0x80000000, len(record))
        body += record
    (cat_dir / "opensfx.cat").write_bytes(table + body)
    return {p: str(root / p) for p in ("sonic-pi-samples", "minetest-data", "openttd-opensfx")}


def test_demo_corpus_captions_licences_and_splits(tmp_path):
    import json

    module = script("demo_corpus")
    clips = module.collect(fake_tree(tmp_path / "unpacked"))
    summary = module.write_corpus(clips, str(tmp_path / "corpus"), "fake")
    entries = [json.loads(x) for x in (tmp_path / "corpus" / "manifest.jsonl").read_text().splitlines()]
    by_key = {e["key"]: e for e in entries}
    assert "unknown_thing" not in by_key and summary["skipped"] == 1  # no caption rule, no clip
    assert by_key["drum_snare_hard"]["captions"] == ["a snare drum hit", "a snare drum"]
    assert all(2 <= len(c.split()) <= 8 for e in entries for c in e["captions"])
    assert by_key["drum_snare_hard"]["licence"] == "CC0"  # the more specific stanza wins
    assert by_key["vinyl_hiss"]["licence"] == "CC-BY-4.0" and by_key["vinyl_hiss"]["tags"] == ["ambiance"]
    assert by_key["Cow"]["licence"].startswith("Creative Commons Zero 1.0")
    # Takes of one recording share a split: the three water takes, the two cuts of wind1.wav.
    water = {e["split"] for e in entries if e["key"].startswith("env_sounds_water")}
    wind = {e["split"] for e in entries if e["key"] in ("Wind", "Heavy wind")}
    assert len(water) == 1 and len(wind) == 1
    assert by_key["Wind"]["recording"] == by_key["Heavy wind"]["recording"] == "opensfx:wind1.wav"
    # Novel classes never reach training, and their captions are listed as unseen.
    assert by_key["tabla_ke1"]["split"] == "novel"
    unseen = (tmp_path / "corpus" / "unseen_captions.txt").read_text().splitlines()
    train_captions = {c for e in entries if e["split"] == "train" for c in e["captions"]}
    assert "a tabla drum" in unseen and not set(unseen) & train_captions
    assert (tmp_path / "corpus" / by_key["Cow"]["path"]).stat().st_size > 1000
    licences = (tmp_path / "corpus" / "licences.csv").read_text().splitlines()
    assert len(licences) == len(entries) + 1


def test_demo_corpus_split_is_stable_and_reserved_packages_refused():
    import pytest

    from flam_jax.errors import DataError

    module = script("demo_corpus")
    rule = module.Rule("x", ("a b",))
    splits = [module.split_for(f"pkg:recording{i}", rule) for i in range(400)]
    assert splits == [module.split_for(f"pkg:recording{i}", rule) for i in range(400)]
    share = splits.count("validation") / len(splits)
    assert 0.08 < share < 0.25 and set(splits) == {"train", "validation"}
    for package in ("wesnoth-music", "supertuxkart-data", "widelands-data", "tuxpaint-stamps-default"):
        with pytest.raises(DataError, match="reserved"):
            module.check_allowed(package)


def test_demo_corpus_synthetic_fallback(tmp_path, capsys):
    import json

    module = script("demo_corpus")
    assert module.main(["--synthetic", f"--cache-dir={tmp_path}"]) == 0
    summary = json.loads((tmp_path / "demo_corpus" / "summary.json").read_text())
    assert summary["source"] == "synthetic" and summary["clips"] == 11 * 25
    assert summary["backgrounds"] == 75 and summary["splits"]["validation"] > 0
    # Two kinds are held out whole: the demo's open-vocabulary set exists without apt too.
    # So is a foreign package: three kinds under new captions, never trained on.
    assert summary["splits"]["novel"] == 2 * 25 and summary["splits"]["foreign"] == 3 * 25
    assert summary["unseen_captions"] == 5 and summary["foreign_captions_in_training"] == 0
