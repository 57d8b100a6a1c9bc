"""``flam-convert-openflam``: an openflam 1.0.2 checkpoint (.pth) → a flam_jax export directory.

    flam-convert-openflam --checkpoint FILE.pth [--tokenizer-dir DIR] --out EXPORT_DIR [--force]

``--out`` follows flam-export's rule: a non-empty folder only with ``--force`` (an export,
replaced once the new one is complete), never a file or an unwritable place; checked
before the checkpoint is read. The mapping: ``export.from_openflam``.
"""

import sys

from flam_jax.cli import ArgumentParser, report_errors
from flam_jax.export.export_dir import check_out_dir
from flam_jax.export.from_openflam import convert


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="flam-convert-openflam", description="Convert an openflam .pth checkpoint to a flam_jax export."
    )
    parser.add_argument("--checkpoint", required=True, help="openflam state dict (.pth)")
    parser.add_argument(
        "--tokenizer-dir", default=None, help="roberta-base tokenizer files (vocab.json, merges.txt)"
    )
    parser.add_argument("--out", required=True, help="export directory to write (new or empty)")
    parser.add_argument(
        "--force", action="store_true", help="replace the export in --out (once the new one is written)"
    )
    args = parser.parse_args(argv)
    check_out_dir(args.out, force=args.force)  # before the (slow) checkpoint read
    out = convert(args.checkpoint, args.out, args.tokenizer_dir)
    print(f"wrote {out}")
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
