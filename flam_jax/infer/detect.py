"""``flam-detect``: when does each described sound occur in each recording?

    flam-detect AUDIO... --model EXPORT_DIR -q TEXT [-q TEXT ...] [--queries-file F]
                [--threshold 0.5] [--median 3] [--hop 5] [--batch-size 8] [--json F] [--plot F.png]

Prints one row per event (file, query, onset, offset, peak score). ``--json`` writes
DESIGN.md's schema; ``--plot`` draws each file's spectrogram and one activation row per
query (with several files, ``F.png`` becomes ``F-<i>.png`` per file). A file that cannot
be read is reported and the others still run: exit 1 if some failed, 2 if all did (or
on a bad model, query or query file), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from flam_jax import paths
from flam_jax.cli import EXIT_USAGE, report_errors
from flam_jax.errors import FlamError, InputError
from flam_jax.infer.windows import hop_samples


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


def _parse(argv):
    p = argparse.ArgumentParser(prog="flam-detect", description="Detect described sounds in recordings.")
    p.add_argument("audio", nargs="+", help="audio files (any length, sample rate, channel count)")
    p.add_argument("--model", required=True, help="export directory")
    p.add_argument("-q", "--query", action="append", default=[], help="a text query (repeatable)")
    p.add_argument("--queries-file", default=None, help="one query per line")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--median", type=int, default=3, help="median filter length in frames (odd; 1 = off)")
    p.add_argument("--hop", type=float, default=5.0, help="hop between 10 s windows, seconds")
    p.add_argument("--method", default="unbiased", choices=("unbiased", "approximate"))
    p.add_argument("--batch-size", type=int, default=8, help="largest window batch (a power of two)")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--plot", default=None, help="write a spectrogram + activation PNG here")
    return p.parse_args(argv)


@report_errors
def main(argv=None) -> int:
    args = _parse(argv)
    queries = read_queries(args.query, args.queries_file)
    if args.median < 1 or args.median % 2 == 0:
        raise InputError(f"--median must be a positive odd number of frames, got {args.median}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    from flam_jax.infer.api import FLAM, read_audio

    model = FLAM.load(args.model, max_batch=args.batch_size)
    hop_samples(args.hop, model.num_frames)  # a bad --hop is one error, not one per file
    text = model.embed_text(queries)  # once for every file
    detections, waves, failures = [], [], []
    for path in args.audio:
        try:
            wave, _ = read_audio(path)  # kept for the plot
            found = model.detect(
                wave, text, args.threshold, median=args.median, hop_s=args.hop, method=args.method
            )
            detections.append(_named(found, path))
            waves.append(wave if args.plot else None)
        except FlamError as err:
            if len(args.audio) == 1:
                raise
            print(f"error: {err}", file=sys.stderr)
            failures.append((path, str(err)))
    if detections:
        print(event_table(detections))
    if args.json and detections:
        doc = {"frame_rate_hz": model.frame_rate_hz, "results": [result_json(d) for d in detections]}
        paths.write_text(args.json, json.dumps(doc, indent=1) + "\n")
    if args.plot and detections:
        from flam_jax.infer.plots import plot_detection

        for d, wave, out in zip(detections, waves, plot_paths(args.plot, len(detections)), strict=True):
            plot_detection(wave, d, out, threshold=args.threshold)
    if failures:
        print(f"{len(failures)} of {len(args.audio)} files failed:", file=sys.stderr)
        for path, message in failures:
            print(f"  {path}: {message}", file=sys.stderr)
        return EXIT_USAGE if not detections else 1
    return 0


def _named(detection, path: str):
    import dataclasses

    return dataclasses.replace(detection, timeline=dataclasses.replace(detection.timeline, source=path))


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
