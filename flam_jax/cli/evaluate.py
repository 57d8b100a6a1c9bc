"""``flam-evaluate``: run a model over a standard benchmark and write metrics and plots.

    flam-evaluate --model EXPORT_DIR --benchmark desed --data-dir DIR [--out DIR]

What each benchmark measures and how audio is windowed: ``evals.runner``.
"""

import os
import sys

from flam_jax.cli import ArgumentParser, report_errors
from flam_jax.evals.benchmarks import BENCHMARKS, get_benchmark
from flam_jax.evals.report import markdown_table
from flam_jax.evals.runner import evaluate
from flam_jax.evals.zeroshot import DEFAULT_TEMPLATE
from flam_jax.infer.api import FLAM, check_method


def _parse(argv):
    parser = ArgumentParser(prog="flam-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="export directory (flam-export / flam-convert-openflam)"
    )
    parser.add_argument("--benchmark", required=True, help="one of: " + ", ".join(sorted(BENCHMARKS)))
    parser.add_argument("--data-dir", required=True, help="built TFDS data_dir, or the raw dataset folder")
    parser.add_argument("--out", default=None, help="report folder (default: ./flam_eval/BENCHMARK)")
    parser.add_argument("--split", default=None, help="dataset split (default: the benchmark's test split)")
    parser.add_argument("--batch-size", type=int, default=8, help="10 s windows per model call")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="zero-shot prompt template with {}")
    parser.add_argument("--mixtures", type=int, default=200, help="simulated: number of mixtures")
    parser.add_argument("--seed", type=int, default=0, help="simulated: mixture seed")
    parser.add_argument(
        "--method", default="unbiased", help="SED frame scores: unbiased, approximate or cosine (FLAM-Global)"
    )
    parser.add_argument(
        "--label-names", default=None, help="label to display-name file (default: AudioSet's, if in DATA_DIR)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="where a raw folder is built (default: DATA_DIR/.flam_tfds)"
    )
    return parser.parse_args(argv)


@report_errors
def main(argv=None) -> int:
    args = _parse(argv)
    get_benchmark(args.benchmark)  # fail on a typo before loading the model
    check_method(args.method)
    model = FLAM.load(args.model)
    out = args.out or os.path.join("flam_eval", args.benchmark)
    result = evaluate(
        model,
        args.benchmark,
        args.data_dir,
        out_dir=out,
        split=args.split,
        batch_size=args.batch_size,
        template=args.template,
        mixtures=args.mixtures,
        seed=args.seed,
        cache_dir=args.cache_dir,
        label_file=args.label_names,
        progress=True,
        method=args.method,
    )
    print(markdown_table(result))
    print(f"report written to {out}")
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
