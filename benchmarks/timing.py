"""Shared timing for the benchmarks that put flam_jax next to openflam in one process.

Protocol: every side is called once to warm up (JAX compiles, torch allocates and picks
its kernels) and that call is not counted; then ``repeats`` rounds call the sides in turn
(A, B, A, B, ...), so that both see the same machine load. The minimum per side is the
least disturbed call and the figure to compare; the median and the maximum show how much
the machine disturbed the rest. Wall seconds and process CPU seconds (all threads) are
kept for every call.

Threads: :func:`pin_threads` must run before jax or torch is imported. It restricts the
process to N CPUs; XLA:CPU sizes its Eigen thread pool from that mask (checked after the
warm-up with :func:`xla_eigen_threads`) and :func:`set_torch_threads` gives torch N intra-op
and N inter-op threads.

Used by ``inference.py`` and ``audio_tower.py`` (run as ``python benchmarks/<script>.py``,
so this file is importable as ``timing``).
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import statistics
import time
from collections.abc import Callable


def pin_threads(threads: int | None) -> list[int]:
    """Keep this process on the first ``threads`` CPUs it may use (all of them if None).

    Call it before importing jax or torch: both size their thread pools from the
    affinity mask at start-up. Also sets OMP/MKL thread counts for torch's libraries.
    Returns the CPUs kept.
    """
    allowed = sorted(os.sched_getaffinity(0))
    if threads is None:
        threads = len(allowed)
    if not 1 <= threads <= len(allowed):
        raise SystemExit(f"--threads must be in 1..{len(allowed)} (CPUs this process may use)")
    kept = allowed[:threads]
    os.sched_setaffinity(0, kept)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    return kept


def xla_eigen_threads() -> int:
    """Number of live XLA:CPU Eigen pool threads in this process (0 before JAX runs)."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                if "XLAEigen" in f.read():
                    count += 1
        except OSError:
            pass
    return count


def machine() -> dict:
    """CPU model (from /proc/cpuinfo), logical cores, and CPUs this process may use."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "cpus_used": len(os.sched_getaffinity(0))}


def _call(fn: Callable[[], object]) -> tuple[float, float]:
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict:
    """Time the functions in ``fns`` (name -> zero-argument callable) against each other.

    One warm-up call per side in order, then ``repeats`` rounds of one call per side in
    the dict's order. Returns ``{"repeats", "load_start", "load_end", "seconds",
    "sides": {name: {"warmup": {"wall", "cpu"}, "wall": {"min", "median", "max"},
    "cpu": {...}, "samples": [[wall, cpu], ...]}}}``; loads are os.getloadavg() before
    the first round and after the last, ``seconds`` the wall time of the rounds.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    warm = {name: _call(fn) for name, fn in fns.items()}
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_call(fn))
    seconds = time.perf_counter() - t0
    sides = {}
    for name, calls in samples.items():
        sides[name] = {
            "warmup": {"wall": warm[name][0], "cpu": warm[name][1]},
            "wall": _spread([w for w, _ in calls]),
            "cpu": _spread([c for _, c in calls]),
            "samples": [list(call) for call in calls],
        }
    return {
        "repeats": repeats,
        "load_start": list(load_start),
        "load_end": list(os.getloadavg()),
        "seconds": seconds,
        "sides": sides,
    }


def ratio_of_minima(stats: dict, slow: str, fast: str, key: str = "wall") -> float:
    """min(slow) / min(fast): how many times faster ``fast`` is (key: "wall" or "cpu")."""
    return stats["sides"][slow][key]["min"] / stats["sides"][fast][key]["min"]


def spread_cell(stats: dict, side: str, key: str = "wall") -> str:
    """'min / median / max' seconds of one side, minimum in bold."""
    s = stats["sides"][side][key]
    return f"**{s['min']:.3f}** / {s['median']:.3f} / {s['max']:.3f}"


def load_text(load: list[float] | tuple[float, ...]) -> str:
    """The three load averages (1, 5, 15 min) as 'a / b / c'."""
    return " / ".join(f"{x:.2f}" for x in load)


def markdown(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_cell(info: dict, load_start: list[float], load_end: list[float]) -> str:
    """The 'machine' cell of the README's summary table."""
    return (
        f"{info['cpu']}, {info['cores']} cores ({info['cpus_used']} used); "
        f"load average (1 min) {load_start[0]:.1f} at start, {load_end[0]:.1f} at end"
    )


def today() -> str:
    return datetime.date.today().isoformat()


def write_json(path: str | None, payload: dict) -> None:
    """Write ``payload`` to ``path`` (no-op when path is None)."""
    if path is None:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")


def set_torch_threads(torch, cpus: list[int]) -> None:
    """Give torch as many intra-op and inter-op threads as there are pinned CPUs."""
    torch.set_num_threads(len(cpus))
    torch.set_num_interop_threads(len(cpus))


def thread_settings(cpus: list[int], torch) -> dict:
    """What both sides run on, read back after the warm-up (JAX's pool exists by then)."""
    return {
        "threads": len(cpus),
        "cpus": cpus,
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "xla_eigen_pool": xla_eigen_threads(),
    }


def thread_text(threads: dict) -> str:
    return (
        f"{threads['threads']} threads on both sides (process pinned to CPUs {threads['cpus']}; "
        f"torch intra-op {threads['torch_intra_op']}, inter-op {threads['torch_inter_op']}; "
        f"XLA:CPU Eigen pool {threads['xla_eigen_pool']} threads, counted after the warm-up)"
    )


def versions(jax, torch) -> dict:
    """The versions both sides ran with (jax's platform included)."""
    import importlib.metadata

    return {
        "jax": jax.__version__,
        "jax_platform": jax.devices()[0].platform,
        "torch": torch.__version__,
        "openflam": importlib.metadata.version("openflam"),
    }


def print_context(info: dict, threads: dict, versions: dict, load: tuple, note: str, run_time: str) -> None:
    """The lines above every table: machine, threads, versions, load, protocol, run time."""
    print()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['cpus_used']} used")
    print(f"threads: {thread_text(threads)}")
    print(
        f"versions: jax {versions['jax']} ({versions['jax_platform']}), torch {versions['torch']}, "
        f"openflam {versions['openflam']}; {note}"
    )
    print(f"load average (1 / 5 / 15 min): {load_text(load[0])} at start, {load_text(load[1])} at end")
    print(
        "protocol: one warm-up call per side (not counted), then interleaved rounds "
        "openflam, flam_jax, openflam, ...; seconds per call, min / median / max"
    )
    print(f"run time: {run_time}")
    print()
