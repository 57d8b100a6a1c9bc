"""Preemption-safe training: kill -9 and resume, SIGTERM, other device counts, 2 processes.

Each interrupted run is a fresh ``python tests/train_standins.py`` process (it sets its
own fake device count) and is compared with one uninterrupted in-process run.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import train_standins as st

from flam_jax.errors import CheckpointError
from flam_jax.train.checkpoint import Checkpointer
from flam_jax.train.trainer import Trainer, train_and_evaluate

DRIVER = os.path.join(os.path.dirname(__file__), "train_standins.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = {"mesh.fsdp": 2}
pytestmark = pytest.mark.slow


def _env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(workdir, *args):
    flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    return subprocess.Popen(
        [sys.executable, DRIVER, str(workdir), *flags, *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc, timeout=600):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _losses(workdir) -> dict[int, float]:
    """Last logged loss per step (a resumed run logs some steps twice)."""
    losses = {}
    path = os.path.join(workdir, "metrics.jsonl")
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            losses[row["step"]] = row["loss"]
    return losses


def _wait_for_step(workdir, step, proc, timeout=420):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if max(_losses(workdir), default=0) >= step:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}:\n{proc.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError(f"step {step} not reached in {timeout}s")


def _restored(workdir, step):
    """(trainer, train state) of the stand-in run saved in ``workdir`` at ``step``."""
    trainer = Trainer(
        st.tiny_config(**OVERRIDES),
        str(workdir),
        model_factory=st.standin_model_factory,
        data_factory=lambda c, m: None,
    )
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=3)
    try:
        return trainer, ckpt.restore(step, trainer.sharded_abstract_state())
    finally:
        ckpt.close()


def _train(workdir, overrides=None, **kwargs):
    """``train_and_evaluate`` of the stand-ins with ``OVERRIDES`` (and ``overrides``)."""
    return train_and_evaluate(
        st.tiny_config(**OVERRIDES, **(overrides or {})),
        str(workdir),
        model_factory=st.standin_model_factory,
        data_factory=st.standin_data_factory,
        **kwargs,
    )


def _final_params(workdir, step):
    return jax.device_get(_restored(workdir, step)[1].params)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Six uninterrupted steps on 8 devices (4 x 2)."""
    workdir = tmp_path_factory.mktemp("straight")
    result = _train(workdir)
    assert result["status"] == "done" and result["step"] == 6
    return workdir, _losses(workdir), _final_params(workdir, 6)


def test_sigterm_then_sigkill_then_resume_is_exact(straight, tmp_path):
    _, want_losses, want_params = straight
    # 1. SIGTERM (preemption notice): save at the current step, exit 0.
    proc = _start(tmp_path, "--slow=1.0", "--config.train.ckpt_every=100")
    _wait_for_step(tmp_path, 2, proc)
    proc.send_signal(signal.SIGTERM)
    code, out = _finish(proc)
    assert code == 0, out
    stopped = int(out.split("RESULT preempted ")[1].split()[0])
    assert 2 <= stopped <= 3
    assert os.path.isdir(tmp_path / "checkpoints" / str(stopped))
    # 2. Resume, checkpointing every step, and kill -9 (likely mid-save) two steps later.
    proc = _start(tmp_path, "--slow=1.0", "--config.train.ckpt_every=1")
    _wait_for_step(tmp_path, stopped + 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # A save cut short by kill -9 leaves only a temporary directory: it must not count.
    partial = tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp-1234"
    if not partial.exists():
        partial.mkdir()
        (partial / "junk").write_text("partial")
    # 3. Resume to the end: the same losses and parameters as the uninterrupted run.
    code, out = _finish(_start(tmp_path))
    assert code == 0, out
    assert "RESULT done 6" in out
    logged = _losses(tmp_path)
    assert sorted(logged) == list(range(1, 7))
    np.testing.assert_allclose(
        [logged[s] for s in range(1, 7)], [want_losses[s] for s in range(1, 7)], atol=1e-6
    )
    got = _final_params(tmp_path, 6)
    for name, value in want_params.items():
        np.testing.assert_allclose(got[name], value, atol=1e-6, err_msg=name)


def test_resume_onto_four_devices(straight, tmp_path):
    """A run saved on 8 devices (4 x 2) continues on 4 (2 x 2)."""
    import shutil

    workdir, want_losses, want_params = straight
    shutil.copytree(workdir / "checkpoints" / "3", tmp_path / "checkpoints" / "3")
    result = _train(tmp_path, devices=jax.devices()[:4])
    assert result["status"] == "done" and result["step"] == 6
    logged = _losses(tmp_path)
    assert sorted(logged) == [4, 5, 6]  # restored at 3, not restarted
    np.testing.assert_allclose([logged[s] for s in (4, 5, 6)], [want_losses[s] for s in (4, 5, 6)], rtol=1e-5)
    got = _final_params(tmp_path, 6)
    for name, value in want_params.items():
        np.testing.assert_allclose(got[name], value, atol=1e-5, err_msg=name)


def test_two_processes_match_one(straight, tmp_path):
    _, want_losses, want_params = straight
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [
        _start(
            tmp_path,
            "--devices=4",
            f"--coordinator=127.0.0.1:{port}",
            "--num-processes=2",
            f"--process-id={i}",
        )
        for i in range(2)
    ]
    outs = [_finish(p) for p in procs]
    for code, out in outs:
        assert code == 0, out
        assert "RESULT done 6" in out
    logged = _losses(tmp_path)
    np.testing.assert_allclose(
        [logged[s] for s in range(1, 7)], [want_losses[s] for s in range(1, 7)], rtol=1e-5
    )
    got = _final_params(tmp_path, 6)
    for name, value in want_params.items():
        np.testing.assert_allclose(got[name], value, atol=1e-5, err_msg=name)
    data_files = os.listdir(tmp_path / "checkpoints" / "6" / "data")
    assert sorted(f for f in data_files if f.startswith("process_")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]


def test_corrupt_or_incompatible_checkpoint_is_one_line_error(straight, tmp_path):
    workdir, _, _ = straight
    # Incompatible: a wider model cannot take these parameters.
    config = st.tiny_config(**OVERRIDES)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=3)
    trainer = Trainer(
        config,
        str(tmp_path),
        model_factory=lambda c, rngs: _wider(rngs),
        data_factory=lambda c, m: None,
    )
    with pytest.raises(CheckpointError, match=r"checkpoints/6 does not match") as err:
        ckpt.restore(6, trainer.sharded_abstract_state())
    assert "\n" not in str(err.value)
    ckpt.close()
    # Corrupt: truncate every data file of the state.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(workdir / "checkpoints", copy)
    for root, _, files in os.walk(copy / "6" / "state"):
        for name in files:
            if name not in ("_METADATA", "_CHECKPOINT_METADATA", "commit_success.txt"):
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(7)
    same = Trainer(
        config,
        str(tmp_path),
        model_factory=st.standin_model_factory,
        data_factory=lambda c, m: None,
    )
    broken = Checkpointer(str(copy), keep=3)
    with pytest.raises(CheckpointError, match=r"copy/6") as err:
        broken.restore(6, same.sharded_abstract_state())
    assert "\n" not in str(err.value)


def _wider(rngs):
    from flax import nnx

    model = st.standin_model_factory(None, rngs)
    model.audio = nnx.Linear(st.SAMPLES // st.FRAMES, 32, rngs=rngs)
    model.audio_projection = nnx.Linear(32, 8, rngs=rngs)
    return model
