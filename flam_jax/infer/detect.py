"""What flam-detect reads and writes: its queries, its event table and DESIGN.md's JSON."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from flam_jax import paths
from flam_jax.errors import InputError


def read_queries(queries: Sequence[str] | None, queries_file: str | None) -> list[str]:
    """-q values then the lines of the queries file (blank lines and ``#`` comments skipped)."""
    out = list(queries or [])
    if queries_file is not None:
        try:
            lines = paths.read_text(queries_file).splitlines()
        except FileNotFoundError as err:
            raise InputError(f"queries file not found: {queries_file}") from err
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"cannot read queries file {queries_file}: {err}") from err
        from_file = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not from_file:
            raise InputError(f"queries file {queries_file} holds no queries")
        out += from_file
    if not out:
        raise InputError("no queries: give -q TEXT or --queries-file F")
    for i, text in enumerate(out):
        if not text.strip():
            raise InputError(f"query {i + 1} is empty")
    return out


def result_json(detection) -> dict:
    """One entry of DESIGN.md's ``results`` list."""
    timeline = detection.timeline
    return {
        "audio": timeline.source,
        "duration_s": round(float(timeline.duration_s), 6),
        "queries": [
            {
                "text": text,
                "frame_scores": [round(float(s), 6) for s in timeline.scores[i]],
                "events": [
                    {"onset": e.onset, "offset": e.offset, "score": round(e.score, 6)}
                    for e in detection.events_per_query[i]
                ],
            }
            for i, text in enumerate(timeline.texts)
        ],
    }


def plot_paths(plot: str, count: int) -> list[str]:
    if count == 1:
        return [plot]
    stem, ext = os.path.splitext(plot)
    return [f"{stem}-{i}{ext or '.png'}" for i in range(count)]


def event_table(detections) -> str:
    rows = [("file", "query", "onset", "offset", "peak")]
    for d in detections:
        for e in d.events:
            rows.append((d.timeline.source, e.query, f"{e.onset:.3f}", f"{e.offset:.3f}", f"{e.score:.3f}"))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if len(rows) == 1:
        lines.append("(no events)")
    return "\n".join(lines)


def named(detection, path: str):
    """The detection with its timeline named by ``path`` (as typed) rather than by the audio."""
    return dataclasses.replace(detection, timeline=dataclasses.replace(detection.timeline, source=path))
