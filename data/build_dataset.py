"""Build one TFDS dataset (ArrayRecord, FLAC audio at 48 kHz) from a manual directory (local or gs://).

    python data/build_dataset.py --kind=clips --manual-dir=DIR --data-dir=TFDS_DIR
    python data/build_dataset.py --kind=pairs --config=clotho --manual-dir=DIR --data-dir=TFDS_DIR
    python data/build_dataset.py --kind=captioned --config=webdataset --manual-dir=gs://b/wavcaps --data-dir=D

Kinds: clips, strong, pairs (audiocaps|clotho), classification (esc50|urbansound8k),
captioned (webdataset|huggingface|wavcaps|fsd50k), grounding. Items without audio or caption and
undecodable clips are skipped and named at the end; more than --max-errors stop the build.
--workers=N encodes in N processes; --beam runs the captioned kind on an Apache Beam
runner (flam_jax/data/builders/beam_build.py; pip install -r requirements-beam.txt).
"""

import argparse
import sys

from flam_jax.cli import report_errors


@report_errors
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", required=True, help="clips, strong, pairs or classification")
    parser.add_argument("--config", default=None, help="layout for pairs/classification")
    parser.add_argument("--manual-dir", required=True, help="folder with the manifest/tables and audio")
    parser.add_argument("--data-dir", required=True, help="TFDS data_dir to write into")
    parser.add_argument("--max-errors", type=int, default=100, help="skipped items tolerated")
    parser.add_argument("--workers", type=int, default=0, help="encoding processes (0: this one)")
    parser.add_argument(
        "--beam",
        default=None,
        help="captioned kind on Apache Beam: its pipeline arguments, comma-separated "
        "(--beam=--runner=DirectRunner,--direct_num_workers=4)",
    )
    args = parser.parse_args(argv)

    from flam_jax.data import builders

    builder = builders.build(
        args.kind,
        args.manual_dir,
        args.data_dir,
        args.config,
        progress=True,
        max_errors=args.max_errors,
        workers=args.workers,
        beam=[a for a in args.beam.split(",") if a] if args.beam is not None else None,
    )
    print(builder.skips.summary() if args.beam is None else "skipped: counted and named in the runner's log")
    for name, split in builder.info.splits.items():
        print(
            f"{builder.name}/{builder.builder_config.name if builder.builder_config else ''} {name}: "
            f"{split.num_examples} examples"
        )
    print(f"written to {builder.data_dir} (metadata index in {builder.data_dir}/index/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
