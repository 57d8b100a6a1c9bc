"""cpu_demo end to end: ``flam-train`` on the real model, losses and Grain pipeline.

The dataset is a tiny ``flam_clips`` built from the committed clips fixture (the demo
corpus needs apt and is not in CI); the text tower loads all-MiniLM-L6-v2's real weights.
"""

import json
import os
import subprocess
import sys

import pytest
from data_fixtures import materialise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def test_cpu_demo_tiny_trains_end_to_end(tmp_path):
    from flam_jax.data import builders

    builders.build("clips", materialise("clips", tmp_path), tmp_path / "tfds")
    workdir = tmp_path / "run"
    # One device; LLVM optimisation off: compiling the full model dominates a 3-step run.
    xla = "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"
    env = dict(os.environ, XLA_FLAGS=xla, JAX_PLATFORMS="cpu")
    cmd = [
        sys.executable,
        "-m",
        "flam_jax.train.main",
        f"--config={ROOT}/experiments/cpu_demo.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.dir={tmp_path / 'tfds'}",
        "--config.train.log_every=1",
    ]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "done at step 3" in out.stdout
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        for key in ("loss", "clip_loss", "sed_loss", "prior_loss", "grad_norm", "lr", "examples_per_s"):
            assert key in row and row[key] == row[key], (key, row)  # present and not NaN
    assert rows[0]["loss"] != rows[2]["loss"]
    assert os.path.isdir(workdir / "checkpoints" / "3" / "state")
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir / "tensorboard"))
    assert json.load(open(workdir / "config.json"))["model"]["text_tower"] == "minilm-l6"
