"""The device check of issue 25: one prepared run on one GPU (``benchmarks/gpu_check.sh``).

    python benchmarks/gpu_check.py OUT_DIR [--smoke] [--sections a,b] [--budget S] [--scratch DIR]

Writes ``OUT_DIR/gpu_check.json`` (every figure) and ``OUT_DIR/gpu_check.md`` (the same as
tables), again after each section, so a run cut short still leaves what it measured.
Sections, each in a process of its own (a crash or an out-of-memory stays in its section,
and each process's allocator peak is its own):

1. at once, as they time nothing: ``parity`` (the single-device model and loss tests,
   fp32), ``precision`` (the train step's loss in bf16 against fp32), ``resume``
   (gpu_small:debug killed after its checkpoint and resumed: gpu_resume.py);
2. one after another, alone on the device: ``train_step_b64``, ``detect``,
   ``train_step_b256`` (the flam_paper step at SED 64 + 64 and 256 + 256 pairs).

The smoke runs parity, resume and detect at once, then precision and the step together.

``--budget`` (seconds, 450 on a GPU) bounds the whole run: a section gets at most its own
limit and what is left; one not started in time is reported as skipped. ``--smoke`` runs
the same code on the CPU at tiny sizes (gpu_sections.py), for CI. Scratch files (corpus,
workdirs, caches, exports) go to ``--scratch`` (default: a new temporary folder), never
to OUT_DIR: the device tool brings back at most 8 files.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gpu_sections as gs  # noqa: E402

PEAK_NOTE = (
    "MFU = XLA cost-analysis FLOPs per step / step time / chip peak; H200 SXM peak = 989 TFLOP/s "
    "dense bf16 (NVIDIA's spec; the device README measured ~790 on an 8192^3 bf16 matmul)"
)
PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint", "numpy", "grain")
PACKAGES += ("tensorflow-datasets", "tokenizers", "protobuf")


@dataclasses.dataclass(frozen=True)
class Section:
    key: str  # in the JSON and on the command line
    runner: str  # gpu_sections.SECTIONS name, or "resume"
    phase: int  # 1: concurrent checks, 2: timed alone
    limit_s: int  # on the GPU; the smoke's limit is SMOKE_LIMIT_S
    args: tuple = ()
    # The smoke times nothing: each of its two phases runs at once, the second reading the
    # initialisation and train step that the resume section's runs compiled into the cache.
    smoke_phase: int = 1


SMOKE_LIMIT_S = 400


def plan(smoke: bool) -> list[Section]:
    batches = (2,) if smoke else (64, 256)
    steps = [
        Section(f"train_step_b{n}", "train_step", 2, 180, (("batch", n),), smoke_phase=2) for n in batches
    ]
    detect = Section("detect", "detect", 2, 150, (("max_batches", (8,) if smoke else (8, 32)),))
    return [
        Section("parity", "parity", 1, 240),
        Section("precision", "precision", 1, 240, smoke_phase=2),
        Section("resume", "resume", 1, 330),
        steps[0],
        detect,
        *steps[1:],
    ]


# --- one section, in its own process ---------------------------------------------------


def run_section(section: Section, scratch: str, smoke: bool) -> int:
    """Child side: run one section, write ``scratch/<key>.json``; exit 0 when it ran."""
    started = time.perf_counter()
    folder = os.path.join(scratch, section.key)
    os.makedirs(folder, exist_ok=True)
    # A stop from the parent (its time is up) unwinds the section, so that what it started
    # in sessions of their own (the resume section's training runs) is ended too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if section.runner == "resume":
            import gpu_resume

            result = gpu_resume.run_resume(folder, smoke)
        else:
            result = gs.SECTIONS[section.runner](folder, smoke, **dict(section.args))
        payload = {"status": "ok", "result": result, "device": gs.device_info()}
    except Exception as err:  # the section's failure is a result; the run goes on
        first = str(err).splitlines()[0] if str(err) else ""
        payload = {"status": "failed", "error": f"{type(err).__name__}: {first[:400]}"}
        payload["traceback"] = traceback.format_exc().splitlines()[-12:]
    payload["seconds"] = time.perf_counter() - started
    gs.write_json(os.path.join(scratch, f"{section.key}.json"), payload)
    return 0 if payload["status"] == "ok" else 1


def _stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the section's process group, SIGKILL what is left after ``grace_s``."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:  # the group is gone already
            break
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    proc.wait()


class _Child:
    """A running section: its process (a session of its own, so a timeout ends its
    children too), its log and its deadline."""

    def __init__(self, section: Section, scratch: str, smoke: bool, limit_s: float):
        self.section, self.scratch = section, scratch
        self.log = os.path.join(scratch, f"{section.key}.log")
        argv = [sys.executable, __file__, "--run-section", section.key, "--scratch", scratch]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                argv + (["--smoke"] if smoke else []),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.perf_counter()
        self.deadline = self.started + limit_s

    def result(self) -> dict:
        """Wait for the child; its JSON, or what went wrong with it."""
        try:
            self.proc.wait(timeout=max(0.0, self.deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            _stop(self.proc)
            return self._broken("timeout", f"stopped after {time.perf_counter() - self.started:.0f} s")
        path = os.path.join(self.scratch, f"{self.section.key}.json")
        if not os.path.isfile(path):
            return self._broken("failed", f"exited {self.proc.returncode} without a result")
        with open(path) as f:
            return json.load(f)

    def _broken(self, status: str, error: str) -> dict:
        with open(self.log, errors="replace") as f:
            tail = f.read().splitlines()[-12:]
        return {
            "status": status,
            "error": error,
            "log_tail": tail,
            "seconds": time.perf_counter() - self.started,
        }


# --- the whole run ---------------------------------------------------------------------


def _versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _gpu_query() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    query = "--query-gpu=name,memory.total,driver_version,clocks.max.sm"
    out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True)
    return out.stdout.strip() or None


def run_all(out_dir: str, scratch: str, smoke: bool, keys: set[str] | None, budget_s: float) -> dict:
    sections = [s for s in plan(smoke) if keys is None or s.key in keys]
    report = {
        "issue": 25,
        "mode": "smoke (CPU, tiny sizes: proves the script runs, not a figure)" if smoke else "gpu",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": {"cpu_cores": os.cpu_count(), "nvidia_smi": _gpu_query()},
        "versions": _versions(),
        "peak_note": PEAK_NOTE,
        "budget_s": budget_s,
        "sections": {s.key: {"status": "pending"} for s in sections},
    }
    began = time.perf_counter()

    def left() -> float:
        return budget_s - (time.perf_counter() - began)

    def record(key: str, result: dict) -> None:
        report["sections"][key] = result
        if "device" in result and "device" not in report:
            report["device"] = result["device"]
        report["seconds"] = time.perf_counter() - began
        write_outputs(out_dir, report)
        print(
            f"[{report['seconds']:6.0f} s] {key}: {result['status']} ({result.get('seconds', 0):.0f} s)",
            flush=True,
        )

    def limit(section: Section) -> float:
        return min(SMOKE_LIMIT_S if smoke else section.limit_s, left())

    if smoke:
        batches = [[s for s in sections if s.smoke_phase == phase] for phase in (1, 2)]
    else:
        batches = [[s for s in sections if s.phase == 1]] + [[s] for s in sections if s.phase == 2]
    for batch in batches:
        if left() < 30:
            for section in batch:
                record(section.key, {"status": "skipped", "error": f"budget of {budget_s:.0f} s spent"})
            continue
        children = [_Child(s, scratch, smoke, limit(s)) for s in batch]
        for child in children:
            record(child.section.key, child.result())
    report["ok"] = all(r["status"] == "ok" for r in report["sections"].values())
    write_outputs(out_dir, report)
    return report


def write_outputs(out_dir: str, report: dict) -> None:
    import gpu_report

    gs.write_json(os.path.join(out_dir, "gpu_check.json"), report)
    with open(os.path.join(out_dir, "gpu_check.md"), "w") as f:
        f.write(gpu_report.markdown(report))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (CI)")
    p.add_argument("--sections", default="", help="comma-separated keys (default: all)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run")
    p.add_argument("--scratch", default="", help="folder for corpus, runs and caches")
    p.add_argument("--run-section", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_section:
        section = next(s for s in plan(args.smoke) if s.key == args.run_section)
        return run_section(section, args.scratch, args.smoke)
    if not args.out_dir:
        p.error("OUT_DIR is required")
    keys = {k.strip() for k in args.sections.split(",") if k.strip()} or None
    known = {s.key for s in plan(args.smoke)}
    if keys and not keys <= known:
        p.error(f"unknown section(s) {sorted(keys - known)}; known: {', '.join(sorted(known))}")
    os.makedirs(args.out_dir, exist_ok=True)
    scratch = args.scratch or tempfile.mkdtemp(prefix="flam_gpu_check_")
    os.makedirs(scratch, exist_ok=True)
    budget = args.budget if args.budget is not None else (SMOKE_LIMIT_S if args.smoke else 450.0)
    print(
        f"gpu check: {'smoke' if args.smoke else 'gpu'}, scratch {scratch}, budget {budget:.0f} s", flush=True
    )
    report = run_all(args.out_dir, scratch, args.smoke, keys, budget)
    print(f"wrote {os.path.join(args.out_dir, 'gpu_check.json')} and gpu_check.md; ok={report['ok']}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
