"""Metric sinks: JSONL, TensorBoard event files and the progress line (process 0 only).

TensorBoard event files are written with tensorboardX (no TensorFlow): its ``Event`` and
``Summary`` protocol buffers and its ``RecordWriter`` (TFRecord framing, CRC-32C). Every
file goes through ``flam_jax.paths``: a remote workdir's event file is a
``paths.AppendLog``, handed to ``RecordWriter`` through tensorboardX's writer-factory hook
for the URL scheme, which replaces its own ``gs://`` and ``s3://`` writers (those open
google-cloud-storage and boto3 clients of their own, past the path layer).
"""

import json
import os
import socket
import time

import jax

from flam_jax import paths


class _PathLayerFiles:
    """tensorboardX's writer factory for one URL scheme: files open as ``paths.AppendLog``
    (uploaded whole on each flush)."""

    def open(self, url: str) -> paths.AppendLog:
        return paths.AppendLog(url, binary=True)

    def directory_check(self, url: str) -> None:
        paths.makedirs(url)


class _EventFile:
    """A new event file in ``folder``; its first record is the file-version event.

    Its name holds the time, host and process id; a name already taken (a second writer
    in the same process and second) gets a counter, as ``RecordWriter`` truncates locally.
    tensorboardX is imported here, by process 0 only.
    """

    def __init__(self, folder: str, now: float):
        from tensorboardX import record_writer
        from tensorboardX.proto import event_pb2, summary_pb2

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        if paths.is_remote(folder):
            record_writer.register_writer_factory(folder.split("://", 1)[0], _PathLayerFiles())
        stem = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
        name, taken = stem, 0
        while paths.exists(paths.join(folder, name)):
            taken += 1
            name = f"{stem}.{taken}"
        self.path = paths.join(folder, name)
        self._records = record_writer.RecordWriter(self.path)
        self._records.write(self._event(wall_time=now, file_version="brain.Event:2").SerializeToString())

    def scalar(self, wall_time: float, step: int, tag: str, value: float) -> None:
        summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=value)])
        self._records.write(self._event(wall_time=wall_time, step=step, summary=summary).SerializeToString())

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()


class MetricWriter:
    """Appends scalars to ``workdir/metrics.jsonl`` and ``workdir/tensorboard/`` (local or
    remote: ``paths.AppendLog``; a remote workdir gets each log step as one upload).

    After a resume, steps between the last checkpoint and the interruption are logged
    again; readers take the last line for a step.
    """

    def __init__(self, workdir: str, *, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._jsonl = self._events = None
        if not self.enabled:
            return
        folder = paths.join(workdir, "tensorboard")
        paths.makedirs(folder)
        self._jsonl = paths.AppendLog(paths.join(workdir, "metrics.jsonl"))
        self._events = _EventFile(folder, time.time())

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        now = time.time()
        clean = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        for tag, value in clean.items():
            self._events.scalar(now, int(step), tag, value)
        self.flush()

    def flush(self) -> None:
        if self.enabled:
            self._jsonl.flush()
            self._events.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._events.close()
            self.enabled = False


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Steps/s, examples/s and ETA over the last logging window."""

    def __init__(self, start_step: int, total_steps: int, examples_per_step: int):
        self.total = total_steps
        self.examples = examples_per_step
        self._step = start_step
        self._time = time.perf_counter()

    def update(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        elapsed = max(now - self._time, 1e-9)
        steps_per_s = (step - self._step) / elapsed
        self._step, self._time = step, now
        eta = (self.total - step) / steps_per_s if steps_per_s > 0 else float("inf")
        return {"steps_per_s": steps_per_s, "examples_per_s": steps_per_s * self.examples, "eta_s": eta}

    def line(self, step: int, scalars: dict[str, float], speed: dict[str, float]) -> str:
        shown = "  ".join(f"{k} {v:.4g}" for k, v in scalars.items() if not k.startswith("alpha_"))
        eta = format_duration(speed["eta_s"]) if speed["eta_s"] != float("inf") else "?"
        return (
            f"step {step}/{self.total}  {shown}  "
            f"{speed['steps_per_s']:.2f} steps/s  {speed['examples_per_s']:.1f} ex/s  ETA {eta}"
        )
