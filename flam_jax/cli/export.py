"""``flam-export``: a training workdir → an export directory (parameters only).

    flam-export --workdir DIR --out EXPORT_DIR [--force] [--step N] [--dtype float32|bfloat16]
                [--stablehlo] [--platforms cpu,cuda]

A non-empty ``--out`` is refused unless ``--force``, which replaces the export there only
once the new one is complete (an export, never another folder); an ``--out`` that is a
file or cannot be written is refused too, both before the checkpoint is read. What is read
and written: ``export.params``.
"""

import sys

from flam_jax.cli import ArgumentParser, report_errors
from flam_jax.export.params import DTYPES, export_workdir


def _parse(argv):
    parser = ArgumentParser(prog="flam-export", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="training workdir (config.json + checkpoints/)")
    parser.add_argument("--out", required=True, help="export directory to write (new or empty)")
    parser.add_argument(
        "--force", action="store_true", help="replace the export in --out (once the new one is written)"
    )
    parser.add_argument(
        "--step", type=int, default=None, help="checkpoint step (default: the latest complete one)"
    )
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of the stored parameters")
    parser.add_argument("--stablehlo", action="store_true", help="also write jax.export StableHLO artefacts")
    parser.add_argument(
        "--platforms", default="", help="StableHLO lowering platforms, comma-separated (default: cpu,cuda)"
    )
    return parser.parse_args(argv)


@report_errors
def main(argv=None) -> int:
    args = _parse(argv)
    platforms = tuple(p.strip() for p in args.platforms.split(",") if p.strip()) or None
    summary = export_workdir(
        args.workdir,
        args.out,
        step=args.step,
        dtype=args.dtype,
        stablehlo=args.stablehlo,
        platforms=platforms,
        replace=args.force,
    )
    extra = f", StableHLO: {len(summary['stablehlo']) - 1} functions" if summary["stablehlo"] else ""
    print(
        f"exported step {summary['step']} ({summary['weights']} tensors, {summary['dtype']}"
        f"{'' if summary['tokenizer'] else ', no tokenizer'}{extra}) to {args.out}"
    )
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
