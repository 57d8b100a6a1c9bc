"""``flam-evaluate --suite=paper``: every benchmark the data root has, one table beside the
published numbers (FLAM_SPEC §10), absent benchmarks listed as "no data".

The data root holds the benchmarks' real layouts (the fixtures of test_evals_runner and
test_evals_grounding) under their names; the model is the loudness stand-in, whose DESED
frame AUROC is exactly 1 (test_evals_runner's docstring says why).
"""

import json
import os
import shutil
import types

import pytest
from test_evals_grounding import grounding_fixture
from test_evals_runner import EnergyFLAM, _classification_fixture, _pairs_fixture, _strong_fixture

from flam_jax.cli import evaluate as evaluate_cli
from flam_jax.errors import DataError
from flam_jax.evals import suite
from flam_jax.evals.benchmarks import BENCHMARKS


def _data_root(tmp_path):
    root = tmp_path / "DATA"
    root.mkdir()
    shutil.move(_strong_fixture(str(tmp_path)), root / "desed")
    _pairs_fixture(str(root), "audiocaps")
    _classification_fixture(str(root), "esc50")
    grounding_fixture(str(root))
    (root / "clotho").mkdir()  # present but not Clotho's layout: an error, the others still run
    (root / "clotho" / "notes.txt").write_text("captions to come\n")
    (root / "us8k").mkdir()  # empty: a one-line error too, not TFDS's assertion
    return root


def _row(rows, benchmark, metric):
    (row,) = [r for r in rows if r["benchmark"] == benchmark and r["metric"] == metric]
    return row


def test_paper_suite_measures_what_it_has(tmp_path):
    root, out, cache = _data_root(tmp_path), tmp_path / "out", tmp_path / "cache"
    lines = []
    result = suite.run_suite(
        EnergyFLAM(), str(root), out_dir=str(out), cache_dir=str(cache), model_name="M", log=lines.append
    )
    status = {name: r["status"] for name, r in result["benchmarks"].items()}
    assert status == {
        "desed": "measured",
        "maestro": "no data",
        "audioset-strong": "no data",
        "urbansed": "no data",
        "audiocaps": "measured",
        "clotho": "error",
        "esc50": "measured",
        "us8k": "error",
        "audiogrounding": "measured",
    }
    assert "no caption CSV" in result["benchmarks"]["clotho"]["error"]
    assert result["benchmarks"]["us8k"]["error"].startswith("manual directory is empty")
    assert any(line.startswith("maestro: no data") for line in lines)
    rows = result["rows"]
    # Every row of a measured benchmark names a metric its runner produces.
    assert all(r["measured"] is not None for r in rows if r["status"] == "measured")
    desed = _row(rows, "desed", "frame_auroc")
    assert desed["measured"] == 100.0 and desed["published"] == {
        "FLAM": 91.66,
        "FLAM-Global": 85.52,
        "OpenFLAM": None,
    }
    measured = result["benchmarks"]["audiogrounding"]["metrics"]
    assert _row(rows, "audiogrounding", "psds1")["measured"] == round(100 * measured["psds1"], 2)
    assert _row(rows, "audiocaps", "t2a_R@5")["measured"] == 100.0  # 3 clips: always in the top 5
    assert _row(rows, "esc50", "accuracy")["measured"] == round(
        100 * result["benchmarks"]["esc50"]["metrics"]["accuracy"], 2
    )

    table = (out / "paper.md").read_text()
    assert table == result["markdown"]
    assert "| SED frame AUROC | DESED | 100.00 | 91.66 | 85.52 | — | P? |" in table
    assert "| SED frame AUROC | UrbanSED | no data | 93.62 | 67.39 | 92.72 | P?; O |" in table
    assert "| Retrieval | AudioCaps T2A R@1 | 33.33 | 32.1 | 36.0 | 31.7 | O |" in table
    assert "| PSDS1 (α_st = 1) | AudioSet-S | no data | 11.16 | 1.11 | 9.53 | O |" in table
    assert "| Retrieval | Clotho A2T R@5 | error | 42.2 | 39.8 | 39.3 | O |" in table
    assert "No data: maestro, audioset-strong, urbansed." in table and "Error: clotho: " in table
    assert table.count("\n| ") == len(suite.PAPER) + 1  # the header and one line per row
    saved = json.loads((out / "paper.json").read_text())
    assert saved["rows"] == rows and saved["benchmarks"]["desed"]["metrics"]["frame_auroc"] == 1.0
    assert saved["benchmarks"]["audiogrounding"]["metrics"]["pairs"] == 5  # counts stay integers
    assert (out / "desed" / "metrics.json").exists() and (out / "audiogrounding" / "metrics.md").exists()
    # One build cache per benchmark (the strong-kind sets would otherwise share one).
    assert sorted(os.listdir(cache)) == ["audiocaps", "audiogrounding", "clotho", "desed", "esc50"]


def test_paper_table_names_real_benchmarks_and_spec_numbers():
    assert set(suite.suite_benchmarks("paper")) == set(BENCHMARKS) - {"simulated"}
    rows = {(r.benchmark, r.metric): r.published for r in suite.PAPER}
    assert len(rows) == len(suite.PAPER)  # no row twice
    # Spot checks against FLAM_SPEC §10 (FLAM, FLAM-Global, OpenFLAM).
    assert rows["maestro", "mpauc"] == (56.97, 51.13, None)
    assert rows["urbansed", "psds1"] == (29.52, 0.82, 28.76)
    assert rows["clotho", "a2t_R@5"] == (42.2, 39.8, 39.3)
    assert rows["us8k", "accuracy"] == (75.6, 65.4, None)
    assert rows["audiogrounding", "frame_auroc"] == (None, None, None)


def _loader(monkeypatch):
    loaded = []
    monkeypatch.setattr(
        evaluate_cli, "FLAM", types.SimpleNamespace(load=lambda path: loaded.append(path) or EnergyFLAM())
    )
    return loaded


def test_cli_benchmark_and_suite_exclude_each_other(tmp_path, monkeypatch, capsys):
    loaded = _loader(monkeypatch)
    base = ["--model", "EXPORT", "--data-dir", str(tmp_path)]
    for extra, message in [
        (["--benchmark", "desed", "--suite", "paper"], "error: give exactly one of --benchmark and --suite"),
        ([], "error: give exactly one of --benchmark and --suite"),
        (["--suite", "nope"], "error: unknown suite 'nope'"),
        (["--suite", "paper", "--split", "validation"], "error: --split applies to one --benchmark"),
        (["--suite", "paper"], "holds no benchmark folder"),
    ]:
        assert evaluate_cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert loaded == []  # each was refused before the model was loaded
    with pytest.raises(DataError, match="data directory not found"):
        suite.run_suite(EnergyFLAM(), str(tmp_path / "missing"))


def test_cli_suite_prints_and_writes_the_table(tmp_path, monkeypatch, capsys):
    _loader(monkeypatch)
    root = tmp_path / "DATA"
    _classification_fixture(str(root), "esc50")
    out = tmp_path / "paper"
    argv = ["--model", "EXPORT", "--suite", "paper", "--data-dir", str(root), "--out", str(out)]
    assert evaluate_cli.main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 0
    captured = capsys.readouterr()
    assert "| Zero-shot accuracy | ESC-50 |" in captured.out and "| US8K | no data | 75.6 |" in captured.out
    assert f"report written to {out}" in captured.out
    assert "desed: no data" in captured.err and "esc50: evaluating" in captured.err
    assert json.loads((out / "paper.json").read_text())["model"] == "EXPORT"
