"""``flam-search``: index a folder of recordings, then find files (and moments) by text.

    flam-search index AUDIO_DIR --model EXPORT_DIR --out INDEX [--rebuild] [--hop 10] [--batch-size 8]
    flam-search query INDEX "text" [--top 10] [--threshold 0.5]

``index`` resumes an index built with the same model, folder and hop: new and changed
files are embedded, deleted ones dropped; another model (or folder, or hop) is refused in
one line unless ``--rebuild``, which starts the index over. An ``--out`` that is a file,
cannot be written or holds other files is refused before anything is embedded. ``query``
refuses an index whose model folder now holds another model. What an index holds and how
a query ranks: ``infer.search``.
"""

from __future__ import annotations

import json
import sys

from flam_jax.cli import ArgumentParser, check_power_of_two, report_errors
from flam_jax.infer.search import build_index, query_index


def _parse(argv):
    p = ArgumentParser(prog="flam-search", description="Index recordings and search them by text.")
    sub = p.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help="embed every audio file under a folder")
    ix.add_argument("audio_dir")
    ix.add_argument("--model", required=True, help="export directory")
    ix.add_argument("--out", required=True, help="index directory (resumed if it exists)")
    ix.add_argument(
        "--rebuild", action="store_true", help="delete the index's items and index everything again"
    )
    ix.add_argument("--hop", type=float, default=10.0, help="hop between 10 s windows, seconds")
    ix.add_argument("--batch-size", type=int, default=8, help="largest window batch (a power of two)")
    ix.add_argument("--no-progress", action="store_true")
    q = sub.add_parser("query", help="rank indexed files by a text")
    q.add_argument("index")
    q.add_argument("text")
    q.add_argument("--top", type=int, default=10)
    q.add_argument("--threshold", type=float, default=0.5, help="frame score bounding the best span")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p.parse_args(argv)


@report_errors
def main(argv=None) -> int:
    args = _parse(argv)
    if args.command == "index":
        check_power_of_two(args.batch_size, "--batch-size")
        done = build_index(
            args.audio_dir,
            args.model,
            args.out,
            hop_s=args.hop,
            progress=not args.no_progress,
            batch_size=args.batch_size,
            rebuild=args.rebuild,
        )
        notes = [f"{done.skipped} already done"]
        if done.changed:
            notes.append(f"{done.changed} changed since, embedded again")
        if done.dropped:
            notes.append(f"{done.dropped} no longer there, dropped")
        print(f"indexed {done.indexed} files ({', '.join(notes)}) into {args.out}")
        if done.failures:
            print(f"{len(done.failures)} files could not be read:", file=sys.stderr)
            for path, message in done.failures:
                print(f"  {path}: {message}", file=sys.stderr)
            return 1
        return 0
    hits = query_index(args.index, args.text, top=args.top, threshold=args.threshold)
    if args.json:
        print(json.dumps(hits, indent=1))
        return 0
    print(f"{'rank':>4}  {'score':>7}  {'span (s)':>17}  {'peak':>5}  file")
    for rank, h in enumerate(hits, 1):
        span = f"{h['onset']:.2f}-{h['offset']:.2f}"
        print(f"{rank:>4}  {h['score']:7.4f}  {span:>17}  {h['peak']:5.3f}  {h['path']}")
    if not hits:
        print("(the index is empty)")
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
