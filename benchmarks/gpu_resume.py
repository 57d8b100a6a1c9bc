"""The device check's resume section: ``flam-train`` of gpu_small:debug, killed and resumed.

On the synthetic demo corpus (``data/demo_corpus.py --synthetic --build``, with a byte-level
BPE trained on its captions), three runs of ``python -m flam_jax.cli.train``:

- A, the reference: ``train.steps`` steps straight through (50 on the GPU);
- B, killed, beside A: the same command in another workdir, whose data feed stops before step
  ``GATE`` (30) and waits there; once checkpoint ``train.ckpt_every`` (25) is complete on
  disk this process (and its data workers) gets SIGKILL, as a VM that vanishes would;
- B again, plain, in B's workdir: it restores step 25 and trains to the end.

The losses B logged (``metrics.jsonl``; a step logged twice keeps its last line) must equal
A's at every step, and B's steps 26..29 from before the kill must equal their second run.
The gate only decides *when* the kill lands (after the checkpoint, before the end, however
fast the GPU steps): without it a run of 50 short steps can finish before an outside kill.
On the GPU all three runs set ``--xla_gpu_deterministic_ops`` (XLA's GPU reductions and
scatters are otherwise free to differ between runs); if A fails with it, the section runs
again without it and says so. All runs share one persistent compilation cache: B's
restart reads the step A and B compiled.

Also the gate's driver: ``python benchmarks/gpu_resume.py --gated STEP MARKER FLAGS...``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import gpu_sections as gs  # noqa: E402

GPU = {"steps": 50, "ckpt": 25, "gate": 30}
SMOKE = {"steps": gs.SMOKE_STEPS, "ckpt": gs.SMOKE_CKPT, "gate": gs.SMOKE_STEPS - 1}
DETERMINISTIC = "--xla_gpu_deterministic_ops=true"
LEG_TIMEOUT_S = 600  # one run; the section's own limit (gpu_check.py) is tighter


class _Gate:
    """The trainer's data iterator, stopping for good when batch ``stop_at`` is asked for
    (the batch of step ``stop_at`` on a fresh start); everything else is the iterator's."""

    def __init__(self, inner, stop_at: int, marker: str):
        self._inner, self._stop_at, self._marker = inner, stop_at, marker
        self._fetched = 0

    def __iter__(self):
        return self

    def __next__(self):
        self._fetched += 1
        if self._fetched == self._stop_at:
            with open(self._marker, "w") as f:
                f.write(str(self._stop_at))
            while True:  # until the SIGKILL: the checkpoint thread carries on meanwhile
                time.sleep(60)
        return next(self._inner)

    def __getattr__(self, name):  # get_state, set_state, pop_stats, close, ...
        return getattr(self._inner, name)


def gated_main(argv: list[str]) -> int:
    """flam-train with its data feed behind a ``_Gate`` (argv: STEP MARKER flam-train flags)."""
    stop_at, marker, flags = int(argv[0]), argv[1], argv[2:]
    from flam_jax.cli import train as cli
    from flam_jax.train import trainer

    # The trainer builds its data iterator through this module-level default.
    real = trainer.default_data_factory
    trainer.default_data_factory = lambda config, mesh: _Gate(real(config, mesh), stop_at, marker)
    return cli.main(["flam-train", *flags])


def _captions(manifest: str) -> list[str]:
    out = []
    with open(manifest) as f:
        for line in f:
            captions = json.loads(line).get("captions", [])
            out.extend([captions] if isinstance(captions, str) else captions)
    return out


_RUNS: list[subprocess.Popen] = []  # every run started, ended by _end_runs whatever happens


def _start(argv: list[str], log: str, env: dict) -> subprocess.Popen:
    with open(log, "w") as out:
        # A session of its own: the kill reaches the Grain worker processes too.
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _RUNS.append(proc)
    return proc


def _end_runs() -> None:
    """SIGKILL what is left of every run (and its workers): a failed or stopped section must
    not leave training on the device while the timed sections run."""
    for proc in _RUNS:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    _RUNS.clear()


def _tail(log: str, lines: int = 8) -> list[str]:
    with open(log, errors="replace") as f:
        return f.read().splitlines()[-lines:]


def _finish(proc: subprocess.Popen, log: str, what: str) -> None:
    try:
        code = proc.wait(timeout=LEG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{what} did not finish in {LEG_TIMEOUT_S} s: {_tail(log, 3)}") from None
    if code != 0:
        raise AssertionError(f"{what} exited {code}: {' | '.join(_tail(log, 4))}")


def _kill_after_checkpoint(proc: subprocess.Popen, workdir: str, step: int, marker: str, log: str) -> float:
    """SIGKILL ``proc`` once it waits at the gate and checkpoint ``step`` is complete."""
    complete = os.path.join(workdir, "checkpoints", str(step))  # Orbax renames a finished save
    started = time.perf_counter()
    while not (os.path.isfile(marker) and os.path.isdir(complete)):
        if proc.poll() is not None:
            raise AssertionError(
                f"run B ended ({proc.returncode}) before the kill: {' | '.join(_tail(log, 4))}"
            )
        if time.perf_counter() - started > LEG_TIMEOUT_S:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"run B did not reach the gate with checkpoint {step} in {LEG_TIMEOUT_S} s")
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - started


def _logged(workdir: str) -> list[tuple[int, float]]:
    """Every (step, loss) line of metrics.jsonl, in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [(row["step"], row["loss"]) for row in map(json.loads, f)]


def _legs(scratch: str, flags: list[str], env: dict, plan: dict) -> dict:
    """Runs A and B side by side, kills B, resumes it; what each left behind."""
    cli = [sys.executable, "-m", "flam_jax.cli.train", *flags]
    a, b = os.path.join(scratch, "run_a"), os.path.join(scratch, "run_b")
    marker = os.path.join(scratch, "gate_reached")
    logs = {name: os.path.join(scratch, f"{name}.log") for name in ("a", "b_killed", "b_resumed")}
    started = time.perf_counter()
    run_a = _start([*cli, f"--workdir={a}"], logs["a"], env)
    gated = [sys.executable, __file__, "--gated", str(plan["gate"]), marker, *flags, f"--workdir={b}"]
    run_b = _start(gated, logs["b_killed"], env)
    waited = _kill_after_checkpoint(run_b, b, plan["ckpt"], marker, logs["b_killed"])
    killed_steps = [step for step, _ in _logged(b)]
    resumed = _start([*cli, f"--workdir={b}"], logs["b_resumed"], env)
    _finish(run_a, logs["a"], "run A")
    _finish(resumed, logs["b_resumed"], "resumed run B")
    with open(logs["b_resumed"]) as f:
        first = re.search(r"first step (\d+) done", f.read())
    return {
        "a": _logged(a),
        "b": _logged(b),
        "b_killed_returncode": run_b.returncode,
        "b_last_step_before_kill": max(killed_steps, default=0),
        "b_first_step_after_resume": int(first.group(1)) if first else None,
        "kill_wait_s": waited,
        "seconds": time.perf_counter() - started,
        "logs": {name: _tail(path, 2) for name, path in logs.items()},
    }


def _compare(legs: dict, steps: int) -> dict:
    """A's losses against B's (last line per step), and B's repeated steps against each other."""
    ref, got, seen = dict(legs["a"]), {}, {}
    for step, loss in legs["b"]:
        seen.setdefault(step, []).append(loss)
        got[step] = loss
    wanted = range(1, steps + 1)
    missing = [s for s in wanted if s not in ref or s not in got]
    common = [s for s in wanted if s in ref and s in got]
    a, b = np.array([ref[s] for s in common]), np.array([got[s] for s in common])
    repeated = {s: v for s, v in seen.items() if len(v) > 1}
    return {
        "steps_compared": len(common),
        "missing_steps": missing,
        "losses_equal": not missing and bool(np.array_equal(a, b)),
        "losses_close": not missing and bool(np.allclose(b, a, rtol=1e-5, atol=1e-6)),
        "max_abs_diff": float(np.max(np.abs(a - b))) if common else None,
        "repeated_steps": sorted(repeated),
        "repeated_steps_equal": all(len(set(v)) == 1 for v in repeated.values()),
        "loss_first_last": [ref.get(1), ref.get(steps)],
    }


def run_resume(scratch: str, smoke: bool) -> dict:
    plan = SMOKE if smoke else GPU
    corpus = os.path.join(scratch, "corpus")
    build = [sys.executable, "data/demo_corpus.py", "--synthetic", "--build", f"--cache-dir={corpus}"]
    subprocess.run(build, cwd=ROOT, check=True, capture_output=True, text=True)
    captions = _captions(os.path.join(corpus, "demo_corpus", "manifest.jsonl"))
    tokenizer = gs.bpe_tokenizer(captions, os.path.join(scratch, "tokenizer"))
    overrides = [
        *(gs.SMOKE_OVERRIDES if smoke else []),
        f"train.steps={plan['steps']}",
        f"train.ckpt_every={plan['ckpt']}",
        "train.log_every=1",
        f"train.compile_cache={gs.cache_dir(scratch)}",
        f"data.dir={os.path.join(corpus, 'tfds')}",
        f"model.tokenizer={tokenizer}",
    ]
    flags = [f"--config={gs.GPU_SMALL_DEBUG}", *(f"--config.{item}" for item in overrides)]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    deterministic = not smoke
    notes = []
    for attempt in (1, 2):
        leg_env = dict(env)
        if deterministic:
            leg_env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + DETERMINISTIC).strip()
        folder = os.path.join(scratch, f"attempt{attempt}")
        os.makedirs(folder)
        try:
            legs = _legs(folder, flags, leg_env, plan)
            break
        except AssertionError as err:
            if not deterministic or attempt == 2:
                raise
            notes.append(f"with {DETERMINISTIC}: {err}; ran again without it")
            deterministic = False
        finally:
            _end_runs()
    return {
        "config": gs.GPU_SMALL_DEBUG.split(os.sep)[-1],
        "overrides": overrides[:-3],
        "steps": plan["steps"],
        "checkpoint_step": plan["ckpt"],
        "gate_step": plan["gate"],
        "deterministic_ops": deterministic,
        "notes": notes,
        **_compare(legs, plan["steps"]),
        **{k: v for k, v in legs.items() if k not in ("a", "b")},
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--gated"]:
        sys.exit(gated_main(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} --gated STEP MARKER FLAM_TRAIN_FLAGS... (gpu_check.py runs the section)")
