"""Restart to first step: a preempted cpu_demo run resumed with and without the persistent
compilation cache (``train.compile_cache``), interleaved, best of ``--repeats``.

    python benchmarks/restart.py [--workdir=/tmp/flam_restart] [--repeats=3] [--data-dir=...]

Needs the demo corpus (``python data/demo_corpus.py --build``). Once: ``flam-train
cpu_demo.py`` for 3 steps with a checkpoint at every step (the compilation cache filled).
Then each trial copies that workdir without its checkpoints 2 and 3 and resumes it (the
same config: ``train.steps`` is part of the compiled schedule; and the same cache path,
which jax hashes into the key); the time is from starting
the process to its "first step 2 done" line (imports, jax start-up, restore, compile or
cache read, one step), and the trainer's own figure from its start is printed beside it.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = re.compile(
    r"first step (\d+) done ([0-9.]+) s after start \(compilation cache: (\d+) hits, (\d+) misses\)"
)


def flam_train(workdir: str, data_dir: str, *overrides: str, stop_at_first=False) -> tuple[float, re.Match]:
    """(seconds from process start to the first-step line, that line) of one flam-train."""
    cmd = [sys.executable, "-m", "flam_jax.cli.train"]
    cmd += [f"--config={os.path.join(ROOT, 'experiments', 'cpu_demo.py')}", f"--workdir={workdir}"]
    cmd += [f"--config.data.dir={data_dir}", "--config.train.eval_every=0"]
    cmd += ["--config.train.ckpt_every=1", "--config.train.steps=3", *overrides]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = None
    for line in proc.stdout:
        match = LINE.search(line)
        if match and seen is None:
            seen = (time.perf_counter() - start, match)
            if stop_at_first:
                proc.send_signal(signal.SIGTERM)  # measured: it saves and stops
    proc.wait()
    if proc.returncode or seen is None:
        raise RuntimeError(f"flam-train failed ({proc.returncode})")
    return seen


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="/tmp/flam_restart")
    parser.add_argument("--data-dir", default=os.path.expanduser("~/.cache/flam_jax/tfds"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base = os.path.join(args.workdir, "base")
    shutil.rmtree(args.workdir, ignore_errors=True)
    first, match = flam_train(base, args.data_dir)
    print(f"fresh run, step 1: {first:.1f} s from process start ({match.group(2)} s in the trainer)")
    rows = {"cache": [], "no cache": []}
    # jax puts the cache's own path into the compile options it hashes, so the trials use the
    # base run's cache where it is (a restarted run uses the same workdir, hence the same path).
    cache = f"--config.train.compile_cache={os.path.join(base, 'compilation_cache')}"
    for r in range(args.repeats):
        for side, extra in (("cache", (cache,)), ("no cache", ("--config.train.compile_cache=none",))):
            trial = os.path.join(args.workdir, f"trial{r}_{side.replace(' ', '_')}")
            shutil.copytree(base, trial, ignore=shutil.ignore_patterns("compilation_cache"))
            for later in ("2", "3"):
                shutil.rmtree(os.path.join(trial, "checkpoints", later))
            wall, match = flam_train(trial, args.data_dir, *extra, stop_at_first=True)
            assert match.group(1) == "2", match.group(0)
            rows[side].append((wall, float(match.group(2)), int(match.group(3)), int(match.group(4))))
            print(
                f"  {side:>8}: {wall:6.1f} s from process start, {match.group(2)} s in the trainer, "
                f"{match.group(3)} hits / {match.group(4)} misses",
                flush=True,
            )
            shutil.rmtree(trial)
    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    for side, values in rows.items():
        best = min(values)
        print(f"{side:>8}: best {best[0]:.1f} s to the first resumed step ({best[1]:.1f} s in the trainer)")
    speedup = min(rows["no cache"])[0] / min(rows["cache"])[0]
    print(f"restart with the cache is {speedup:.2f}x faster")


if __name__ == "__main__":
    main()
