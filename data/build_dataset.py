"""Build one TFDS dataset (ArrayRecord, FLAC audio at 48 kHz) from a local manual directory.

    python data/build_dataset.py --kind=clips --manual-dir=DIR --data-dir=TFDS_DIR
    python data/build_dataset.py --kind=pairs --config=clotho --manual-dir=DIR --data-dir=TFDS_DIR

Kinds: clips, strong, pairs (audiocaps|clotho), classification (esc50|urbansound8k).
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
    args = parser.parse_args(argv)

    from flam_jax.data import builders

    builder = builders.build(args.kind, args.manual_dir, args.data_dir, args.config, progress=True)
    for name, split in builder.info.splits.items():
        print(
            f"{builder.name}/{builder.builder_config.name if builder.builder_config else ''} {name}: "
            f"{split.num_examples} examples"
        )
    print(f"written to {builder.data_dir} (metadata index in {builder.data_dir}/index/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
