"""Faults a run meets, and the way past each: Ctrl-C (alone and on two processes), a damaged
latest checkpoint and ``train.resume_step``, a resume step that does not exist, a workdir
that is a file, lies under one or cannot be written.

Interrupted runs are fresh driver processes (``tests/train_standins.py``, helpers from
``tests/test_train_resume.py``); the rest call the library or flam-train's ``main`` in-process.
"""

import os
import shutil
import signal
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import train_standins as st
from test_train_resume import OVERRIDES, _finish, _losses, _start, _train, _wait_for_step

from flam_jax.cli import train as cli_train
from flam_jax.errors import CheckpointError, ConfigError
from flam_jax.train.checkpoint import Checkpointer
from flam_jax.train.trainer import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(ROOT, "experiments", "cpu_demo.py") + ":tiny"


def _stopped_at(out: str) -> int:
    assert out.count("interrupted: checkpoint saved at step ") == 1, out
    return int(out.split("interrupted: checkpoint saved at step ")[1].split()[0])


def _read_until(proc, text: str, timeout: float = 60) -> str:
    """The process's output up to the first line holding ``text``."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if text in line or not line:
            return "".join(lines)
    raise AssertionError(f"no {text!r} in {timeout}s:\n{''.join(lines)}")


@pytest.mark.slow
def test_ctrl_c_saves_the_step_exits_130_and_the_rerun_resumes_there(tmp_path):
    proc = _start(tmp_path, "--slow=1.0", "--config.train.ckpt_every=100")
    _wait_for_step(tmp_path, 2, proc)
    proc.send_signal(signal.SIGINT)
    # A second Ctrl-C while it stops (the step in flight takes 1 s of --slow, then the save).
    head = _read_until(proc, "interrupt: stopping after the current step")
    proc.send_signal(signal.SIGINT)
    code, out = _finish(proc)
    out = head + out
    assert code == 130, out
    stopped = _stopped_at(out)
    assert 2 <= stopped <= 3 and f"RESULT interrupted {stopped}" in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "already stopping" in out  # the second Ctrl-C was answered, not acted on
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [str(stopped)]
    code, out = _finish(_start(tmp_path))
    assert code == 0 and "RESULT done 6" in out, out
    assert f"first step {stopped + 1} done" in out  # restored, not restarted
    assert sorted(_losses(tmp_path)) == list(range(1, 7))


@pytest.mark.slow
def test_ctrl_c_on_two_processes_stops_both_at_one_saved_step(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    flags = [f"--coordinator=127.0.0.1:{port}", "--num-processes=2", "--heartbeat-timeout-s=10"]
    procs = [
        _start(
            tmp_path,
            "--devices=4",
            "--slow=1.0",
            "--config.train.ckpt_every=100",
            *flags,
            f"--process-id={i}",
        )
        for i in range(2)
    ]
    _wait_for_step(tmp_path, 2, procs[0])
    for proc in procs:  # as a launcher passes Ctrl-C on
        proc.send_signal(signal.SIGINT)
    (code0, out0), (code1, out1) = (_finish(p) for p in procs)
    assert code0 == 130 and code1 == 130, out0 + out1
    stopped = _stopped_at(out0)  # printed by process 0 only
    assert f"RESULT interrupted {stopped}" in out1  # the same step on both
    data = os.listdir(tmp_path / "checkpoints" / str(stopped) / "data")
    assert sorted(f for f in data if f.startswith("process_")) == [
        "process_0-of-2.json",
        "process_1-of-2.json",
    ]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Six steps in-process, checkpoints at 3 and 6; and the losses they logged."""
    workdir = tmp_path_factory.mktemp("saved")
    result = _train(workdir)
    assert result["status"] == "done" and sorted(os.listdir(workdir / "checkpoints")) == ["3", "6"]
    return workdir, _losses(workdir)


def test_a_damaged_latest_checkpoint_names_the_previous_step_and_resume_step_resumes_from_it(
    saved, tmp_path, capsys
):
    source, want = saved
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir)
    with open(workdir / "checkpoints" / "6" / "state" / "manifest.ocdbt", "r+b") as f:
        f.truncate(7)
    with pytest.raises(CheckpointError) as err:
        _train(workdir)
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"checkpoint {workdir}/checkpoints/6 cannot be read (state/manifest.ocdbt: ")
    way = "step 3 is the previous complete one: resume from it with --config.train.resume_step=3"
    assert message.endswith(f"; {way} (step 6 is kept)")
    assert "tensorstore_spec" not in message
    assert os.path.isdir(workdir / "checkpoints" / "6")  # nothing deleted, nothing moved

    capsys.readouterr()
    result = _train(workdir, {"train.resume_step": 3})
    assert result["status"] == "done" and result["step"] == 6
    out = capsys.readouterr().out
    assert f"resumed from step 3: later step(s) 6 moved to {workdir}/checkpoints/superseded" in out
    (aside,) = os.listdir(workdir / "checkpoints" / "superseded")
    assert aside.startswith("6-")
    damaged = workdir / "checkpoints" / "superseded" / aside / "state" / "manifest.ocdbt"
    assert damaged.stat().st_size == 7  # the damaged step itself, kept
    got = _losses(workdir)
    assert [got[s] for s in (4, 5, 6)] == pytest.approx([want[s] for s in (4, 5, 6)], abs=1e-6)
    # The new step 6 is whole, and the default (latest) resumes from it.
    trainer = Trainer(
        st.tiny_config(**OVERRIDES),
        str(workdir),
        model_factory=st.standin_model_factory,
        data_factory=lambda c, m: None,
    )
    ckpt = Checkpointer(str(workdir / "checkpoints"), keep=3)
    try:
        assert ckpt.steps() == [3, 6]
        assert int(ckpt.restore(6, trainer.sharded_abstract_state()).step) == 6
    finally:
        ckpt.close()


def test_a_resume_step_that_does_not_exist_lists_the_saved_ones(saved, tmp_path):
    source, _ = saved
    shutil.copytree(source / "checkpoints", tmp_path / "run" / "checkpoints")
    with pytest.raises(CheckpointError, match=r"train.resume_step=4: .* available steps: 3, 6$") as err:
        _train(tmp_path / "run", {"train.resume_step": 4})
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match=r"available steps: none$"):
        _train(tmp_path / "empty", {"train.resume_step": 3})
    with pytest.raises(ConfigError, match=r"train.resume_step must be -1"):
        _train(tmp_path / "run", {"train.resume_step": -2})
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["3", "6"]  # untouched


@pytest.fixture
def no_training(monkeypatch):
    """flam-train's main with the training replaced: a check must stop it before."""
    calls = []
    monkeypatch.setattr(cli_train, "train_and_evaluate", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(cli_train.compile_cache, "enable", lambda *a, **k: None)
    return calls


def _cli_error(capsys, workdir) -> str:
    code = cli_train.main(["flam-train", f"--config={EXPERIMENT}", f"--workdir={workdir}"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --workdir "), err
    return lines[0]


def test_a_workdir_that_is_a_file_or_under_one_is_refused_before_training(tmp_path, capsys, no_training):
    afile = tmp_path / "notes.txt"
    afile.write_text("not a directory")
    assert f"{afile} is a file, not a folder" in _cli_error(capsys, afile)
    # A path under a file is what a read-only place looks like to root (see the next test).
    assert f"{afile} is a file, not a folder" in _cli_error(capsys, afile / "run")
    assert no_training == [] and afile.read_text() == "not a directory"


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes into read-only folders; the path-under-a-file case stands in"
)
def test_a_read_only_workdir_is_refused_before_training(tmp_path, capsys, no_training):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "cannot write in" in _cli_error(capsys, locked)
        assert "cannot write in" in _cli_error(capsys, locked / "run")  # a read-only parent
    finally:
        locked.chmod(0o700)
    assert no_training == []


def test_flam_train_exits_130_after_ctrl_c_and_0_after_sigterm(tmp_path, capsys, monkeypatch):
    argv = ["flam-train", f"--config={EXPERIMENT}", f"--workdir={tmp_path / 'run'}"]
    monkeypatch.setattr(cli_train.compile_cache, "enable", lambda *a, **k: None)
    for status, code in (("interrupted", 130), ("preempted", 0), ("done", 0)):
        monkeypatch.setattr(
            cli_train, "train_and_evaluate", lambda *a, s=status, **k: {"status": s, "step": 3}
        )
        assert cli_train.main(argv) == code
        assert f"{status} at step 3" in capsys.readouterr().out

    def ctrl_c_while_starting(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "train_and_evaluate", ctrl_c_while_starting)
    assert cli_train.main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "interrupted before the train loop could save: no new checkpoint written"
    ]
