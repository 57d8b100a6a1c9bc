"""``flam-index``: write (or finish) the metadata index of a built dataset's splits.

    flam-index --data-dir=TFDS_DIR --dataset=clips [--split=train] [--workers=8] [--chunk=5000]

A thin command over ``builders.write_index`` (``data/index.py`` says what an index holds
and how an interrupted run resumes).
"""

import sys

from flam_jax.cli import ArgumentParser, report_errors
from flam_jax.data import builders
from flam_jax.data.index import CHUNK
from flam_jax.errors import DataError


@report_errors
def main(argv=None) -> int:
    parser = ArgumentParser(
        prog="flam-index",
        description="Write (or finish) the metadata index of a built dataset's splits.",
    )
    parser.add_argument("--data-dir", required=True, help="TFDS data_dir holding the built dataset")
    parser.add_argument("--dataset", default="clips", help="kind[/config], e.g. clips or pairs/clotho")
    parser.add_argument("--split", default=None, help="one split (default: every split)")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: this one)")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="records per resumable chunk")
    args = parser.parse_args(argv)
    if args.workers < 0 or args.chunk < 1:
        raise DataError("--workers must be >= 0 and --chunk >= 1")
    for split in builders.split_names(args.dataset, args.data_dir, args.split):
        index = builders.write_index(
            args.dataset, args.data_dir, split, workers=args.workers, chunk=args.chunk
        )
        print(f"{args.dataset}/{split}: {len(index)} clips indexed in {index.path}")
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
