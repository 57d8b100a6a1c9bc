"""The device check (benchmarks/gpu_check.sh) in its CPU smoke mode: every section runs and
reports, the killed-and-resumed run logs the uninterrupted run's losses, the markdown is
written. Also the resume comparison on made-up logs, and the section plan on both modes.

The smoke is the GPU run's code at tiny sizes on this CPU, so it cannot rot between runs on
a lent GPU; its figures prove only that it runs (no test times anything).
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import gpu_check  # noqa: E402
import gpu_resume  # noqa: E402

SECTIONS = ["parity", "precision", "resume", "train_step_b2", "detect"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_out")
    scratch = tmp_path_factory.mktemp("gpu_check_scratch")
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("XLA_FLAGS", None)  # conftest's 8 fake devices: the smoke uses the one CPU device
    run = subprocess.run(
        [
            "bash",
            os.path.join(ROOT, "benchmarks", "gpu_check.sh"),
            str(out),
            "--smoke",
            f"--scratch={scratch}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    with open(out / "gpu_check.json") as f:
        return json.load(f), (out / "gpu_check.md").read_text(), out


@pytest.mark.slow
def test_smoke_runs_every_section(smoke):
    report, _, out = smoke
    assert report["ok"] is True
    assert list(report["sections"]) == SECTIONS
    assert all(section["status"] == "ok" for section in report["sections"].values())
    assert report["device"]["platform"] == "cpu"
    assert sorted(os.listdir(out)) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]


@pytest.mark.slow
def test_smoke_resume_logs_the_uninterrupted_losses(smoke):
    r = smoke[0]["sections"]["resume"]["result"]
    assert r["b_killed_returncode"] == -9  # a real SIGKILL
    assert r["b_last_step_before_kill"] == r["gate_step"] - 1
    assert r["b_first_step_after_resume"] == r["checkpoint_step"] + 1
    assert r["steps_compared"] == r["steps"] and r["missing_steps"] == []
    assert r["losses_equal"] and r["repeated_steps"] and r["repeated_steps_equal"]


@pytest.mark.slow
def test_smoke_figures_are_positive_and_finite(smoke):
    sections = {k: v["result"] for k, v in smoke[0]["sections"].items()}
    parity = sections["parity"]
    assert parity["passed"] == parity["ran"] > 0 and parity["failed"] == parity["errors"] == 0
    assert parity["deselected"] == parity["selected"] - parity["ran"]
    precision = sections["precision"]
    assert math.isfinite(precision["loss_bf16"]) and math.isfinite(precision["loss_fp32"])
    assert 0 < precision["loss_rel_diff"] < 0.05
    step = sections["train_step_b2"]
    for key in ("step_s", "examples_per_s", "flops_per_step", "compile_s", "temp_bytes"):
        assert math.isfinite(step[key]) and step[key] > 0, key
    assert step["mfu"] is None and step["peak_bf16_flops_per_chip"] is None  # no peak known for a CPU
    detect = sections["detect"]
    assert all(row["audio_s_per_s"] > 0 and row["windows"] > 0 for row in detect["rows"])


@pytest.mark.slow
def test_smoke_markdown_has_every_section(smoke):
    _, markdown, _ = smoke
    assert markdown.startswith("# Device check (issue 25): smoke")
    for key in SECTIONS:
        assert f"## {key}\n" in markdown
    assert "989 TFLOP/s" in markdown


def test_compare_flags_a_different_or_missing_step():
    straight = [(1, 1.0), (2, 0.9), (3, 0.8)]
    same = gpu_resume._compare({"a": straight, "b": [*straight[:2], (2, 0.9), (3, 0.8)]}, 3)
    assert same["losses_equal"] and same["repeated_steps"] == [2] and same["repeated_steps_equal"]
    off = gpu_resume._compare({"a": straight, "b": [(1, 1.0), (2, 0.9), (2, 0.91), (3, 0.8)]}, 3)
    assert not off["losses_equal"] and not off["repeated_steps_equal"]  # the last line of step 2 wins
    gap = gpu_resume._compare({"a": straight, "b": straight[:2]}, 3)
    assert gap["missing_steps"] == [3] and not gap["losses_equal"] and not gap["losses_close"]


def test_plan_names_two_batch_sizes_on_the_gpu_and_fits_its_budget():
    gpu = {s.key: s for s in gpu_check.plan(smoke=False)}
    assert list(gpu) == ["parity", "precision", "resume", "train_step_b64", "detect", "train_step_b256"]
    assert {s.phase for s in gpu.values() if s.key.startswith("train_step") or s.key == "detect"} == {2}
    assert [s.key for s in gpu_check.plan(smoke=True)] == SECTIONS
