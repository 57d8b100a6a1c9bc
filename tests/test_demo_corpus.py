"""The demo corpus's packages: what is unpacked from a .deb, the caption tables, the foreign split.

A real .deb is built with ``dpkg-deb --build`` (a Debian tool, on every machine apt runs on) so
the unpacking step meets the package format it meets in ``make demo``.
"""

import importlib.util
import io
import json
import os
import re
import subprocess
import zipfile

import numpy as np
import pytest
import soundfile

ROOT = os.path.join(os.path.dirname(__file__), "..")


def corpus_module():
    spec = importlib.util.spec_from_file_location("demo_corpus", os.path.join(ROOT, "data", "demo_corpus.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ogg(seconds: float = 0.5) -> bytes:
    tone = (0.3 * np.sin(np.arange(int(48_000 * seconds)) / 48_000 * 2 * np.pi * 440)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone, 48_000, format="OGG")
    return buffer.getvalue()


def build_deb(tmp_path, package: str, files: dict[str, bytes]) -> str:
    tree = tmp_path / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n"
    )
    for rel, data in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    deb = tmp_path / f"{package}_1.0_all.deb"
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True, capture_output=True
    )
    return str(deb)


def test_a_zipped_package_keeps_only_its_sounds_and_they_are_captioned_by_path(tmp_path):
    module = corpus_module()
    spec = module.PACKAGE["0ad-data"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("audio/actor/fauna/animal/cattle_1.ogg", ogg())
        z.writestr("audio/actor/fauna/animal/cattle_2.ogg", ogg())
        z.writestr("audio/music/Anthem.ogg", ogg())  # skipped: music
        z.writestr("art/textures/big.png", b"\0" * 5000)  # not audio
    deb = build_deb(
        tmp_path,
        "0ad-data",
        {
            spec.archive: archive.getvalue(),
            "usr/share/doc/0ad-data/copyright": b"Files: *\nLicense: CC-BY-SA-3.0\n",
            "usr/share/games/0ad/mods/public/readme.txt": b"not a sound",
        },
    )
    target = tmp_path / "unpacked" / "0ad-data"
    module.unpack(deb, str(target), spec)
    kept = sorted(os.path.relpath(os.path.join(d, f), target) for d, _, fs in os.walk(target) for f in fs)
    base = spec.base
    assert kept == [
        "usr/share/doc/0ad-data/copyright",
        f"{base}/actor/fauna/animal/cattle_1.ogg",
        f"{base}/actor/fauna/animal/cattle_2.ogg",
    ]
    assert not os.path.exists(deb)  # the unpacked sounds are the cache; the 1.3 GB .deb goes
    clips = module.collect({"0ad-data": str(target)})
    assert [c.key for c in clips] == ["actor/fauna/animal/cattle_1", "actor/fauna/animal/cattle_2"]
    assert {c.group for c in clips} == {"0ad-data:actor/fauna/animal/cattle"}  # takes of one recording
    summary = module.write_corpus(clips, str(tmp_path / "corpus"), "fake")
    entries = [json.loads(x) for x in (tmp_path / "corpus" / "manifest.jsonl").read_text().splitlines()]
    assert [e["captions"] for e in entries] == [["a cow mooing", "cattle lowing"]] * 2
    assert {e["licence"] for e in entries} == {"CC-BY-SA-3.0"}
    assert summary["packages"] == {"debian:0ad-data": 2}


def test_an_unreadable_deb_is_one_line_and_leaves_no_half_tree(tmp_path):
    from flam_jax.errors import DataError

    module = corpus_module()
    deb = tmp_path / "hedgewars-data_1.0_all.deb"
    deb.write_bytes(b"!<arch>\nnot really a package")
    target = tmp_path / "unpacked" / "hedgewars-data"
    with pytest.raises(DataError, match="hedgewars-data_1.0_all.deb"):
        module.unpack(str(deb), str(target), module.PACKAGE["hedgewars-data"])
    assert not target.exists()


def test_the_foreign_package_is_its_own_split_in_words_training_never_uses(tmp_path):
    module = corpus_module()
    spec = module.PACKAGE["flightgear-data-base"]
    assert spec.foreign and sum(p.foreign for p in module.PACKAGES) == 1
    tree = tmp_path / "flightgear-data-base" / spec.base / "Sounds"
    tree.mkdir(parents=True)
    for name in ("thunder1", "rain", "engine-start", "glove_compartment_closing"):
        soundfile.write(tree / f"{name}.wav", np.zeros(4800, np.float32) + 0.1, 48_000)
    clips = module.collect({"flightgear-data-base": str(tmp_path / "flightgear-data-base")})
    summary = module.write_corpus(clips, str(tmp_path / "corpus"), "fake")
    entries = [json.loads(x) for x in (tmp_path / "corpus" / "manifest.jsonl").read_text().splitlines()]
    assert {e["key"]: e["split"] for e in entries} == {
        "Sounds/engine-start": "foreign",
        "Sounds/rain": "foreign",
        "Sounds/thunder1": "foreign",
    }
    assert summary["splits"]["foreign"] == 3 and summary["skipped"] == 1
    # The tables themselves: no foreign caption is a caption of any other package's sounds.
    tables = module.load_rules()
    foreign = {c for rule in tables[spec.rules] for c in rule.captions}
    others = {
        c for name, rules in tables.items() if name != spec.rules for rule in rules for c in rule.captions
    }
    assert foreign and not foreign & others, sorted(foreign & others)


def test_every_table_rule_is_a_valid_pattern_with_two_to_eight_word_captions():
    module = corpus_module()
    tables = module.load_rules()
    assert {p.rules for p in module.PACKAGES} == set(tables)
    for name, rules in tables.items():
        for rule in rules:
            re.compile(rule.pattern)
            assert len(rule.captions) >= 2, (name, rule.pattern)
            assert all(2 <= len(c.split()) <= 8 for c in rule.captions), (name, rule.captions)


def test_a_rule_limit_keeps_a_stable_hash_chosen_subset():
    module = corpus_module()
    rule = module.Rule(r"^shout", ("a man shouting", "a loud shout"), limit=3)
    clips = [
        module.RawClip("p", f"shout{i}", f"shout{i}.wav", f"p:shout{i}", "CC0", path="x") for i in range(10)
    ]
    kept, skipped = module.captioned(clips, (rule,))
    again, _ = module.captioned(list(reversed(clips)), (rule,))
    assert len(kept) == 3 and skipped == 7
    assert {c.name for c, _ in kept} == {c.name for c, _ in again}


def test_packages_that_copy_reserved_recordings_are_refused():
    from flam_jax.errors import DataError

    module = corpus_module()
    for package in ("megaglest-data", "freedink-data"):
        with pytest.raises(DataError, match="copies of recordings reserved"):
            module.check_allowed(package)
