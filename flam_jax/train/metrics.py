"""Metric sinks: JSONL, TensorBoard event files and the progress line (process 0 only).

TensorBoard's event format is a TFRecord file of ``Event`` protocol buffers. Scalars
need only three tiny messages, so they are encoded here by hand (about 40 lines)
instead of pulling in TensorFlow, tensorboard or tensorboardX and their protobuf
pins for a write-only feature.
"""

import json
import os
import socket
import struct
import time

import jax

from flam_jax import paths

# --- CRC-32C (Castagnoli), as TFRecord frames each length and payload with it.
_CRC_TABLE = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ 0x82F63B78 if _crc & 1 else _crc >> 1
    _CRC_TABLE.append(_crc)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", _masked_crc(length)) + payload + struct.pack("<I", _masked_crc(payload))


# --- Protocol-buffer wire format for tensorboard's Event / Summary / Summary.Value.
def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def scalar_event(wall_time: float, step: int, tag: str, value: float) -> bytes:
    """Event{wall_time=1, step=2, summary=5{value=1{tag=1, simple_value=2}}}."""
    summary_value = _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
    summary = _field_bytes(1, summary_value)
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + _field_bytes(5, summary)


def version_event(wall_time: float) -> bytes:
    """The first record of every event file: Event{wall_time, file_version=3}."""
    return b"\x09" + struct.pack("<d", wall_time) + _field_bytes(3, b"brain.Event:2")


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
        paths.makedirs(paths.join(workdir, "tensorboard"))
        self._jsonl = paths.AppendLog(paths.join(workdir, "metrics.jsonl"))
        now = time.time()
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}"
        self._events = paths.AppendLog(paths.join(workdir, "tensorboard", name), binary=True)
        self._events.write(tfrecord(version_event(now)))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        now = time.time()
        clean = {k: float(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        for tag, value in clean.items():
            self._events.write(tfrecord(scalar_event(now, int(step), tag, value)))
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
