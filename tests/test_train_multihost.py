"""A multi-host run tested as one: 4 processes over gloo on localhost with the mesh (data 2
x fsdp 2) spanning processes, against one process; its checkpoint resumed by 2 and by 1
process; a killed process stopping the job in bounded time; an unshared workdir refused.
"""

import os
import shutil
import signal
import socket
import time

import numpy as np
import pytest
import train_standins as st
from test_train_resume import (
    _final_params,
    _finish,
    _losses,
    _restored,
    _start,
    _train,
    _wait_for_step,
)

pytestmark = pytest.mark.slow
EVAL = ["--eval", "--config.train.eval_every=2", "--config.train.ckpt_every=2"]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _job(workdir, processes: int, devices: int, *extra, workdirs=None):
    """``processes`` driver processes joined by jax.distributed (gloo); returns the Popens."""
    port = _port()
    return [
        _start(
            (workdirs or [workdir] * processes)[i],
            f"--devices={devices}",
            f"--coordinator=127.0.0.1:{port}",
            f"--num-processes={processes}",
            f"--process-id={i}",
            "--heartbeat-timeout-s=10",
            *extra,
        )
        for i in range(processes)
    ]


def _evals(workdir) -> dict[int, float]:
    import json

    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "eval/frame_auroc_micro" in row:
                out[row["step"]] = row["eval/frame_auroc_micro"]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Six uninterrupted steps in one process on 8 devices, with the validation hook."""
    workdir = tmp_path_factory.mktemp("reference")
    result = _train(workdir, {"train.eval_every": 2}, eval_fn=st.standin_eval_fn())
    assert result["status"] == "done"
    return _losses(workdir), _evals(workdir), _final_params(workdir, 6)


def _hook_on_checkpoint(workdir, step) -> float:
    """The validation hook in this one process on the parameters ``workdir`` saved at ``step``."""
    trainer, state = _restored(workdir, step)
    return st.standin_eval_fn()(trainer.model(state), step)["frame_auroc_micro"]


def _assert_same_run(workdir, reference, steps, *, hook=True):
    losses, evals, params = reference
    logged = _losses(workdir)
    np.testing.assert_allclose([logged[s] for s in steps], [losses[s] for s in steps], rtol=1e-5)
    got = _evals(workdir)
    for step in (s for s in steps if hook and s in evals):
        # AUROC ranks scores: parameters equal to 1e-5 may swap two close scores, so the hook
        # is checked on the very parameters the multi-process run evaluated.
        assert got[step] == pytest.approx(_hook_on_checkpoint(workdir, step), abs=1e-6), step
        assert got[step] == pytest.approx(evals[step], abs=0.02), step
    if 6 in steps:
        final = _final_params(workdir, 6)
        for name, value in params.items():
            np.testing.assert_allclose(final[name], value, atol=1e-5, err_msg=name)


def _back_to_step_4(src, dest) -> None:
    """A copy of a finished run as it was at step 4: its later checkpoint and metrics gone."""
    import json

    shutil.copytree(src, dest)
    shutil.rmtree(dest / "checkpoints" / "6")
    lines = (dest / "metrics.jsonl").read_text().splitlines()
    (dest / "metrics.jsonl").write_text("".join(f"{x}\n" for x in lines if json.loads(x)["step"] <= 4))


def test_four_processes_match_one_then_resume_on_two_and_on_one(reference, tmp_path):
    four = tmp_path / "four"
    outs = [_finish(p) for p in _job(four, 4, 1, *EVAL)]
    for code, out in outs:
        assert code == 0 and "RESULT done 6" in out, out
    _assert_same_run(four, reference, range(1, 7))  # the hook ran at steps 2, 4 and 6
    data = sorted(os.listdir(four / "checkpoints" / "4" / "data"))
    assert [n for n in data if n.startswith("process_")] == [f"process_{i}-of-4.json" for i in range(4)]
    for processes, devices in ((2, 2), (1, 4)):
        copy = tmp_path / f"on{processes}"
        _back_to_step_4(four, copy)
        outs = [_finish(p) for p in _job(copy, processes, devices, *EVAL)]
        for code, out in outs:
            assert code == 0 and "RESULT done 6" in out, out
        assert f"resuming on {processes} processes from a checkpoint of 4" in outs[0][1]
        _assert_same_run(copy, reference, range(5, 7))


def test_a_killed_process_stops_the_job_and_the_next_start_resumes(reference, tmp_path):
    procs = _job(tmp_path, 4, 1, "--slow=0.4")
    _wait_for_step(tmp_path, 4, procs[0])
    procs[2].send_signal(signal.SIGKILL)
    start = time.monotonic()
    codes = [p.wait(timeout=120) for p in procs]
    waited = time.monotonic() - start
    assert codes[2] == -signal.SIGKILL
    assert all(code != 0 for code in codes), codes  # no survivor carries on, none hangs
    assert waited < 120
    for p in procs:
        p.stdout.close()
    outs = [_finish(p) for p in _job(tmp_path, 4, 1)]
    for code, out in outs:
        assert code == 0 and "RESULT done 6" in out, out
    assert "first step 4 done" in outs[0][1]  # from the last complete checkpoint, step 3
    _assert_same_run(tmp_path, reference, range(4, 7), hook=False)


def test_a_workdir_the_processes_do_not_share_is_refused(tmp_path):
    dirs = [tmp_path / "host0", tmp_path / "host1"]  # two "hosts", each with its own disk
    outs = [_finish(p) for p in _job(tmp_path, 2, 1, workdirs=dirs)]
    for code, out in outs:
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert code == 2, out
        assert (
            len(errors) == 1 and "is not shared by the run's 2 processes: process 1 cannot see" in errors[0]
        )
    assert not (dirs[0] / "checkpoints").exists()  # stopped before anything was written
