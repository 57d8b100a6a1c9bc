"""``make demo`` at tiny scale: corpus fallback → three trainings → export → evaluation → detect.

The corpus is the synthesised fallback (CI has no Debian sound packages); the training runs
are ``cpu_demo.py:tiny,global``, then ``cpu_demo.py:tiny`` and ``cpu_demo.py:tiny,ablation``
started from its step-2 export, through ``flam-train``, with the real model (MiniLM-L6's real
weights), losses and Grain pipeline.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    cache, workdir = base / "cache", base / "run"
    # One device; LLVM optimisation off: compiling the full model dominates a 3-step run.
    xla = "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=xla)
    env.pop("JAX_PLATFORMS")  # the demo chooses the CPU itself (and libtpu is installed)
    cmd = [sys.executable, "-m", "demo", "--scale=tiny", "--synthetic"]
    cmd += [f"--cache-dir={cache}", f"--workdir={workdir}"]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    # A clean log: no libtpu start-up errors on a CPU, no Orbax warning for a fresh step.
    for noise in ("TPU_WORKER_HOSTNAMES", "Metadata file does not exist"):
        assert noise not in out.stdout + out.stderr, noise
    return cache, workdir, out.stdout


def test_demo_prints_its_table_and_writes_what_it_lists(demo):
    _, workdir, stdout = demo
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["corpus"] == "synthetic"
    assert [(r["run"], r["set"]) for r in summary["rows"]] == [
        (run, held_out)
        for run in ("global", "flam", "no_per_text")
        for held_out in ("seen", "novel", "foreign")
    ]
    for row in summary["rows"]:
        auroc = row["metrics"]["frame_auroc_micro"]
        assert 0.0 <= auroc <= 1.0 and not math.isnan(auroc), row
        assert f"| {row['label']} | {auroc:.3f} |" in stdout
    # The novel set's queries are captions no training clip has.
    corpus = workdir.parent / "cache" / "demo_corpus"
    unseen = set((corpus / "unseen_captions.txt").read_text().split("\n")) - {""}
    foreign = {"an electronic tone", "a whistle sliding upwards", "a light drizzle"}
    assert unseen == {"a bell ringing", "rapid knocking"} | foreign
    truth = json.loads((workdir / "detect" / "truth.json").read_text())
    assert truth["events"] and truth["frame_s"] == 0.3125
    for event in truth["events"]:
        assert 0 <= event["onset_s"] < event["offset_s"] <= 10.0
        assert event["caption"] in summary["detection"]["queries"]
        assert event["caption"] in foreign  # the picture is of a foreign-set mixture
    png = workdir / "detect" / "detection.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    detection = json.loads((workdir / "detect" / "detection.json").read_text())
    queries = [q["text"] for q in detection["results"][0]["queries"]]
    assert queries == summary["detection"]["queries"] and queries[-1] in unseen
    for path in (*summary["exports"].values(), png, workdir / "summary.md"):
        assert str(path) in stdout


def test_demo_trainings_differ_only_in_the_per_text_terms(demo):
    from flam_jax.export.params import checkpoint_steps

    _, workdir, stdout = demo
    flam = json.loads((workdir / "flam" / "config.json").read_text())
    ablation = json.loads((workdir / "no_per_text" / "config.json").read_text())
    global_ = json.loads((workdir / "global" / "config.json").read_text())
    assert flam["model"]["per_text_scale"] and flam["model"]["per_text_bias"]
    assert not ablation["model"]["per_text_scale"] and not ablation["model"]["per_text_bias"]
    assert flam["model"]["text_tower"] == "minilm-l6"
    # FLAM-Global trains the global loss alone; both FLAM runs start from its first kept
    # checkpoint (step 2 of 3 here), exported beside its final one.
    assert global_["loss"]["w_sed"] == global_["loss"]["w_prior"] == 0.0 and global_["loss"]["w_clip"] > 0
    assert checkpoint_steps(str(workdir / "global")) == [2, 3]
    assert str(workdir / "global" / "export-2") in stdout
    for run in (flam, ablation):
        assert run["train"]["init_from"] == str(workdir / "global" / "export-2")
        assert run["model"]["text_weights"] == ""  # the text tower comes from that export too
    assert ablation["train"]["init_exclude"] and not flam["train"]["init_exclude"]
    # Each fresh start reports what it took from the export (WORKDIR/init_report.json).
    report = json.loads((workdir / "no_per_text" / "init_report.json").read_text())
    assert report["unused"] and set(report["unused"].values()) == {"matched by train.init_exclude"}
    assert {"shared_log_scale", "shared_bias"} <= set(report["fresh"])
    assert any(name.startswith("audio/") for name in report["loaded"])
    assert f"[flam] initial weights from {workdir / 'global' / 'export-2'}: loaded" in stdout
    # The two FLAM runs train side by side, each line of their logs marked with its run.
    for run in ("flam", "no_per_text"):
        assert any(line.startswith(f"[{run}] step 3") for line in stdout.splitlines()), run
    for run in ("flam", "no_per_text"):
        rows = [json.loads(line) for line in open(workdir / run / "metrics.jsonl")]
        assert [r["step"] for r in rows] == [1, 2, 3]
        for key in ("loss", "clip_loss", "sed_loss", "prior_loss", "grad_norm", "lr"):
            assert all(r[key] == r[key] for r in rows), key  # present and not NaN
        # The synthetic corpus has background clips: none of the mixtures fell back to noise.
        assert all(r["data/sed_synthetic_background_fraction"] == 0.0 for r in rows)
        assert all(r["data/sed_decode_errors"] == r["data/global_decode_errors"] == 0.0 for r in rows)
        assert os.path.isdir(workdir / run / "checkpoints" / "3" / "state")
        assert any(n.startswith("events.out.tfevents") for n in os.listdir(workdir / run / "tensorboard"))


def test_demo_ablation_export_shares_one_scale_and_bias_across_texts(demo):
    from flam_jax.infer.api import FLAM

    _, workdir, _ = demo
    ablation = FLAM.load(workdir / "no_per_text" / "export")
    text = ablation.embed_text(["a bell ringing", "steady rain", "a low hum"])
    assert np.ptp(text.alpha) == 0.0 and np.ptp(text.beta) == 0.0
    # Learned, not the initial constants: three steps of Adam moved them.
    assert text.alpha[0] != np.float32(10.0) and text.beta[0] != np.float32(-8.0)
    per_text = FLAM.load(workdir / "flam" / "export").embed_text(["a bell ringing", "steady rain"])
    assert per_text.alpha[0] != per_text.alpha[1] and per_text.beta[0] != per_text.beta[1]


def test_second_run_reuses_corpus_training_and_exports(demo, capsys):
    from demo import run as demo_lib

    cache, workdir, _ = demo
    before = os.path.getmtime(cache / "demo_corpus" / "summary.json")
    demo_lib.ensure_corpus(str(cache), synthetic=True)
    spec = demo_lib.experiment_spec("tiny", "")
    step = demo_lib.train(spec, str(workdir / "flam"), str(cache / "tfds"))
    demo_lib.export(str(workdir / "flam"), str(workdir / "flam" / "export"), step)
    out = capsys.readouterr().out
    assert step == 3 and out.count("reusing") == 3, out
    assert os.path.getmtime(cache / "demo_corpus" / "summary.json") == before
    # The evaluation of an unchanged export is read back, not recomputed.
    sets = demo_lib.held_out_sets(str(cache / "tfds"))
    export = str(workdir / "flam" / "export")
    rows = demo_lib.evaluate(export, sets, 4, str(workdir / "eval" / "flam"), "flam", "FLAM", "unbiased")
    out = capsys.readouterr().out
    assert out.count("evaluation: reusing") == 3 and "evaluated" not in out, out
    summary = json.loads((workdir / "summary.json").read_text())
    first = [r["metrics"] for r in summary["rows"] if r["run"] == "flam"]
    assert [r.metrics["frame_auroc_micro"] for r in rows] == [m["frame_auroc_micro"] for m in first]


def test_unknown_scale_is_one_line_error(capsys):
    from demo import run as demo_lib

    assert demo_lib.main(["--scale=huge", "--workdir=/nonexistent/x"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown scale 'huge' (use full or tiny)"


def test_corpus_falls_back_to_synthetic_when_the_debian_build_fails(tmp_path, monkeypatch, capsys):
    from demo import run as demo_lib
    from flam_jax.errors import DataError

    calls = []

    def fake_run(cmd, what):
        calls.append(cmd)
        if "--synthetic" not in cmd:
            raise DataError(f"{what} failed (exit 2); see the output above")
        (tmp_path / "demo_corpus").mkdir()
        (tmp_path / "demo_corpus" / "summary.json").write_text('{"source": "synthetic"}')

    monkeypatch.setattr(demo_lib, "_run", fake_run)
    assert demo_lib.ensure_corpus(str(tmp_path), synthetic=False) == {"source": "synthetic"}
    assert len(calls) == 2 and "--synthetic" in calls[1]
    assert "falling back to synthesised captioned events" in capsys.readouterr().out


def test_a_corpus_of_another_recipe_is_rebuilt_and_its_runs_refused(tmp_path, monkeypatch, capsys):
    from demo import run as demo_lib
    from flam_jax.errors import InputError

    corpus = tmp_path / "demo_corpus"
    corpus.mkdir()
    (corpus / "summary.json").write_text('{"source": "debian:a,b"}')
    (corpus / "recipe.txt").write_text("an older recipe")
    monkeypatch.setattr(demo_lib.builders, "load", lambda *a: [])  # its dataset is built
    monkeypatch.setattr(demo_lib, "_ensure_indexes", lambda data_dir: None)
    calls = []
    monkeypatch.setattr(demo_lib, "_run", lambda cmd, what: calls.append(cmd))
    demo_lib.ensure_corpus(str(tmp_path), synthetic=False)
    assert len(calls) == 1 and "--build" in calls[0] and "rebuilding" in capsys.readouterr().out
    assert (corpus / "recipe.txt").read_text() == demo_lib.corpus_recipe()
    demo_lib.ensure_corpus(str(tmp_path), synthetic=False)
    assert len(calls) == 1 and "corpus: reusing" in capsys.readouterr().out
    # Runs trained on the older recipe's corpus are not reused with the new one.
    workdir = tmp_path / "runs"
    workdir.mkdir()
    (workdir / "corpus.json").write_text('{"source": "debian:a,b", "recipe": "an older recipe"}')
    with pytest.raises(InputError, match="older demo recipe"):
        demo_lib._claim_workdir(str(workdir), "debian:a,b")


def test_side_by_side_commands_run_at_once_with_their_lines_prefixed(tmp_path, capsys):
    from demo import run as demo_lib

    # Each waits for the other's file: run one after the other, they would not meet.
    meet = textwrap.dedent(
        """
        import os, sys, time
        open(sys.argv[1], "w").close()
        start = time.time()
        while not os.path.exists(sys.argv[2]) and time.time() - start < 60:
            time.sleep(0.05)
        print("met" if os.path.exists(sys.argv[2]) else "alone")
        print("done")
        sys.exit(int(sys.argv[3]))
        """
    )
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    codes = demo_lib.run_side_by_side(
        {"one": [sys.executable, "-c", meet, a, b, "0"], "two": [sys.executable, "-c", meet, b, a, "3"]}
    )
    assert codes == {"one": 0, "two": 3}
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == ["[one] done", "[one] met", "[two] done", "[two] met"]


def test_a_failed_side_by_side_training_names_itself(tmp_path, monkeypatch):
    from demo import run as demo_lib
    from flam_jax.errors import DataError

    monkeypatch.setattr(
        demo_lib, "run_side_by_side", lambda commands: {n: 0 if n == "flam" else 1 for n in commands}
    )
    spec = demo_lib.experiment_spec("tiny", "")
    runs = {name: (spec, str(tmp_path / name), ()) for name in ("flam", "no_per_text")}
    with pytest.raises(DataError, match=r"^training failed: no_per_text \(exit 1\); see the output above$"):
        demo_lib.train_side_by_side(runs, str(tmp_path / "data"))
