"""``flam-convert-clap``: a LAION-CLAP or HTS-AT checkpoint → an export to start training from.

    flam-convert-clap --checkpoint FILE [--kind auto|clap|htsat] [--tokenizer-dir DIR]
                      [--text-tower roberta-base] [--allow-pickle] --out EXPORT_DIR [--force]

The export is a starting point, not a model: use it as ``train.init_from`` (the per-text
heads, and for HTS-AT everything but the audio tower, are listed as untrained and start
fresh). ``--out`` follows flam-export's rule, checked before the checkpoint is read. What
is converted and what is left out: ``export.from_clap``.
"""

import sys

from flam_jax.cli import ArgumentParser, report_errors
from flam_jax.export.export_dir import check_out_dir
from flam_jax.export.from_clap import KINDS, convert


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="flam-convert-clap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="laion_clap .pt or HTS-AT .ckpt")
    parser.add_argument("--kind", default="auto", choices=KINDS, help="checkpoint kind (default: its keys)")
    parser.add_argument(
        "--tokenizer-dir", default=None, help="roberta-base tokenizer files (vocab.json, merges.txt)"
    )
    parser.add_argument(
        "--text-tower", default=None, help="htsat: the text tower the export's config names (roberta-base)"
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="read a checkpoint you trust that also pickles other objects (unpickling can run code)",
    )
    parser.add_argument("--out", required=True, help="export directory to write (new or empty)")
    parser.add_argument("--force", action="store_true", help="replace the export in --out")
    args = parser.parse_args(argv)
    check_out_dir(args.out, force=args.force)
    converted = convert(
        args.checkpoint,
        args.out,
        kind=args.kind,
        tokenizer_dir=args.tokenizer_dir,
        text_tower=args.text_tower,
        allow_pickle=args.allow_pickle,
    )
    print(converted.summary())
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
