"""Bad values and output paths are refused before any work, in one line; CPU runs are quiet.

Each flag check runs against a model path that does not exist: the message names the
flag, not the model, which shows it came before loading anything.
"""

import os
import subprocess
import sys
import warnings

import pytest
from infer_fixtures import make_export, tokenizer, tone, write_wav

from flam_jax.cli import detect
from flam_jax.errors import FlamWarning, InputError
from flam_jax.infer.api import FLAM


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_export(tmp_path_factory.mktemp("export") / "model")


@pytest.fixture(scope="module")
def model(export):
    return FLAM.load(export)


def _detect(argv, capsys):
    code = detect.main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threshold", "-1"], "--threshold must be a number from 0 to 1, got -1.0"),
        (["--threshold", "2"], "--threshold must be a number from 0 to 1, got 2.0"),
        (["--threshold", "nan"], "--threshold must be a number from 0 to 1, got nan"),
        (["--batch-size", "3"], "--batch-size must be a power of two"),
    ],
)
def test_flag_values_are_refused_by_their_flag_names(tmp_path, capsys, extra, message):
    code, err = _detect(["x.wav", "--model", tmp_path / "nope", "-q", "a dog", *extra], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_search_batch_size_is_named_by_its_flag(tmp_path, capsys):
    from flam_jax.cli import search

    code = search.main(
        [
            "index",
            str(tmp_path),
            "--model",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "i"),
            "--batch-size",
            "3",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--batch-size must be a power of two" in err, err


def test_output_paths_are_checked_before_the_model_loads(tmp_path, capsys):
    base = ["x.wav", "y.wav", "--model", tmp_path / "nope", "-q", "a dog"]
    (tmp_path / "folder").mkdir()
    cases = [
        (["--json", tmp_path / "missing" / "out.json"], "--json"),
        (["--json", tmp_path / "folder"], "is a directory"),
        (["--plot", tmp_path / "folder"], "is a directory"),
        (["--plot", tmp_path / "missing" / "p.png"], "does not exist"),
    ]
    for extra, message in cases:
        code, err = _detect([*base, *extra], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, (extra, err)
        assert "nope" not in err  # refused before the model was looked for
    assert not (tmp_path / "folder.png").exists() and os.listdir(tmp_path / "folder") == []


def test_texts_that_are_not_queries(model):
    with pytest.raises(InputError, match="texts must be a string or a list of strings, got int"):
        model.embed_text(123)
    with pytest.raises(InputError, match="text query 1 is int"):
        model.embed_text(["a dog", 5])
    # MiniLM's WordPiece has no token for an emoji: the query would score as noise.
    with pytest.raises(InputError, match=r"query 2 \('🐕'\) has no token"):
        model.embed_text(["a dog barking", "🐕"])
    assert model.embed_text(["a dog 🐕"]).emb.shape[0] == 1  # one known token is enough


def test_a_long_query_is_announced_once_and_embedded_from_its_start(model):
    long = " ".join(["a dog barking loudly in the rain"] * 60)  # ~2,000 characters
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = model.embed_text([long, "rain"])
    notes = [w for w in caught if issubclass(w.category, FlamWarning)]
    assert len(notes) == 1 and "query 1" in str(notes[0].message) and "16 tokens" in str(notes[0].message)
    cut = tokenizer(16).report([long, "rain"])
    assert cut[0].truncated and not cut[1].truncated and emb.emb.shape == (2, 512)


def test_a_cpu_run_prints_no_tpu_initialisation_noise(export, tmp_path):
    """With libtpu installed (the test stack) and no JAX_PLATFORMS, a command that runs the
    model prints its table and nothing on stderr."""
    pytest.importorskip("libtpu")
    wav = write_wav(tmp_path / "tone.wav", tone(2.0))
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    cmd = [sys.executable, "-m", "flam_jax.cli.detect", wav, "--model", export, "-q", "a beeping tone"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].split() == ["file", "query", "onset", "offset", "peak"]
    assert proc.stderr == "", proc.stderr[-2000:]


def test_warnings_read_as_one_line():
    import io

    from flam_jax.cli import _one_line_warning

    out = io.StringIO()
    _one_line_warning(FlamWarning("a truncated query"), FlamWarning, "api.py", 1, file=out)
    assert out.getvalue() == "warning: a truncated query\n"
