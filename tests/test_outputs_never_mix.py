"""Outputs never mix: an export is replaced whole or not at all, and a search index holds
one model's embeddings of the files as they are now.

flam-export and flam-convert-openflam refuse a non-empty, file or unwritable ``--out``
before reading anything; ``--force`` swaps a complete new export in, and a failure midway
leaves the old one. flam-search records its model's identity and each file's size and
mtime: another model is refused on resume (``--rebuild`` starts over), changed files are
embedded again, deleted ones dropped, and a query refuses a model folder that changed.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import test_infer_export
from infer_fixtures import SR, make_export, tone, write_wav
from safetensors.numpy import load_file

from flam_jax.cli import convert_openflam, export, search
from flam_jax.export import export_dir
from flam_jax.infer import search as search_lib

workdir = test_infer_export.workdir  # the module-scoped training workdir (steps 1 and 2)


def _run(main, argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(err: str) -> bool:
    return err.startswith("error: ") and err.count("\n") == 1


def _unwritable_folder(tmp_path):
    """A folder nothing can be made in: read-only permissions, or for root (whom permissions do
    not stop) /sys, which takes no new entry from anyone."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        os.rmdir(tempfile.mkdtemp(dir="/sys"))
    except OSError:
        return "/sys"
    pytest.skip("no folder that root cannot write in")


# ---- flam-export / flam-convert-openflam ----------------------------------------------


def test_export_refuses_a_non_empty_out_before_reading_anything(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    absent = tmp_path / "absent"  # read first, its error would show: the out check comes before
    for main, argv in (
        (export.main, ["--workdir", absent, "--out", out]),
        (convert_openflam.main, ["--checkpoint", tmp_path / "absent.pth", "--out", out]),
    ):
        code, _, err = _run(main, argv, capsys)
        assert code == 2 and _one_line(err) and "is not empty" in err and "--force" in err, err
        # --force replaces an export only, never another folder's files.
        code, _, err = _run(main, [*argv, "--force"], capsys)
        assert code == 2 and _one_line(err) and "not an export directory" in err, err
    assert (out / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run(export.main, ["--workdir", absent, "--out", empty], capsys)
    assert code == 2 and "workdir not found" in err  # an empty folder passed the check


def test_export_force_replaces_the_old_export_whole(workdir, tmp_path, capsys):
    from flam_jax.export.weights import get_weights

    root, model = workdir
    out = tmp_path / "exports" / "model"
    assert _run(export.main, ["--workdir", root, "--out", out, "--step", 1], capsys)[0] == 0
    old = load_file(str(out / "params.safetensors"))
    (out / "leftover.bin").write_bytes(b"from before")
    code, _, err = _run(export.main, ["--workdir", root, "--out", out], capsys)
    assert code == 2 and "--force" in err
    code, _, err = _run(export.main, ["--workdir", root, "--out", out, "--force"], capsys)
    assert code == 0, err
    new = load_file(str(out / "params.safetensors"))
    want = get_weights(model)  # step 2
    key = "audio_projection.fc1.kernel"
    np.testing.assert_array_equal(new[key], want[key])
    assert not np.array_equal(new[key], old[key])
    assert sorted(os.listdir(out)) == ["config.json", "params.safetensors", "tokenizer"]  # no leftover
    assert os.listdir(tmp_path / "exports") == ["model"]  # no temporary sibling
    assert "step 2" in json.loads((out / "config.json").read_text())["source"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask  # as any folder made here, not 0700


def test_a_failed_forced_export_leaves_the_old_one(workdir, tmp_path, capsys, monkeypatch):
    root, _ = workdir
    out = tmp_path / "exports" / "model"
    assert _run(export.main, ["--workdir", root, "--out", out, "--step", 1], capsys)[0] == 0
    before = {name: (out / name).read_bytes() for name in ("config.json", "params.safetensors")}

    def write_half_then_fail(path, arrays, metadata):
        with open(path, "wb") as f:
            f.write(b"half a safetensors file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_dir, "write_params", write_half_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export.main([f"--workdir={root}", f"--out={out}", "--force"])
    assert {name: (out / name).read_bytes() for name in before} == before
    assert os.listdir(tmp_path / "exports") == ["model"]  # the half-written sibling is gone


def test_export_out_that_cannot_be_written_is_one_line_before_any_work(tmp_path, capsys):
    absent = tmp_path / "absent"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (a_file, "is a file, not a folder"),
        (a_file / "sub", "is a file, not a folder"),
        (os.path.join(_unwritable_folder(tmp_path), "out"), "cannot write in"),
    ]
    for out, message in cases:
        for main, argv in (
            (export.main, ["--workdir", absent, "--out", out]),
            (convert_openflam.main, ["--checkpoint", tmp_path / "absent.pth", "--out", out]),
        ):
            code, _, err = _run(main, argv, capsys)
            assert code == 2 and _one_line(err) and message in err, (out, err)
    # As a console script: one line on stderr, no traceback.
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "flam_jax.cli.export", f"--workdir={absent}", f"--out={a_file}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: --out {a_file} is a file, not a folder"]


def test_an_export_in_a_bucket_is_replaced_whole(tmp_path):
    """gs:// has no folder rename: the new export is written beside, then copied in."""
    from gcs_emulator import BUCKET, emulator

    from flam_jax import paths

    out = f"gs://{BUCKET}/exports/model"
    with emulator():
        export_dir.save_export(out, {"w": np.zeros(3, np.float32)}, {"audio_size": "demo"}, source="old")
        paths.write_text(f"{out}/leftover.txt", "from before")
        with pytest.raises(RuntimeError, match="disk full"):
            with export_dir.staged_export(out) as stage:
                paths.write_text(f"{stage}/{export_dir.PARAMS_FILE}", "half")
                raise RuntimeError("disk full")
        assert paths.walk_files(f"gs://{BUCKET}/exports") == [
            "model/config.json",
            "model/leftover.txt",
            "model/params.safetensors",
        ]
        export_dir.save_export(out, {"w": np.ones(4, np.float32)}, {"audio_size": "demo"}, source="new")
        assert paths.walk_files(f"gs://{BUCKET}/exports") == ["model/config.json", "model/params.safetensors"]
        assert json.loads(paths.read_text(f"{out}/config.json"))["source"] == "new"
        np.testing.assert_array_equal(export_dir.read_params(f"{out}/params.safetensors")["w"], np.ones(4))
        local = str(tmp_path / "copy")
        shutil.copytree(paths.local_copy(out), local)
        assert export_dir.export_identity(out) == export_dir.export_identity(local)  # streamed remotely too


# ---- flam-search ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return make_export(root / "a", seed=0), make_export(root / "b", seed=1)


@pytest.fixture(autouse=True)
def shared_model(monkeypatch):
    """``FLAM.load`` memoised by the params file's bytes: a copied export shares its compiled
    functions."""
    from flam_jax.infer.api import FLAM

    original = FLAM.load.__func__
    cache = shared_model.cache

    def load(cls, export_dir_, max_batch=8):
        params = os.path.join(export_dir_, "params.safetensors")
        if not os.path.isfile(params):  # a bad model: the real load gives its error
            return original(cls, export_dir_)
        with open(params, "rb") as f:
            key = hashlib.sha256(f.read()).hexdigest()
        if key not in cache:
            cache[key] = original(cls, export_dir_)
        cache[key].max_batch = max_batch
        return cache[key]

    monkeypatch.setattr(FLAM, "load", classmethod(load))


shared_model.cache = {}


def _audio(folder):
    """Two 2 s recordings: a tone and noise."""
    folder.mkdir()
    write_wav(folder / "tone.wav", tone(2.0, freq=440))
    write_wav(folder / "noise.wav", np.random.default_rng(0).normal(0, 0.1, 2 * SR).astype(np.float32))
    return folder


def _index(audio, model, out, capsys, *extra):
    return _run(
        search.main, ["index", audio, "--model", model, "--out", out, "--no-progress", *extra], capsys
    )


def _stored_global(index, rel):
    entry = search_lib.read_manifest(str(index))[rel]
    return np.load(index / entry["item"])["global_"]


def test_index_resumed_with_another_model_is_refused_and_rebuild_starts_over(exports, tmp_path, capsys):
    from flam_jax.infer.api import FLAM

    model_a, model_b = exports
    audio, index = _audio(tmp_path / "audio"), tmp_path / "index"
    code, out, err = _index(audio, model_a, index, capsys)
    assert code == 0 and "indexed 2 files (0 already done)" in out, err
    id_a, id_b = export_dir.export_identity(model_a), export_dir.export_identity(model_b)
    meta = json.loads((index / "index.json").read_text())
    assert meta["version"] == 3 and meta["model_identity"] == id_a
    entry = search_lib.read_manifest(str(index))["tone.wav"]
    stat = os.stat(audio / "tone.wav")
    assert (entry["size"], entry["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)

    code, _, err = _index(audio, model_b, index, capsys)
    assert code == 2 and _one_line(err), err
    assert id_a[:12] in err and id_b[:12] in err and "--rebuild" in err

    # The same model in another folder is the same model: resumed, nothing embedded again.
    moved = shutil.copytree(model_a, tmp_path / "moved")
    code, out, err = _index(audio, moved, index, capsys)
    assert code == 0 and "indexed 0 files (2 already done)" in out, err
    assert json.loads((index / "index.json").read_text())["model"] == str(moved)

    code, out, err = _index(audio, model_b, index, capsys, "--rebuild")
    assert code == 0 and "indexed 2 files (0 already done)" in out, err
    assert json.loads((index / "index.json").read_text())["model_identity"] == id_b
    want = FLAM.load(model_b).embed_windows(str(audio / "tone.wav")).global_
    np.testing.assert_allclose(_stored_global(index, "tone.wav"), want, atol=1e-5)
    assert len(os.listdir(index / "items")) == 2


def test_a_changed_file_is_embedded_again(exports, tmp_path, capsys):
    from flam_jax.infer.api import FLAM

    model_a, _ = exports
    audio, index = _audio(tmp_path / "audio"), tmp_path / "index"
    assert _index(audio, model_a, index, capsys)[0] == 0
    before = _stored_global(index, "tone.wav")
    # Other audio of the same length (so the same size): only the mtime tells.
    write_wav(audio / "tone.wav", tone(2.0, freq=3000, amp=0.5))
    stat = os.stat(audio / "tone.wav")
    os.utime(audio / "tone.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    code, out, err = _index(audio, model_a, index, capsys)
    assert code == 0 and "indexed 1 files (1 already done, 1 changed since, embedded again)" in out, err
    after = _stored_global(index, "tone.wav")
    want = FLAM.load(model_a).embed_windows(str(audio / "tone.wav")).global_
    np.testing.assert_allclose(after, want, atol=1e-5)
    assert not np.allclose(after, before, atol=1e-3)
    assert len(os.listdir(index / "items")) == 2  # the stale item is deleted
    rows = np.load(index / "globals.npy")
    assert rows.shape == (2, want.shape[0])
    names = [e["path"] for e in json.loads((index / "globals.json").read_text())]
    np.testing.assert_allclose(rows[names.index("tone.wav")], want, atol=1e-5)


def test_a_deleted_file_is_dropped_from_the_results(exports, tmp_path, capsys):
    model_a, _ = exports
    audio, index = _audio(tmp_path / "audio"), tmp_path / "index"
    assert _index(audio, model_a, index, capsys)[0] == 0
    os.remove(audio / "noise.wav")
    code, out, err = _index(audio, model_a, index, capsys)
    assert code == 0 and "indexed 0 files (1 already done, 1 no longer there, dropped)" in out, err
    assert list(search_lib.read_manifest(str(index))) == ["tone.wav"]
    assert len((index / "manifest.jsonl").read_text().splitlines()) == 1
    assert np.load(index / "globals.npy").shape[0] == 1 and len(os.listdir(index / "items")) == 1
    code, out, err = _run(search.main, ["query", index, "a tone", "--json"], capsys)
    assert code == 0, err
    assert [h["path"] for h in json.loads(out)] == [str(audio / "tone.wav")]


def test_index_out_that_cannot_hold_an_index_is_one_line_before_embedding(exports, tmp_path, capsys):
    audio = _audio(tmp_path / "audio")
    absent_model = tmp_path / "no-model"  # loaded first, its error would show instead
    a_file = tmp_path / "file"
    a_file.write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    cases = [
        (a_file, "is a file, not a folder"),
        (a_file / "sub", "is a file, not a folder"),
        (os.path.join(_unwritable_folder(tmp_path), "index"), "cannot write in"),
        (other, "not a flam-search index"),
    ]
    for out, message in cases:
        code, _, err = _index(audio, absent_model, out, capsys)
        assert code == 2 and _one_line(err) and message in err, (out, err)
    assert os.listdir(other) == ["notes.txt"]


def test_an_older_index_is_refused_on_resume(exports, tmp_path, capsys):
    model_a, _ = exports
    audio, index = _audio(tmp_path / "audio"), tmp_path / "index"
    index.mkdir()
    old = {
        "format": "flam_jax.search",
        "version": 2,
        "model": model_a,
        "audio_dir": str(audio),
        "hop_s": 10.0,
    }
    (index / "index.json").write_text(json.dumps(old))
    code, _, err = _index(audio, model_a, index, capsys)
    assert code == 2 and _one_line(err) and "version 2 index" in err and "--rebuild" in err, err
    code, out, err = _index(audio, model_a, index, capsys, "--rebuild")
    assert code == 0 and "indexed 2 files" in out, err


def test_query_refuses_a_model_folder_that_now_holds_another_model(exports, tmp_path, capsys):
    model_a, model_b = exports
    audio, index = _audio(tmp_path / "audio"), tmp_path / "index"
    model = shutil.copytree(model_a, tmp_path / "model")
    assert _index(audio, model, index, capsys)[0] == 0
    assert _run(search.main, ["query", index, "a tone"], capsys)[0] == 0
    shutil.rmtree(model)
    shutil.copytree(model_b, model)
    code, _, err = _run(search.main, ["query", index, "a tone"], capsys)
    assert code == 2 and _one_line(err) and "now holds model" in err, err
    assert export_dir.export_identity(model_b)[:12] in err and "--rebuild" in err
