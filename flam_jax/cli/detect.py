"""``flam-detect``: when does each described sound occur in each recording?

    flam-detect AUDIO... --model EXPORT_DIR -q TEXT [-q TEXT ...] [--queries-file F]
                [--threshold 0.5] [--median 3] [--hop 5] [--batch-size 8] [--json F] [--plot F.png]

Prints one row per event (file, query, onset, offset, peak score). ``--json`` writes
DESIGN.md's schema; ``--plot`` draws each file's spectrogram and one activation row per
query: ``--plot F.png`` with one file writes F.png; with several, file i of the command
line (counting from 0) writes ``F-<i>.png`` (an unreadable file leaves its number unused).
A file that cannot be read is reported and the others still run: exit 1 if some failed,
2 if all did (or on a bad model, query, query file or flag), 0 otherwise.

Every flag is checked before the model loads: ``--threshold`` in [0, 1], ``--batch-size``
a power of two, and ``--json``/``--plot`` files that can be written (not a directory, in
a folder that exists and is writable), so no detection is lost to a bad output path.
Recordings are read window by window (``FLAM.detect`` streams a path); only ``--plot``
needs a file's samples in memory, one file at a time.
"""

from __future__ import annotations

import json
import sys

from flam_jax import paths
from flam_jax.cli import (
    EXIT_USAGE,
    ArgumentParser,
    check_fraction,
    check_output_file,
    check_power_of_two,
    report_errors,
)
from flam_jax.errors import FlamError, InputError
from flam_jax.infer import detect
from flam_jax.infer.api import FLAM, read_audio
from flam_jax.infer.plots import plot_detection
from flam_jax.timeline import hop_samples


def _parse(argv):
    p = ArgumentParser(prog="flam-detect", description="Detect described sounds in recordings.")
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
    queries = detect.read_queries(args.query, args.queries_file)
    if args.median < 1 or args.median % 2 == 0:
        raise InputError(f"--median must be a positive odd number of frames, got {args.median}")
    check_power_of_two(args.batch_size, "--batch-size")
    check_fraction(args.threshold, "--threshold")
    check_output_file(args.plot, "--plot")  # a folder is refused even when F-<i>.png are derived
    plots = detect.plot_paths(args.plot, len(args.audio)) if args.plot else []
    for out, flag in [(args.json, "--json"), *((p, "--plot") for p in plots)]:
        check_output_file(out, flag)
    model = FLAM.load(args.model, max_batch=args.batch_size)
    hop_samples(args.hop, model.num_frames)  # a bad --hop is one error, not one per file
    text = model.embed_text(queries)  # once for every file
    detections, failures = [], []
    for i, path in enumerate(args.audio):
        try:
            found = model.detect(
                path, text, args.threshold, median=args.median, hop_s=args.hop, method=args.method
            )
            detections.append(detect.named(found, path))
            if plots:
                plot_detection(read_audio(path)[0], detections[-1], plots[i], threshold=args.threshold)
        except FlamError as err:
            if len(args.audio) == 1:
                raise
            print(f"error: {err}", file=sys.stderr)
            failures.append((path, str(err)))
    if detections:
        print(detect.event_table(detections))
    if args.json and detections:
        doc = {"frame_rate_hz": model.frame_rate_hz, "results": [detect.result_json(d) for d in detections]}
        paths.write_text(args.json, json.dumps(doc, indent=1) + "\n")
    if failures:
        print(f"{len(failures)} of {len(args.audio)} files failed:", file=sys.stderr)
        for path, message in failures:
            print(f"  {path}: {message}", file=sys.stderr)
        return EXIT_USAGE if not detections else 1
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
